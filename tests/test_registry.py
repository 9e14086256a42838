"""The registries list what the configs name, one way of declaring a kind, one error base."""

from __future__ import annotations

import inspect

import pytest
import yaml

# Importing a package fills its registry.
import pdl_experiments.data
import pdl_experiments.models
import pdl_experiments.techniques  # noqa: F401
from pdl_experiments.errors import PdlError, RunEnded
from pdl_experiments.registry import DATASETS, MODELS, TECHNIQUES, Needs, Registry, Technique

from helpers import REPO


def _targets(group: str) -> dict[str, str]:
    out = {}
    for p in sorted((REPO / "configs" / group).glob("*.yaml")):
        target = (yaml.safe_load(p.read_text()) or {}).get("_target_")
        if isinstance(target, str):
            out[p.stem] = target
    return out


@pytest.mark.parametrize("group,registry", [("model", MODELS), ("dataset", DATASETS)])
def test_every_shipped_target_is_registered_with_a_kind(group, registry):
    targets = _targets(group)
    assert targets
    for option, target in targets.items():
        entry = registry.find(target=target)
        assert entry is not None, f"configs/{group}/{option}.yaml names {target}, which is not registered"
        assert entry.kind in registry.kinds, (option, entry.kind)


def test_every_registered_model_and_loader_is_importable_by_its_target():
    from hydra.utils import get_object

    for registry in (MODELS, DATASETS):
        for e in registry.entries():
            assert get_object(e.target) is e.obj, e


def test_the_technique_group_and_the_registry_agree():
    options = sorted(p.stem for p in (REPO / "configs" / "technique").glob("*.yaml"))
    assert sorted(TECHNIQUES) == options
    for name in TECHNIQUES:
        t = TECHNIQUES[name].obj
        assert isinstance(t, Technique) and t.name == name and callable(t.run)
        assert isinstance(t.needs, Needs) and t.needs.data, name


def test_a_registry_refuses_a_second_entry_of_a_name_and_an_unknown_kind():
    r = Registry("thing", {"a": "an a"})

    def f():
        pass

    def g():
        pass

    r.add("x", f, kind="a")
    r.add("x", f, kind="a")  # the same again (a module imported twice): fine
    with pytest.raises(ValueError, match="registered twice"):
        r.add("x", g, kind="a")
    with pytest.raises(ValueError, match="kind='b'"):
        r.add("y", g, kind="b")
    with pytest.raises(KeyError, match="expected one of x"):
        r["nope"]
    assert r.find(obj=f).name == "x" and r.find(obj=g) is None
    assert r.names(("a",)) == ["x"]


def _exception_classes():
    import importlib

    pkg = REPO / "pdl_experiments"
    for path in sorted(pkg.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        module = importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                yield obj


def test_every_error_of_the_package_is_a_pdl_error():
    """One base class for what a user sees: the CLI prints any PdlError as its one line."""
    found = {c.__name__: c for c in _exception_classes()}
    assert {"ConfigError", "DataError", "CheckpointError", "NonFiniteLossError", "ProcessFailed"} <= set(
        found
    )
    for name, cls in found.items():
        if issubclass(cls, SystemExit):  # SweepFailed, SweepStopped: an exit status, not an error
            continue
        assert issubclass(cls, PdlError), name
    assert issubclass(found["Interrupted"], RunEnded) and issubclass(found["StopRun"], RunEnded)
