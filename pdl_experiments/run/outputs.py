"""What a run records besides its checkpoints: metrics.json, env.json, hparams, the summary."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import DictConfig, OmegaConf


def save_json(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


def finished_metrics(run_dir: Path) -> dict[str, float] | None:
    """The metrics of a run that finished in `run_dir` before (status ok), else None."""
    status, metrics = run_dir / "status.json", run_dir / "metrics.json"
    try:
        if json.loads(status.read_text()).get("status") == "ok" and metrics.is_file():
            return {k: float(v) for k, v in json.loads(metrics.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        pass
    return None


def process_start_time() -> float | None:
    """When this launch started: $PDL_T0 (set by pdl-run at import, or earlier by a caller
    that wants interpreter start-up counted too, like scripts/bench.py)."""
    try:
        # Popped: the next job of a sweep in this process did not start at that moment.
        return float(os.environ.pop("PDL_T0"))
    except (KeyError, ValueError):
        return None


def is_final(key: str) -> bool:
    return not key.startswith("train/") or key == "train/time_s"


# The metrics every run is judged by, where it has them; a technique adds its own
# (`Technique.headline`: bn the gradient ratio, prune FLOPs and latency, ...).
HEADLINE_ACC = ("test/acc", "val/acc")
HEADLINE_LOSS = ("test/loss", "val/loss")


def headline(metrics: Mapping[str, float], own: tuple[str, ...] = ()) -> dict[str, float]:
    """The run's headline metrics, in the order a dashboard shows them: test/acc, val/acc,
    the technique's own (`Technique.headline`), test/loss, val/loss (those the run has).

    The HPARAMS columns of TensorBoard and what the table leads with; per-layer diagnostics
    and bookkeeping (times, parameter counts) stay in metrics.json.
    """
    keys = (*HEADLINE_ACC, *own, *HEADLINE_LOSS)
    return {k: float(metrics[k]) for k in dict.fromkeys(keys) if k in metrics}


def hparams(cfg: DictConfig) -> dict[str, Any]:
    """Flat, scalar hparams: the groups chosen, the overrides, the main knobs."""
    flat: dict[str, Any] = {"technique": str(cfg.technique), "seed": int(cfg.seed)}
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        for g in ("model", "dataset", "augmentation", "optimizer", "scheduler"):
            flat[g] = str(hc.runtime.choices.get(g))
        for o in hc.overrides.task:
            k, _, v = o.partition("=")
            k = k.lstrip("+~")
            if k.startswith(("hydra", "logger")) or k == "trainer.resume":
                continue  # where and how the run logs is not one of its settings
            if k in hc.runtime.choices:  # a group (model=plain_deep): the option's name
                flat[k] = str(hc.runtime.choices[k])
            else:
                flat[k] = _scalar(OmegaConf.select(cfg, k, default=v))
    except ValueError:
        pass
    for key in ("optimizer.lr", "trainer.max_epochs", "trainer.batch_size", "bn.enabled"):
        flat.setdefault(key, _scalar(OmegaConf.select(cfg, key)))
    section = str(cfg.technique)
    if section in cfg and section != "bn":
        options = cast("dict[str, Any]", OmegaConf.to_container(cfg[section], resolve=True, enum_to_str=True))
        for k, v in options.items():
            flat.setdefault(f"{section}.{k}", _scalar(v))
    return flat


def _scalar(v: Any) -> Any:
    if isinstance(v, (bool, int, float, str)):
        return v
    if hasattr(v, "value"):  # enums
        return str(v.value)
    return str(v)


def write_env(run_dir: Path, device: torch.device, processes: Mapping[str, Any] | None = None) -> None:
    """env.json: versions, machine, command; `processes`: the run's processes (world_size, ...;
    distributed.describe())."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for pkg in (
        "pdl-experiments",
        "torch",
        "torchvision",
        "hydra-core",
        "omegaconf",
        "tensorboard",
        "rich",
        "scikit-learn",
        "torch-pruning",
        "numpy",
    ):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    commit = None
    try:
        repo = Path(__file__).resolve().parents[1]
        commit = (
            subprocess.run(
                ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        pass
    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "git_commit": commit,
        "packages": versions,
        "argv": sys.argv,
        "pid": os.getpid(),
        "started_unix": time.time(),
        "world_size": 1,
    }
    env.update(processes or {})
    save_json(env, run_dir / "env.json")


def print_summary(cfg: DictConfig, run_dir: Path, metrics: dict) -> None:
    from ..training.progress import summary_table

    shown = {k: v for k, v in metrics.items() if is_final(k)}
    summary_table(f"{cfg.technique} — {run_dir}", shown)
