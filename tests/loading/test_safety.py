"""loading/safety.py: a run directory made elsewhere is data: hostile ones are refused by every
in-process entry point (load_run, evaluate_run, prune.from_run, pdl-report's summary) and
nothing in them runs; nothing in the package loads unsafely. The command lines (pdl-eval,
pdl-run): e2e/test_safety.py."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from pdl_experiments.loading import evaluate_run, load_run
from pdl_experiments.loading.safety import UntrustedConfig

import helpers
from helpers import REPO, hostile, run_small

PACKAGE = REPO / "pdl_experiments"


# Edits of an honest run's config (helpers.py); the `honest` run is conftest's.
HOSTILE = [
    helpers.numpy_unpickles_the_dataset,
    helpers.torch_load_as_the_model,
    helpers.optimizer_that_is_not_one,
    helpers.optimizer_lookalike,
    helpers.scheduler_with_a_nested_payload,
    helpers.model_with_a_nested_payload,
    helpers.undeclared_argument,
    helpers.positional_arguments,
    helpers.a_technique_that_is_not_one,
]


@pytest.mark.parametrize("edit", HOSTILE, ids=lambda f: f.__name__)
def test_hostile_config_is_refused_by_load_run_and_prune_from_run(tmp_path, honest, edit):
    run_dir, marker = hostile(tmp_path, honest[1], edit)
    with pytest.raises(UntrustedConfig) as refused:
        load_run(run_dir)
    assert "\n" not in str(refused.value) and "refused" in str(refused.value)
    with pytest.raises(UntrustedConfig):
        evaluate_run(run_dir)
    with pytest.raises(UntrustedConfig):
        run_small(
            tmp_path, ["technique=prune", f"prune.from_run={run_dir}", "dataset.subset=300"], name="prune"
        )
    assert not marker.exists()


@pytest.mark.parametrize("what", ["big_config", "alias_bomb", "big_metrics", "big_overrides"])
def test_oversized_or_exploding_files_are_refused(tmp_path, honest, what):
    run_dir = tmp_path / "shared_run"
    shutil.copytree(honest[1], run_dir)
    hydra_dir = run_dir / ".hydra"
    if what == "big_config":
        (hydra_dir / "config.yaml").write_text(
            (hydra_dir / "config.yaml").read_text() + "pad: " + "x" * (2 << 20)
        )
    elif what == "alias_bomb":
        bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        )
        (hydra_dir / "config.yaml").write_text((hydra_dir / "config.yaml").read_text() + bomb)
    elif what == "big_metrics":
        (run_dir / "metrics.json").write_text(json.dumps({f"k{i}": float(i) for i in range(600_000)}))
    else:
        (hydra_dir / "overrides.yaml").write_text("- " + "x" * (2 << 20) + "\n")
    if what in ("big_config", "alias_bomb", "big_metrics"):
        with pytest.raises(UntrustedConfig, match="refused"):
            load_run(run_dir)
    from pdl_experiments.sweeps.summary import report

    if what in ("big_metrics", "big_overrides"):
        with pytest.raises(UntrustedConfig, match="refused"):
            report([run_dir])


def test_honest_run_loads_exactly_as_before(honest):
    metrics, run_dir = honest
    again = evaluate_run(run_dir)
    assert again["test/acc"] == metrics["test/acc"]
    assert load_run(run_dir).metrics == json.loads((run_dir / "metrics.json").read_text())


def test_no_unsafe_loading_anywhere_in_the_package():
    for f in PACKAGE.rglob("*.py"):
        src = f.read_text()
        for call in re.findall(r"torch\.load\([^)]*\)", src):
            assert "weights_only=True" in call, f"{f}: {call}"
        assert not re.search(r"(?<![.\w])(eval|exec)\(", src), f
        assert "pickle.load(" not in src and "pickle.loads(" not in src, f
