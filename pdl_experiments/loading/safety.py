"""A run directory made elsewhere is data, never code.

Hydra's `instantiate` calls whatever `_target_` a config names, with whatever arguments it
lists; its blocklist (os.system, eval, ...) is not an allowlist. So every config read back
from disk (`load_run`, `pdl-eval`, `prune.from_run`, a checkpoint's config, `pdl-report`)
goes through `check_config` before anything in it is imported or called:

* a `_target_` must be one of the project's own dataset loaders or models (those the
  shipped configs/dataset and configs/model name, plus the model zoo), a torch optimizer
  (`torch.optim.<Name>`) or LR scheduler (`torch.optim.lr_scheduler.<Name>`), or start
  with a prefix the user trusts explicitly: `PDL_TRUSTED_TARGETS=mypkg.models,other`
  (comma-separated), `load_run(..., trust=["mypkg."])`, `pdl-eval --trust mypkg.`;
* its arguments must be parameters the target declares (nothing slips through
  `**kwargs`), and no argument may carry a `_target_` of its own or `_args_`;
* the files are read with a size limit, YAML with a safe loader that refuses anchors and
  aliases (Hydra never writes them; they are how a YAML "billion laughs" bomb explodes).

The command line of a run is not limited: a user may point `_target_` anywhere in their
own `pdl-run` command. Checkpoints are read with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

from ..config import ConfigError
from ..registry import DATASETS, MODELS, TECHNIQUES

TRUST_ENV = "PDL_TRUSTED_TARGETS"
# What a run directory's files may weigh; a real one is a few KiB each.
MAX_BYTES = {".yaml": 1 << 20, ".json": 8 << 20}
MAX_YAML_NODES = 100_000
BLOCKS = ("dataset", "model", "optimizer", "scheduler")
_OPTIMIZER = re.compile(r"torch\.optim\.[A-Z][A-Za-z0-9]*")
_SCHEDULER = re.compile(r"torch\.optim\.lr_scheduler\.[A-Z][A-Za-z0-9]*")
_ALLOWED_META = {"_target_", "_partial_", "_convert_", "_recursive_"}


class UntrustedConfig(ConfigError):
    """A config read back from disk names code that is not allowed; nothing of it ran."""


def trusted_prefixes(trust: Iterable[str] | None = None) -> list[str]:
    """The user's explicit trust: `trust` plus $PDL_TRUSTED_TARGETS, as module prefixes."""
    items = list(trust or []) + os.environ.get(TRUST_ENV, "").split(",")
    return [t.strip().rstrip(".") for t in items if t.strip().rstrip(".")]


def read_bounded(path: str | os.PathLike) -> str:
    """The text of a run-directory file, refused when it is larger than such a file can be."""
    p = Path(path)
    limit = MAX_BYTES.get(p.suffix, 1 << 20)
    size = p.stat().st_size
    if size > limit:
        raise UntrustedConfig(
            f"{p} is {size:,} bytes, more than the {limit:,} a run's {p.suffix} file may be; refused"
        )
    return p.read_text()


def load_yaml_config(path: str | os.PathLike | None = None, text: str | None = None) -> Any:
    """A DictConfig/ListConfig from a YAML file (or text), refusing anchors, aliases and
    documents of more than MAX_YAML_NODES nodes before OmegaConf builds anything."""
    import yaml
    from omegaconf import OmegaConf

    where = str(path) if path is not None else "a checkpoint's config"
    if text is None:
        assert path is not None
        text = read_bounded(path)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    nodes = 0
    try:
        for event in yaml.parse(text, Loader=loader):
            nodes += 1
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise UntrustedConfig(
                    f"{where} uses YAML anchors/aliases, which a run's config never has; refused"
                )
            if nodes > MAX_YAML_NODES:
                raise UntrustedConfig(f"{where} has more than {MAX_YAML_NODES:,} YAML nodes; refused")
    except yaml.YAMLError as e:
        raise UntrustedConfig(f"{where} is not valid YAML ({str(e).splitlines()[0]})") from None
    return OmegaConf.create(text)


