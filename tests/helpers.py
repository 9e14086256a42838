"""Helpers shared by the test modules: compose the real configs (as pdl-run would), run them
small in-process, or run pdl-run in a subprocess.

Test modules import these with `from helpers import ...` (tests/ is on sys.path in pytest's
default "prepend" import mode, as for conftest); no test module imports another or conftest.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
# Read when this module is first imported, after conftest has set PDL_DATA_ROOT's default.
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def compose(overrides: list[str] | None = None):
    """The config `pdl-run <overrides>` would run, without Hydra's runtime section."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from pdl_experiments.config import typed

    with initialize_config_module(config_module="pdl_experiments.configs", version_base="1.3"):
        return typed(hydra_compose(config_name="config", overrides=list(overrides or [])))


def run_small(tmp_path: Path, overrides: list[str] | None = None, name: str = "run"):
    """Run an experiment in-process into tmp_path/name; returns (metrics, run_dir)."""
    from omegaconf import OmegaConf

    from pdl_experiments.run import run

    cfg = compose(["trainer.progress=none", *(overrides or [])])
    run_dir = tmp_path / name
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    # load_run and pdl-eval read the composed config from .hydra/, as in a real run.
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return run(cfg, run_dir), run_dir


def pdl_run(args, cwd, timeout=240, env=None):
    """`python -m pdl_experiments.cli <args>` in cwd; returns the CompletedProcess."""
    return subprocess.run(
        [PY, "-m", "pdl_experiments.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or ENV,
    )


def interrupt_and_resume(
    tmp_path: Path, monkeypatch, overrides: list[str], stop_after
) -> tuple[dict, dict, dict]:
    """Run `overrides` in-process three times: uninterrupted ("clean"); stopped as by a SIGTERM
    right after the training step for which `stop_after(trainer)` is first true ("killed");
    resumed from that run's last.pt ("resumed"). Returns (clean metrics, the killed run's
    last.pt, resumed metrics)."""
    import signal

    import pytest
    import torch

    from pdl_experiments.training import Interrupted, Trainer

    clean, _ = run_small(tmp_path, overrides, name="clean")
    optimize = Trainer.optimize

    def optimize_then_stop(self, loss, name="default"):
        optimize(self, loss, name)
        if stop_after(self):
            self.state.stop_signal = signal.SIGTERM  # as the run's own handler records a signal

    monkeypatch.setattr(Trainer, "optimize", optimize_then_stop)
    with pytest.raises(Interrupted):
        run_small(tmp_path, overrides, name="killed")
    monkeypatch.undo()
    last = torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=True)
    resumed, _ = run_small(tmp_path, [*overrides, f"trainer.resume={tmp_path / 'killed'}"], name="resumed")
    return clean, last, resumed


def without_timings(metrics: dict) -> dict:
    """The metrics a resumed run must reproduce: all but times and rates."""
    return {k: v for k, v in metrics.items() if not any(w in k for w in ("time", "wall", "per_s"))}
