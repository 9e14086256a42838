"""Docs that cannot go stale: every repository path, module path and `pdl-run` group option
that the README, the docs pages and the code's docstrings and comments name exists.

What is read: README.md and docs/*.md whole; the docstrings and comments of every Python file
of the package, its Optuna plugin, scripts/ and tests/; configs/ (whole: the YAML there is
the package's data), the comments of the shell scripts, `.ci/run`, pyproject.toml and
mkdocs.yml. CHANGELOG.md is history and names what was there then. What is checked:

* paths under `pdl_experiments/`, `configs/`, `docs/`, `scripts/`, `tests/`,
  `hydra_plugins/`, `.ci/` (a `<placeholder>` or a `*` glob is left alone);
* a package module named from its layer (`training/task.py`) and a bare file name
  (`context.py`: in the naming file's own folder or anywhere in the repository);
* dotted names `pdl_experiments.<module>.<name>`: a module, or an attribute of one;
* group options `group=option` (`technique=prune`, `hydra/launcher=joblib`,
  `+prune_setting=mlp_iterative`, `logger=[tensorboard,mlflow]`, `model=cnn|mlp`), against
  the options Hydra finds for the group (the project's configs and the installed plugins);
  `NAME`, `None`, `my_...` (your own) and Optuna's `choice(...)` are not options;
* a section named as `README "When things go wrong"` or `docs/scaling.md "Time limits"` (a
  heading, or a bold label `**Like this.**`), and
  the targets and anchors of the Markdown links in README.md and docs/.

Each finding names the file and line that names the missing thing.
"""

from __future__ import annotations

import ast
import importlib
import io
import re
import tokenize
from functools import cache
from pathlib import Path

import pytest

from helpers import REPO

ROOTS = ("pdl_experiments", "configs", "docs", "scripts", "tests", "hydra_plugins", ".ci")
LAYERS = ("cli", "sweeps", "run", "techniques", "loading", "training", "parallel", "models", "data", "config")
# Other projects' files that the code and the pages cite (no file of ours by that name).
EXTERNAL_FILES = {
    "architect.py",  # DARTS' second-order step, which techniques/nas.py follows
    "test_optuna_sweeper_plugin.py",  # Hydra's own Optuna sweeper tests, which ours port
}

_ROOTS_RE = "|".join(re.escape(r) for r in ROOTS)
_LAYERS_RE = "|".join(LAYERS)
_PATH = re.compile(r"(?<![\w/.$-])(?:\.\./)?((?:" + _ROOTS_RE + r")/[\w./<>*{}-]*)")
_LAYER_PATH = re.compile(r"(?<![\w/.$-])((?:" + _LAYERS_RE + r")/[\w/]*\w\.py)\b")
_BARE_PY = re.compile(r"(?<![\w/.$-])([A-Za-z_]\w*\.py)\b")
_DOTTED = re.compile(r"(?<![\w.])(pdl_experiments(?:\.\w+)+)")
_OPTION = re.compile(r"(?<![\w.$/-])\+{0,2}((?:hydra/)?[a-z_]+(?:/[a-z_]+)*)=([\w.\[\],|-]*\w\]?)")
_SECTION = re.compile(r"""(README|docs/\w+\.md)(?:\.md)?[ ,]*(?:section |'s )?["'“]([^"'”\n]{3,80})["'”]""")
_LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)\)|!\[[^\]\n]*\]\(([^)\s]+)\)")


def _files(pattern: str) -> list[Path]:
    return sorted(p for p in REPO.glob(pattern) if ".venv" not in p.relative_to(REPO).parts)


def _python_text(path: Path) -> list[tuple[int, str]]:
    """(line, text) of the file's docstrings and comments."""
    source = path.read_text()
    out: list[tuple[int, str]] = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out.append((tok.start[0], tok.string))
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    first = body[0].lineno
                    out += [(first + i, line) for i, line in enumerate(body[0].value.value.splitlines())]
    return out


def _comment_text(path: Path) -> list[tuple[int, str]]:
    lines = path.read_text().splitlines()
    return [(i + 1, line[line.index("#") :]) for i, line in enumerate(lines) if "#" in line]


def _whole_text(path: Path) -> list[tuple[int, str]]:
    return list(enumerate(path.read_text().splitlines(), start=1))


