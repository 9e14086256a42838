"""What goes with what, checked once before anything is built, the same way for every technique.

* Each model of the zoo and each dataset loader registers itself with its kind
  (registry.py: `MODELS`, `DATASETS`); each technique says what it needs (`Technique.needs`:
  the model kinds and data kinds it works with; `model=None` when it builds its own
  network; `one_process="<why>"` when it cannot train under DistributedDataParallel, so
  trainer.devices > 1 or an outside launcher's several processes are refused, saying why).
* The options of every `_target_` group (model, dataset, optimizer, scheduler) are checked
  against the signature of what it names: no unknown option, and each value of the type its
  annotation says (ranges by option name: ranges.py's _OPTION_RANGES).

A refusal is one line naming the choices and what would work instead, e.g.
`technique=bn trains image classifiers; model=transformer is a sequence-to-sequence model:
use technique=attention, or model=cnn|mlp|plain_deep|resnet|vgg`. The registries are filled
from above (the run imports the techniques, which import the models and loaders).
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..registry import DATA_KINDS, DATASETS, MODEL_KINDS, MODELS, TECHNIQUES, Registry, Technique
from .schema import ConfigError

VERBS = {
    "image_classifier": "trains image classifiers",
    "seq2seq": "trains sequence-to-sequence models",
    "image_generator": "trains GANs",
}
# What a group's `_target_` is called with besides its options (never set in a config).
PASSED_IN = {"model": ("info", "norm"), "optimizer": ("params",), "scheduler": ("optimizer",)}


def kind_of(target: str, registry: Registry) -> str | None:
    """The registered kind of a model or loader target; None for one that registers none."""
    from hydra.utils import get_object

    try:
        obj = get_object(target)  # imports its module: the module registers what it defines
    except Exception:
        return None
    entry = registry.find(obj=obj) or registry.find(target=target)
    return entry.kind if entry is not None else None


def check(
    cfg: DictConfig,
    technique: Technique,
    chosen: dict[str, str],
    on_command_line: frozenset[str] | set[str] = frozenset(),
    outside: dict[str, Any] | None = None,
) -> None:
    """Refuse a technique x model x dataset combination that cannot work (ConfigError).

    `chosen`: each group's option ({"model": "transformer"}; {} outside Hydra);
    `on_command_line`: the groups the user picked explicitly; `outside`: the launcher that
    started this process as one of several (parallel.launch.external_launch()), or None.
    """
    name, needs = technique.name, technique.needs
    if needs.one_process:
        _check_one_process(cfg, name, needs.one_process, outside)
    data_kind = kind_of(str(cfg.dataset.get("_target_")), DATASETS)
    dataset = chosen.get("dataset") or _choice_of("dataset", str(cfg.dataset.get("_target_")))
    if needs.data and data_kind and data_kind not in needs.data:
        ok = "|".join(_options("dataset", needs.data, DATASETS))
        raise ConfigError(
            f"technique={name} needs {' or '.join(needs.data)} data; dataset={dataset} is "
            f"{DATA_KINDS.get(data_kind, data_kind)} data: use dataset={ok}"
        )
    if needs.model is None:
        if "model" in on_command_line:
            raise ConfigError(
                f"technique={name} builds its own network (the {name}.* options), so "
                f"model={chosen.get('model', '?')} would be ignored: leave model out"
            )
        return
    model_kind = kind_of(str(cfg.model.get("_target_")), MODELS)
    wanted = needs.model
    if wanted and model_kind and model_kind not in wanted:
        model = chosen.get("model") or _choice_of("model", str(cfg.model.get("_target_")))
        others = [e.name for e in TECHNIQUES.entries() if model_kind in (e.obj.needs.model or ())]
        instead = f"technique={'|'.join(others)}, or " if others else ""
        raise ConfigError(
            f"technique={name} {VERBS.get(wanted[0], 'needs another model')}; model={model} is "
            f"{MODEL_KINDS.get(model_kind, model_kind)}: use {instead}"
            f"model={'|'.join(_options('model', wanted, MODELS))}"
        )


def _check_one_process(cfg: DictConfig, name: str, why: str, outside: dict[str, Any] | None) -> None:
    """A technique that needs one process (why) refuses several."""
    devices = int(OmegaConf.select(cfg, "trainer.devices", default=1) or 1)
    if devices > 1:
        raise ConfigError(f"trainer.devices={devices}: technique={name} {why}; use trainer.devices=1")
    if outside is not None:
        raise ConfigError(
            f"technique={name} {why}, but {outside['launcher']} started {outside['world']} "
            "processes: run it as one process"
        )


def check_options(block: DictConfig, group: str) -> None:
    """A `_target_` group's options (model, dataset, optimizer, scheduler) against the
    signature of what it names: known names, annotated types."""
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
                n
                for n, p in params.items()
                if n not in PASSED_IN.get(group, ()) and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
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


def _options(group: str, kinds: Sequence[str], registry: Registry) -> list[str]:
    """The shipped options of a config group whose target is of one of `kinds`."""
    return [name for name, target in _shipped(group).items() if kind_of(target, registry) in kinds]


def _choice_of(group: str, target: str) -> str:
    names = [name for name, t in _shipped(group).items() if t == target]
    return names[0] if len(names) == 1 else target.rsplit(".", 1)[-1]
