"""`prune.from_run`: prune the best weights of a finished run instead of training here, once
it is checked to be a run of the same model, data, seed and batch-norm settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..config import ConfigError
from ..loading import load_run, run_config
from ..training.checkpoint import CheckpointError, resolve_checkpoint


def source_model(ctx) -> nn.Module:
    """The model pruning starts from: trained here, or the best weights of prune.from_run."""
    if ctx.cfg.prune.from_run is None:
        return ctx.build_model()
    return load_run(ctx.cfg.prune.from_run).model.to(ctx.device)


def check_source(ctx) -> Path | None:
    """prune.from_run must be a finished run on the same model, data and norm settings;
    returns its best.pt (None without prune.from_run)."""
    src = ctx.cfg.prune.from_run
    if src is None:
        return None
    try:
        old = run_config(src)
        best = resolve_checkpoint(Path(src).expanduser(), "best.pt")
    except CheckpointError as e:
        raise ConfigError(f"prune.from_run={src}: {e}") from e
    old.seed = old.get("seed", ctx.cfg.seed)
    for section in ("model", "dataset", "bn.enabled", "bn.impl"):
        theirs = _flat(OmegaConf.select(old, section))
        ours = _flat(OmegaConf.select(ctx.cfg, section))
        for key in sorted(set(theirs) | set(ours)):
            if theirs.get(key) != ours.get(key):
                full = f"{section}.{key}" if key else section
                raise ConfigError(
                    f"prune.from_run={src} was run with {full}={theirs.get(key)}, this run has "
                    f"{ours.get(key)}: expected the same model, dataset, seed and bn settings"
                )
    return best


def _flat(node: Any) -> dict[str, Any]:
    if isinstance(node, DictConfig):
        return cast("dict[str, Any]", OmegaConf.to_container(node, resolve=True))  # a DictConfig's: a dict
    return {"": node}