def check_config(cfg: Any, where: str, trust: Iterable[str] | None = None) -> None:
    """Refuse (UntrustedConfig, one line) a config read from disk that names code it may not call.

    Nothing is imported from a target before its name has passed the allowlist.
    """
    from omegaconf import OmegaConf

    prefixes = trusted_prefixes(trust)
    technique = OmegaConf.select(cfg, "technique", default=None)
    if technique is not None and str(technique) not in TECHNIQUES:
        raise UntrustedConfig(
            f"{where}: technique={technique} is not one of {', '.join(TECHNIQUES) or '(none registered)'}; refused"
        )
    for block in BLOCKS:
        node = OmegaConf.select(cfg, block, default=None)
        if node is None:
            continue
        if not OmegaConf.is_dict(node):
            raise UntrustedConfig(f"{where}: {block} must be a mapping with a _target_; refused")
        block_dict = cast("dict[str, Any]", OmegaConf.to_container(node, resolve=False))  # is_dict above
        _check_block(block_dict, block, where, prefixes)
    for key, value in _walk(OmegaConf.to_container(cfg, resolve=False), ""):
        head = key.split(".", 1)[0]
        if (key == "_target_" or key.endswith("._target_")) and head not in BLOCKS:
            raise UntrustedConfig(f"{where}: {key}={value} is not a place a target may be named; refused")


def _check_block(node: dict, block: str, where: str, prefixes: list[str]) -> None:
    target = node.get("_target_")
    if not isinstance(target, str):
        raise UntrustedConfig(f"{where}: {block}._target_ is missing or not a string; refused")
    if not (_allowed(block, target) or _trusted(target, prefixes)):
        top = target.split(".", 1)[0]
        raise UntrustedConfig(
            f"{where}: {block}._target_={target} is not allowed in a run read back from disk (allowed: the "
            f"project's dataset loaders and models, torch optimizers and LR schedulers); if you trust this code, "
            f"set {TRUST_ENV}={top} (or load_run(..., trust=['{top}.']), pdl-eval --trust {top}.)"
        )
    for key, value in node.items():
        if key.startswith("_") and key not in _ALLOWED_META:
            raise UntrustedConfig(
                f"{where}: {block}.{key} is not allowed in a run read back from disk; refused"
            )
        for k, v in _walk(value, key):
            if k.endswith("_target_") or k.endswith("_args_"):
                raise UntrustedConfig(
                    f"{where}: {block}.{k}={v}: an argument may not name code of its own "
                    "in a run read back from disk; refused"
                )
    from hydra.utils import get_object

    try:
        obj = get_object(target)
    except Exception as e:
        raise UntrustedConfig(
            f"{where}: {block}._target_={target} cannot be imported ({type(e).__name__})"
        ) from None
    if (
        block == "optimizer"
        and not _is_subclass(obj, "torch.optim", "Optimizer")
        and not _trusted(target, prefixes)
    ):
        raise UntrustedConfig(f"{where}: optimizer._target_={target} is not a torch optimizer; refused")
    if (
        block == "scheduler"
        and not _is_subclass(obj, "torch.optim.lr_scheduler", "LRScheduler")
        and not _trusted(target, prefixes)
    ):
        raise UntrustedConfig(f"{where}: scheduler._target_={target} is not a torch LR scheduler; refused")
    declared = _declared_parameters(obj)
    extra = sorted(k for k in node if not k.startswith("_") and k not in declared)
    if extra:
        raise UntrustedConfig(
            f"{where}: {block}.{extra[0]} is not a parameter of {target} "
            f"(it takes {', '.join(sorted(declared)) or 'no options'}); refused"
        )


def _allowed(block: str, target: str) -> bool:
    if block == "optimizer":
        return bool(_OPTIMIZER.fullmatch(target))
    if block == "scheduler":
        return bool(_SCHEDULER.fullmatch(target))
    return target in _shipped_targets(block)


def _trusted(target: str, prefixes: list[str]) -> bool:
    return any(target == p or target.startswith(p + ".") for p in prefixes)


def _shipped_targets(group: str) -> frozenset[str]:
    """The `_target_`s of the project's own models and dataset loaders: the registries (what
    the package's configs/model and configs/dataset name, and the whole zoo)."""
    registry = MODELS if group == "model" else DATASETS
    return frozenset(e.target for e in registry.entries())


def _is_subclass(obj: Any, module: str, base: str) -> bool:
    import importlib

    parent = getattr(importlib.import_module(module), base)
    return inspect.isclass(obj) and issubclass(obj, parent)


def _declared_parameters(obj: Any) -> set[str]:
    """Names a call can pass by keyword: no **kwargs, no positional-only parameters."""
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return set()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in params if p.kind in kinds}


def _walk(node: Any, prefix: str):
    """(dotted key, value) of every entry of a nested container."""
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            yield key, v
            yield from _walk(v, key)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{prefix}[{i}]")
