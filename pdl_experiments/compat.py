"""What goes with what, checked once before anything is built, the same way for every technique.

* Each model declares what it is (`KIND` on the class or factory: an image classifier, a
  sequence-to-sequence model, an image generator); each dataset loader the kind of data it
  gives (`KIND`: image or sequence); each technique what it needs (`NEEDS` in its module:
  the model kinds and data kinds it works with; `model: None` when it builds its own;
  `one_process: "<why>"` when it cannot train under DistributedDataParallel, so
  trainer.devices > 1 or an outside launcher's several processes are refused, saying why).
* A model's or loader's options are checked against its signature: no unknown option, and
  each value of the type its annotation says (ranges are ranges.py's _OPTION_RANGES).

A refusal is one line naming the choices and what would work instead, e.g.
`technique=bn trains image classifiers; model=transformer is a sequence-to-sequence model:
use technique=attention, or model=cnn|mlp|plain_deep|resnet|vgg`.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .config import ConfigError

MODEL_KINDS = {
    "image_classifier": "an image classifier",
    "seq2seq": "a sequence-to-sequence model",
    "image_generator": "an image generator (a GAN)",
}
DATA_KINDS = {"image": "image", "sequence": "sequence"}
VERBS = {
    "image_classifier": "trains image classifiers",
    "seq2seq": "trains sequence-to-sequence models",
    "image_generator": "trains GANs",
}


def declare(kind: str):
    """Decorator for model factories and loaders that are functions: `@declare("image")`."""

    def mark(obj):
        setattr(obj, "KIND", kind)  # noqa: B010 - a function attribute, read by kind_of
        return obj

    return mark


def kind_of(target: str) -> str | None:
    """The declared kind of a model or loader target; None for one that declares none."""
    from hydra.utils import get_object

    try:
        return getattr(get_object(target), "KIND", None)
    except Exception:
        return None


def check(
    cfg: DictConfig,
    technique: Any,
    chosen: dict[str, str],
    on_command_line: frozenset[str] | set[str] = frozenset(),
) -> None:
    """Refuse a technique x model x dataset combination that cannot work (ConfigError).

    `chosen`: each group's option ({"model": "transformer"}; {} outside Hydra);
    `on_command_line`: the groups the user picked explicitly.
    """
    name = str(cfg.technique)
    needs = getattr(technique, "NEEDS", {})
    if needs.get("one_process"):
        _check_one_process(cfg, name, needs["one_process"])
    data_kind = kind_of(str(cfg.dataset.get("_target_")))
    dataset = chosen.get("dataset") or _choice_of("dataset", str(cfg.dataset.get("_target_")))
    if needs.get("data") and data_kind and data_kind not in needs["data"]:
        ok = "|".join(_options("dataset", needs["data"]))
        raise ConfigError(
            f"technique={name} needs {' or '.join(needs['data'])} data; dataset={dataset} is "
            f"{DATA_KINDS.get(data_kind, data_kind)} data: use dataset={ok}"
        )
    if "model" in needs and needs["model"] is None:
        if "model" in on_command_line:
            raise ConfigError(
                f"technique={name} builds its own network (the {name}.* options), so "
                f"model={chosen.get('model', '?')} would be ignored: leave model out"
            )
        return
    model_kind = kind_of(str(cfg.model.get("_target_")))
    wanted = needs.get("model") or ()
    if wanted and model_kind and model_kind not in wanted:
        model = chosen.get("model") or _choice_of("model", str(cfg.model.get("_target_")))
        others = [t for t, kinds in _technique_needs().items() if model_kind in (kinds.get("model") or ())]
        instead = f"technique={'|'.join(others)}, or " if others else ""
        raise ConfigError(
            f"technique={name} {VERBS.get(wanted[0], 'needs another model')}; model={model} is "
            f"{MODEL_KINDS.get(model_kind, model_kind)}: use {instead}"
            f"model={'|'.join(_options('model', wanted))}"
        )


def _check_one_process(cfg: DictConfig, name: str, why: str) -> None:
    """A technique that declares `NEEDS["one_process"]` (why) refuses several processes."""
    from .launch import external_launch

    devices = int(OmegaConf.select(cfg, "trainer.devices", default=1) or 1)
    outside = external_launch()
    if devices > 1:
        raise ConfigError(f"trainer.devices={devices}: technique={name} {why}; use trainer.devices=1")
    if outside is not None:
        raise ConfigError(
            f"technique={name} {why}, but {outside['launcher']} started {outside['world']} "
            "processes: run it as one process"
        )


def check_options(block: DictConfig, group: str) -> None:
    """A model's or loader's options against its signature: known names, annotated types."""
    from hydra.utils import get_object

    target = block.get("_target_")
    if not isinstance(target, str):
        return
    try:
        obj = get_object(target)
    except Exception:
        return
    params, hints = _signature(obj)
    if params is None:
        return
    container = typing.cast(dict[str, Any], OmegaConf.to_container(block, resolve=True))
    given = {str(k): v for k, v in container.items() if not str(k).startswith("_")}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key, value in given.items():
        if key not in params:
            if takes_any:
                continue
            names = [
                n for n, p in params.items() if n not in ("info", "norm") and p.kind is not p.VAR_KEYWORD
            ]
            raise ConfigError(
                f"{group}.{key} is not an option of {target.rsplit('.', 1)[-1]}: expected one of "
                f"{', '.join(names) or 'none'}"
            )
        hint = hints.get(key)
        if hint is not None and not _fits(value, hint):
            raise ConfigError(f"{group}.{key}={value}: expected {_describe(hint)}")


def _signature(obj: Any) -> tuple[dict[str, inspect.Parameter] | None, dict[str, Any]]:
    fn = obj.__init__ if inspect.isclass(obj) else obj
    try:
        params = dict(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        return None, {}
    try:
        hints = typing.get_type_hints(fn.func if isinstance(fn, functools.partial) else fn)
    except Exception:
        hints = {}
    return params, hints


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence) or origin is getattr(typing, "Sequence", None):
        if not isinstance(value, (list, tuple)):
            return False
        inner = args[0] if args else Any
        return all(_fits(v, inner) for v in value)
    return True  # a type this check does not model: the constructor decides


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if hint is type(None):
        return "null"
    if origin in (list, tuple, Sequence):
        inner = _describe(args[0]) if args else "values"
        return f"a list of {inner.replace('an integer', 'integers').replace('a number', 'numbers')}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))


@functools.cache
def _shipped(group: str) -> dict[str, str]:
    """option name -> `_target_` of the package's configs/<group>/*.yaml."""
    from importlib.resources import files

    import yaml

    found = {}
    for entry in sorted((files("pdl_experiments.configs") / group).iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            data = yaml.safe_load(entry.read_text()) or {}
            if isinstance(data.get("_target_"), str):
                found[entry.name[: -len(".yaml")]] = data["_target_"]
    return found


def _options(group: str, kinds: Sequence[str]) -> list[str]:
    return [name for name, target in _shipped(group).items() if kind_of(target) in kinds]


def _choice_of(group: str, target: str) -> str:
    names = [name for name, t in _shipped(group).items() if t == target]
    return names[0] if len(names) == 1 else target.rsplit(".", 1)[-1]


@functools.cache
def _technique_needs() -> dict[str, dict]:
    import importlib

    from .techniques import TECHNIQUES

    return {
        t: getattr(importlib.import_module(f"pdl_experiments.techniques.{t}"), "NEEDS", {})
        for t in TECHNIQUES
    }
