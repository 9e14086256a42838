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


def start_local(script: str) -> str:
    """`bash scripts/<script> start` (the local SLURM cluster, PostgreSQL); returns its stdout.

    Skips, saying why, only where the service cannot be started here (not root, no apt-get
    to install it); any other failure fails the test with the script's own words.
    """
    import shutil

    import pytest

    if os.geteuid() != 0:
        pytest.skip(f"scripts/{script} needs root (it installs with apt-get and starts system daemons)")
    p = subprocess.run(
        ["bash", str(REPO / "scripts" / script), "start"], capture_output=True, text=True, timeout=900
    )
    if p.returncode != 0:
        why = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
        if shutil.which("apt-get") is None:
            pytest.skip(f"scripts/{script} cannot start here: {why}")
        pytest.fail(f"scripts/{script} start failed: {p.stderr[-3000:]}")
    return p.stdout


# ---------------------------------------------------------------- the local SLURM cluster
# What a job of hydra/launcher=slurm needs overridden to fit the one CPU node of
# scripts/slurm_local.sh (the preset asks for a GPU, 8 CPUs and 32 GB).
SLURM_FIT = [
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
]


def slurm_jobs(sweep: Path) -> list[str]:
    """The SLURM job ids submitit ran a sweep's jobs as (`7`, or `7_0`, `7_1` for an array),
    read from its folders under <sweep>/.submitit, in job order."""
    found = [d.name for d in (sweep / ".submitit").glob("*") if list(d.glob("*_log.out"))]
    return sorted(found, key=lambda j: tuple(int(x) for x in j.split("_")))


def finished_slurm_job(job_id: str, timeout: float = 60) -> dict[str, str]:
    """`scontrol show job` of a job SLURM still remembers (MinJobAge), its fields by name, once
    the job has ended: its batch script may outlive the results pdl-run reads by a moment."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(
            ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True
        ).stdout
        info = dict(f.split("=", 1) for f in out.split() if "=" in f)
        if info.get("JobState") not in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED") or (
            time.monotonic() > deadline
        ):
            return info
        time.sleep(0.5)


def wait_for_text(find, text: str, timeout: float, proc=None) -> Path:
    """The first file of `find()` (a list of paths) holding `text`, once one does."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in find():
            if text in path.read_text(errors="replace"):
                return path
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"pdl-run ended (exit {proc.returncode}) before {text!r} appeared")
        time.sleep(0.5)
    raise AssertionError(f"{text!r} did not appear within {timeout:.0f} s")


class SweepInBackground:
    """`pdl-run <args>` started in the background (its output in <cwd>/pdl-run.log), its
    SLURM jobs named `name`. Leaving the block on an error, or with pdl-run still running,
    stops what is left: the process and the cluster's jobs of that name."""

    def __init__(self, args: list[str], cwd: Path, name: str):
        self.args = [*args, f"hydra.launcher.name={name}"]
        self.cwd, self.name = cwd, name
        self.log = cwd / "pdl-run.log"

    def __enter__(self) -> SweepInBackground:
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [PY, "-m", "pdl_experiments.cli", *self.args],
                cwd=self.cwd,
                env={**ENV, "COLUMNS": "250"},  # one line per log record in the job logs
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"pdl-run did not end within {timeout:.0f} s: {self.output()[-3000:]}"
            ) from None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def __exit__(self, exc_type, *exc) -> None:
        import signal

        if exc_type is None and self.proc.poll() is not None:
            return  # pdl-run ended on its own: its jobs are done (some may still be completing)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        subprocess.run(["scancel", f"--name={self.name}"], capture_output=True)