def sources() -> dict[Path, list[tuple[int, str]]]:
    out: dict[Path, list[tuple[int, str]]] = {}
    for p in [REPO / "README.md", *_files("docs/*.md")]:
        out[p] = _whole_text(p)
    for pattern in ("pdl_experiments/**/*.py", "hydra_plugins/**/*.py", "scripts/*.py", "tests/**/*.py"):
        for p in _files(pattern):
            out[p] = _python_text(p)
    for p in _files("configs/**/*.yaml"):
        out[p] = _whole_text(p)
    for p in [*_files("scripts/*.sh"), REPO / ".ci" / "run", REPO / "pyproject.toml", REPO / "mkdocs.yml"]:
        out[p] = _comment_text(p)
    return out


def _placeholder(name: str) -> bool:
    return any(c in name for c in "<>*{}") or "..." in name


def _clean(name: str) -> str:
    name = name.split("::", 1)[0].split("#", 1)[0]
    return name.rstrip(".,:;")


def _missing_path(name: str) -> bool:
    if name.startswith("pdl_experiments/configs"):  # the installed package's name for configs/
        name = name.replace("pdl_experiments/", "", 1)
    return not (REPO / name).exists()


@cache
def _basenames() -> frozenset[str]:
    files = [p for root in ROOTS for p in (REPO / root).rglob("*.py")]
    return frozenset(p.name for p in files if ".venv" not in p.parts)


@cache
def _group_options() -> dict[str, frozenset[str]]:
    """Every config group Hydra sees from pdl-run's configs, with its options."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module("pdl_experiments.configs", version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        groups: dict[str, frozenset[str]] = {}

        def walk(parent: str) -> None:
            for child in loader.list_groups(parent):
                path = f"{parent}/{child}" if parent else child
                groups[path] = frozenset(loader.get_group_options(path))
                walk(path)

        walk("")
    GlobalHydra.instance().clear()
    return groups


def _module_or_attribute(dotted: str) -> bool:
    parts = dotted.rstrip(".").split(".")
    for n in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:n]))
        except ImportError:
            continue
        for attr in parts[n:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def _slugs(md: Path) -> set[str]:
    """The anchors of a Markdown file's headings, as GitHub and mkdocs make them."""
    out = set()
    fence = False
    for line in md.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        if fence or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower()
        title = re.sub(r"[^\w\s-]", "", title)
        out.add(re.sub(r"\s", "-", title))  # GitHub: every space a hyphen
        out.add(re.sub(r"[-\s]+", "-", title).strip("-"))  # mkdocs' toc
    return out


def _headings(md: Path) -> list[str]:
    """Its headings and bold labels (`* **TensorBoard layout.** ...`), lower case."""
    text = md.read_text()
    heads = [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]
    return [h.lower() for h in heads + re.findall(r"\*\*([^*\n]+)\*\*", text)]


def findings(texts: dict[Path, list[tuple[int, str]]]) -> list[str]:
    """What `texts` ({file: [(line, text)]}) names that does not exist, one line each."""
    groups = _group_options()
    bad: list[str] = []
    for src, lines in texts.items():
        rel = src.relative_to(REPO)
        for lineno, text in lines:
            where = f"{rel}:{lineno}"
            for m in _PATH.finditer(text):
                name = _clean(m.group(1))
                if not _placeholder(name) and name.count("/") >= 1 and name.rstrip("/") not in ROOTS:
                    if _missing_path(name):
                        bad.append(f"{where}: {name} does not exist")
            for m in _LAYER_PATH.finditer(text):
                if not any((REPO / root / m.group(1)).exists() for root in ("pdl_experiments", "tests")):
                    bad.append(f"{where}: {m.group(1)} is not a module of pdl_experiments/")
            for m in _BARE_PY.finditer(text):
                name = m.group(1)
                if name in EXTERNAL_FILES or (src.parent / name).exists() or name in _basenames():
                    continue
                bad.append(f"{where}: {name} is no file of the repository")
            for m in _DOTTED.finditer(text):
                if not _placeholder(m.group(1)) and not _module_or_attribute(m.group(1)):
                    bad.append(f"{where}: {m.group(1)} is no module or attribute")
            for m in _OPTION.finditer(text):
                group, values = m.group(1), m.group(2)
                if group not in groups:
                    continue
                if text[m.end() : m.end() + 1] == "(":  # Optuna's choice(...), interval(...)
                    continue
                for value in re.split(r"[,|]", values.strip("[]")):
                    if not value or _placeholder(value) or value.isupper() or value == "None":
                        continue
                    if not value.startswith("my_") and value not in groups[group]:
                        bad.append(f"{where}: {group}={value}: no such option of group {group}")
            for m in _SECTION.finditer(text):
                md = REPO / ("README.md" if m.group(1) == "README" else m.group(1))
                if md.exists() and not any(h.startswith(m.group(2).lower()) for h in _headings(md)):
                    bad.append(f"{where}: {m.group(1)} has no section {m.group(2)!r}")
            if src.suffix == ".md":
                for m in _LINK.finditer(text):
                    target = m.group(1) or m.group(2)
                    if re.match(r"[a-z]+:", target):  # https:, mailto:
                        continue
                    file, _, anchor = target.partition("#")
                    path = (src.parent / file).resolve() if file else src
                    if not path.exists():
                        bad.append(f"{where}: link to {target}: no such file")
                    elif anchor and path.suffix == ".md" and anchor not in _slugs(path):
                        bad.append(f"{where}: link to {target}: no such section")
    return bad


