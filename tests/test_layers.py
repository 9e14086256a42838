"""The package's shape: layers that import downward only, no import cycle (imports inside
functions included), a small package root, short files and functions (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "pdl_experiments"
# Top to bottom: a module may import its own layer and those below it, never one above.
LAYERS = [
    {"cli", "sweeps"},
    {"run"},
    {"techniques"},
    {"loading"},
    {"training"},
    {"parallel"},
    {"models", "data", "figures", "measure"},
    {"config"},
    {"registry", "errors", "__init__"},
]


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(mod: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The package modules `mod` imports, anywhere in its file (functions included)."""
    base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        while parts:
            if ".".join(parts) in mods:
                return ".".join(parts)
            parts = parts[:-1]
        return None

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {r for a in node.names if (r := resolve(a.name))}
        elif isinstance(node, ast.ImportFrom):
            anchor = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            target = (
                ".".join([*anchor, node.module] if node.module else anchor)
                if node.level
                else node.module or ""
            )
            if target.startswith("pdl_experiments"):
                found |= {r for a in node.names if (r := resolve(f"{target}.{a.name}") or resolve(target))}
    return {m for m in found if m != mod and not mod.startswith(m + ".")}


def _top(mod: str) -> str:
    return mod.split(".")[1] if "." in mod else "__init__"


def _layer(mod: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if _top(mod) in names)


def test_every_module_is_in_a_layer():
    assert [m for m in _modules() if not any(_top(m) in names for names in LAYERS)] == []


def test_imports_point_down_only():
    mods = _modules()
    upward = []
    for mod, path in mods.items():
        if mod == "pdl_experiments":  # the root's load_run imports what it needs, lazily
            continue
        for dep in _imports(mod, path, mods):
            if dep != "pdl_experiments" and _layer(dep) < _layer(mod):
                upward.append(f"{mod} -> {dep}")
    assert upward == []


def test_no_import_cycle():
    mods = _modules()
    graph = {m: _imports(m, p, mods) for m, p in mods.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return [*path, m, d]
            if d not in state and (cycle := visit(d, [*path, m])):
                return cycle
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            assert visit(m, []) is None


def test_lower_layers_never_reach_the_techniques():
    mods = _modules()
    graph = {m: _imports(m, p, mods) for m, p in mods.items()}
    for m in mods:
        if m.split(".")[1:2] and m.split(".")[1] in ("data", "models", "training"):
            seen, todo = set(), [m]
            while todo:
                for d in graph[todo.pop()] - seen:
                    seen.add(d)
                    todo.append(d)
            assert not [d for d in seen if d.startswith("pdl_experiments.techniques")], m


def test_small_root_short_files_short_functions():
    assert len([p for p in PKG.glob("*.py") if p.name != "__init__.py"]) <= 8
    for p in PKG.rglob("*.py"):
        text = p.read_text()
        assert len(text.splitlines()) <= 450, p
        limit = 60 if p.name == "trainer.py" and p.parent.name == "training" else 80
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno + 1 <= limit, f"{p}:{node.lineno} {node.name}"
