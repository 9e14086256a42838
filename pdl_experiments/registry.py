"""One registry per kind: the techniques, the models and the dataset loaders.

Registries are filled from above: a model class, a dataset loader or a technique registers
itself where it is defined, so no module below ever looks another up by its module name.

    @MODELS.register("cnn", kind="image_classifier")
    class SmallCNN(nn.Module): ...

    @DATASETS.register("digits", kind="image")
    def load_digits(...): ...

    TECHNIQUES.add("bn", Technique("bn", run=run, needs=Needs(...), headline=(...)))

A kind is declared this one way. Importing `pdl_experiments.models`, `pdl_experiments.data`
or `pdl_experiments.techniques` imports (and so registers) every entry of that kind; the
pre-flight checks (config/checks.py), the safety check of a run read back from disk
(loading/safety.py), the run's outputs and the tests read the registries. A leaf module: it
imports nothing of the package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

# What a model is, and the kind of data a loader gives: the words a refusal uses.
MODEL_KINDS = {
    "image_classifier": "an image classifier",
    "seq2seq": "a sequence-to-sequence model",
    "image_generator": "an image generator (a GAN)",
}
DATA_KINDS = {"image": "image", "sequence": "sequence"}


@dataclass(frozen=True)
class Entry:
    """One registered thing: its name, the object, its kind and the `_target_` naming it."""

    name: str
    obj: Any
    kind: str | None
    target: str


class Registry:
    """name -> Entry, in registration order; also found by object or by `_target_` path."""

    def __init__(self, what: str, kinds: dict[str, str] | None = None):
        self.what = what
        self.kinds = kinds
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *, kind: str | None = None) -> Callable[[Any], Any]:
        """Decorator: `@MODELS.register("cnn", kind="image_classifier")`."""

        def add(obj: Any) -> Any:
            self.add(name, obj, kind=kind)
            return obj

        return add

    def add(self, name: str, obj: Any, *, kind: str | None = None, target: str | None = None) -> Any:
        """Register `obj` as `name` (a `functools.partial` names its `target` explicitly)."""
        if self.kinds is not None and kind not in self.kinds:
            raise ValueError(f"{self.what} {name}: kind={kind!r}, expected one of {', '.join(self.kinds)}")
        if target is None:
            target = f"{obj.__module__}.{obj.__qualname__}" if hasattr(obj, "__qualname__") else name
        old = self._entries.get(name)
        if old is not None and old.target != target:
            raise ValueError(f"{self.what} {name} is registered twice ({old.target}, {target})")
        self._entries[name] = Entry(name, obj, kind, target)
        return obj

    def __getitem__(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"no {self.what} named {name!r}: expected one of {', '.join(self._entries)}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self, kinds: tuple[str, ...] | None = None) -> list[str]:
        """The names registered, or those of the given kinds."""
        return [e.name for e in self._entries.values() if kinds is None or e.kind in kinds]

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def find(self, obj: Any = None, target: str | None = None) -> Entry | None:
        """The entry of an object (by identity) or of a `_target_` path; None if unregistered."""
        for e in self._entries.values():
            if (obj is not None and e.obj is obj) or (target is not None and e.target == target):
                return e
        return None


@dataclass(frozen=True)
class Needs:
    """What a technique works with: model kinds (None: it builds its own network), data kinds,
    and why it must run as one process (None: DistributedDataParallel is fine)."""

    model: tuple[str, ...] | None = ()
    data: tuple[str, ...] = ()
    one_process: str | None = None


@dataclass(frozen=True)
class Technique:
    """A technique: its recipe `run(ctx) -> metrics` and what the rest of the package asks of it.

    `headline`: its one-number summaries, shown beside test/val acc and loss (HPARAMS
    columns, the summary table); `load_model(cfg, data, ckpt, norm)`: rebuilds a finished
    run's model when the configured model alone cannot (a pruned architecture, a genotype);
    `evaluate_model(model, data, cfg)`: the technique's own test metrics for pdl-eval.
    """

    name: str
    run: Callable[[Any], dict]
    needs: Needs = field(default_factory=Needs)
    headline: tuple[str, ...] = ()
    load_model: Callable[..., Any] | None = None
    evaluate_model: Callable[..., dict[str, float]] | None = None


TECHNIQUES = Registry("technique")
MODELS = Registry("model", MODEL_KINDS)
DATASETS = Registry("dataset", DATA_KINDS)

__all__ = [
    "DATASETS",
    "DATA_KINDS",
    "MODELS",
    "MODEL_KINDS",
    "TECHNIQUES",
    "Entry",
    "Needs",
    "Registry",
    "Technique",
]