def test_every_named_path_module_and_option_exists():
    bad = findings(sources())
    assert not bad, f"{len(bad)} stale references:\n" + "\n".join(bad)


def test_the_checks_see_what_they_check():
    """The sources hold what the checks look for (a regex that matched nothing would pass)."""
    groups = _group_options()
    assert {"model", "technique", "experiment", "hydra/launcher", "hydra/sweeper"} <= set(groups)
    assert {"joblib", "slurm", "slurm_ddp", "submitit_local"} <= groups["hydra/launcher"]
    assert "optuna" in groups["hydra/sweeper"]
    text = "\n".join(t for lines in sources().values() for _, t in lines)
    assert (
        _PATH.search("see pdl_experiments/training/task.py.").group(1) == "pdl_experiments/training/task.py."
    )
    assert {m.group(1) for m in _OPTION.finditer(text)} >= {"technique", "model", "hydra/launcher", "logger"}
    assert len(_DOTTED.findall(text)) > 10 and len(_LINK.findall(text)) > 20


@pytest.mark.parametrize(
    "line, found",
    [
        ("`Task` lives in techniques/base.py.", "techniques/base.py is not a module"),
        ("Defaults live in pdl_experiments/config.py.", "pdl_experiments/config.py does not exist"),
        ("the sweep (pdl_experiments.sweep.stop_file)", "pdl_experiments.sweep.stop_file is no module"),
        ("pdl-run model=plain_deeep", "model=plain_deeep: no such option"),
        ("pdl-run -m hydra/launcher=joblib,slurm_ddpp", "hydra/launcher=slurm_ddpp: no such option"),
        ('see README "Beyond one machine"', "README has no section 'Beyond one machine'"),
        ("[the scaling page](scaling.md#no-such-part)", "link to scaling.md#no-such-part: no such section"),
        ("`pdl-run` (cli.py) is the command line", "cli.py is no file of the repository"),
    ],
)
def test_a_stale_reference_is_found(line, found):
    """A line naming something that is not there, read as if docs/index.md held it."""
    page = REPO / "docs" / "index.md"
    assert findings({page: _whole_text(page)}) == []
    bad = findings({page: [(999, line)]})
    assert len(bad) == 1 and bad[0].startswith("docs/index.md:999: ") and found in bad[0], bad


def test_readme_is_one_screen_and_links_every_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    linked = set(re.findall(r"\]\(docs/(\w+\.md)", readme))
    pages = {p.name for p in (REPO / "docs").glob("*.md")} - {"index.md"}
    assert pages <= linked, f"docs pages the README does not link: {sorted(pages - linked)}"


def test_ci_runs_the_readmes_test_command_verbatim():
    readme = (REPO / "README.md").read_text()
    dev = readme.split("## Development", 1)[1]
    command = re.search(r"```bash\n(.+?)\n```", dev, re.S).group(1).strip()
    assert "mkdocs build --strict" in command and "pytest" in command
    assert command in (REPO / ".ci" / "run").read_text().splitlines()


def test_the_configuration_page_lists_every_option_of_every_group():
    """docs/configuration.md's table has a row per config group of the project (and the two
    Hydra groups a user picks: launcher, sweeper) naming every option Hydra finds for it."""
    groups = _group_options()
    text = (REPO / "docs" / "configuration.md").read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([\w/]+)` \|.*$", text, re.M)}
    wanted = [g for g in groups if not g.startswith("hydra")] + ["hydra/launcher", "hydra/sweeper"]

    def listed(option: str, row: str) -> bool:
        return re.search(r"(?<![\w-])" + re.escape(option) + r"(?![\w-])", row) is not None

    missing = {g: sorted(o for o in groups[g] if not listed(o, rows.get(g, ""))) for g in wanted}
    missing = {g: opts for g, opts in missing.items() if opts}
    assert not missing, f"options docs/configuration.md does not list, by group: {missing}"
