"""Finished runs read back: `load_run` (model, config, data, metrics) and `evaluate_run`.

A run directory may come from someone else: its config is checked by safety.py before
anything it names is imported (only the project's loaders and models, torch optimizers and
schedulers, and what the caller trusts: `trust=[...]` or $PDL_TRUSTED_TARGETS).
Techniques may import from here (prune.from_run starts from a finished run); nothing here
imports a technique: a run's technique is found in `registry.TECHNIQUES`, which importing
`pdl_experiments.techniques` fills (`pdl_experiments.load_run` and pdl-eval do).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from ..data import DataSplits, TensorLoader
from ..models import BatchNormSpec, build_model
from ..registry import TECHNIQUES
from ..training import classification_metrics, load_checkpoint
from ..training.checkpoint import CheckpointError
from .safety import check_config, load_yaml_config, read_bounded


@dataclass
class LoadedRun:
    model: torch.nn.Module
    cfg: DictConfig
    data: DataSplits
    metrics: dict
    checkpoint: dict
    run_dir: Path


def run_config(run_dir: str | Path, trust: Iterable[str] | None = None) -> DictConfig:
    """The composed config a run directory was made with (its .hydra/config.yaml), checked:
    safety.UntrustedConfig if it names code that is neither the project's nor trusted."""
    cfg_path = Path(run_dir).expanduser() / ".hydra" / "config.yaml"
    if not cfg_path.is_file():
        raise CheckpointError(f"{run_dir} is not a run directory (no .hydra/config.yaml)")
    cfg = load_yaml_config(cfg_path)
    check_config(cfg, str(cfg_path), trust)
    return cfg


def submodule_state(state_dict: dict, prefix: str = "model.") -> dict:
    """The entries of a task's state dict that belong to one of its modules, unprefixed."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def load_run(
    run_dir: str | Path, checkpoint: str = "best.pt", device: str = "cpu", trust: Iterable[str] | None = None
) -> LoadedRun:
    """The trained model of a finished run (best weights, eval mode), its config and data.

    `trust`: module prefixes whose classes the run's config may name besides the project's
    own (e.g. ["mypkg.models"]); $PDL_TRUSTED_TARGETS adds to them.
    """
    from hydra.utils import instantiate

    run_dir = Path(run_dir)
    cfg = run_config(run_dir, trust)
    ckpt = load_checkpoint(run_dir, checkpoint)
    data = instantiate(cfg.dataset, _convert_="all")
    technique = TECHNIQUES[str(cfg.technique)].obj  # the registry: filled by pdl_experiments.techniques
    norm = BatchNormSpec.from_config(cfg.bn)
    if technique.load_model is not None:
        model = technique.load_model(cfg, data, ckpt, norm)
    else:
        model = build_model(cfg.model, data.info, norm)
        model.load_state_dict(submodule_state(ckpt["task"]))
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(read_bounded(metrics_path)) if metrics_path.is_file() else {}
    return LoadedRun(model.to(device).eval(), cfg, data, metrics, ckpt, run_dir)


def evaluate_run(
    run_dir: str | Path, checkpoint: str = "best.pt", device: str = "cpu", trust: Iterable[str] | None = None
) -> dict:
    """Recompute a saved run's test metrics from its checkpoint (what pdl-eval prints)."""
    loaded = load_run(run_dir, checkpoint, device, trust)
    technique = TECHNIQUES[str(loaded.cfg.technique)].obj
    data = loaded.data.to(device)
    if technique.evaluate_model is not None:
        return dict(technique.evaluate_model(loaded.model, data, loaded.cfg))
    test = classification_metrics(loaded.model, TensorLoader(*data.test, batch_size=1024))
    return {f"test/{k}": v for k, v in test.items()}
