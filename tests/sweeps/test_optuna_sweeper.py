"""The Optuna sweeper (`hydra/sweeper=optuna`, hydra_plugins/pdl_optuna_sweeper; a pdl-run
trial's side is sweeps/hpo.py), in-process: plugin discovery, the search space parsed from
overrides, a sweep through Hydra's test runner, job returns as trial states, override lines.

The first cases are Hydra's own Optuna sweeper tests (plugins/hydra_optuna_sweeper/tests/
test_optuna_sweeper_plugin.py), ported to this sweeper and to the distribution classes of
the current Optuna (FloatDistribution / IntDistribution). Where this sweeper means to differ,
the case says so: `range` leaves its stop value out, as Hydra's range does everywhere else;
a sweep with nothing to search is refused. The cases that start processes (the sphere app,
pdl-run): e2e/test_optuna_sweeper.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("optuna")  # the `hpo` extra

from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from helpers import optuna_study, trial_states


def test_discovery() -> None:
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    from hydra_plugins.pdl_optuna_sweeper.optuna_sweeper import OptunaSweeper

    assert OptunaSweeper.__name__ in [x.__name__ for x in Plugins.instance().discover(Sweeper)]


def _check_distribution(expected: BaseDistribution, actual: BaseDistribution) -> None:
    if not isinstance(expected, CategoricalDistribution):
        assert expected == actual
        return
    assert isinstance(actual, CategoricalDistribution)
    assert set(expected.choices) == set(actual.choices)  # shuffle() changes the order


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("key=choice(1,2)", CategoricalDistribution([1, 2])),
        ("key=choice(true, false)", CategoricalDistribution([True, False])),
        ("key=choice('hello', 'world')", CategoricalDistribution(["hello", "world"])),
        ("key=shuffle(range(1,3))", CategoricalDistribution((1, 2))),
        # Hydra's upstream case: IntUniformDistribution(1, 3); here the stop value is out.
        ("key=range(1,3)", IntDistribution(1, 2)),
        ("key=range(1, 10, step=3)", IntDistribution(1, 7, step=3)),
        ("key=interval(1, 5)", FloatDistribution(1, 5)),
        ("key=int(interval(1, 5))", IntDistribution(1, 5)),
        ("key=tag(log, interval(1, 5))", FloatDistribution(1, 5, log=True)),
        ("key=tag(log, int(interval(1, 5)))", IntDistribution(1, 5, log=True)),
        # upstream: DiscreteUniformDistribution(0.5, 5.5, 1)
        ("key=range(0.5, 5.5, step=1)", FloatDistribution(0.5, 4.5, step=1)),
    ],
)
def test_distribution_parsing(line: str, expected: BaseDistribution) -> None:
    from hydra_plugins.pdl_optuna_sweeper._space import distribution

    actual = distribution(OverridesParser.create().parse_override(line))
    assert isinstance(actual, BaseDistribution)
    _check_distribution(expected, actual)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["key=choice(1,2)"], ({"key": CategoricalDistribution([1, 2])}, {})),
        (["key=5"], ({}, {"key": "5"})),
        (["key1=choice(1,2)", "key2=5"], ({"key1": CategoricalDistribution([1, 2])}, {"key2": "5"})),
        (
            ["key1=choice(1,2)", "key2=5", "key3=range(1,3)"],
            ({"key1": CategoricalDistribution([1, 2]), "key3": IntDistribution(1, 2)}, {"key2": "5"}),
        ),
        # a fixed value on the command line wins over the search of hydra.sweeper.params
        (["key1=choice(1,2)", "key1=5"], ({}, {"key1": "5"})),
    ],
)
def test_create_params_from_overrides(lines, expected) -> None:
    from hydra_plugins.pdl_optuna_sweeper._space import search_space

    space, fixed = search_space(lines)
    assert fixed == expected[1]
    assert space.keys() == expected[0].keys()
    for key, d in expected[0].items():
        _check_distribution(d, space[key])


def test_launch_jobs(hydra_sweep_runner, tmp_path: Path) -> None:
    sweep = hydra_sweep_runner(
        calling_file=None,
        calling_module="hydra.test_utils.a_module",
        config_path="configs",
        config_name="compose.yaml",
        task_function=None,
        overrides=[
            "hydra/sweeper=optuna",
            "hydra/launcher=basic",
            "hydra.sweeper.n_trials=8",
            "hydra.sweeper.n_jobs=3",
            # upstream searches nothing; this sweeper refuses an empty search space
            "foo=choice(10, 20)",
        ],
        temp_dir=tmp_path / "sweep",
    )
    with sweep:  # (its exit removes the sweep dir)
        assert sweep.returns is None
        study = optuna_study(tmp_path / "sweep")
        assert trial_states(study) == {"COMPLETE": 8}
        assert {t.value for t in study.trials} == {100.0}  # what SweepTaskFunction returns


def test_job_returns_become_trial_states() -> None:
    from hydra.core.utils import JobReturn, JobStatus

    from hydra_plugins.pdl_optuna_sweeper._impl import _outcome, default_direction

    def ret(value, status=JobStatus.COMPLETED):
        r = JobReturn()
        r.status, r.return_value = status, value
        return r

    assert _outcome(ret({"val/acc": 0.9, "test/acc": 0.8}), "val/acc").value == 0.9
    assert _outcome(ret(2.5), "val/acc").value == 2.5
    assert _outcome(ret({"status": "pruned"}), "val/acc").state == TrialState.PRUNED
    failed = _outcome(ret({"status": "failed", "error": "non-finite loss"}), "val/acc")
    assert failed.state == TrialState.FAIL and failed.reason == "non-finite loss" and failed.stopped is None
    stopped = _outcome(ret({"status": "interrupted"}), "val/acc")
    assert stopped.state == TrialState.FAIL and stopped.stopped == "interrupted"
    assert _outcome(ret({"val/acc": float("nan")}), "val/acc").state == TrialState.FAIL
    assert _outcome(ret(RuntimeError("boom"), JobStatus.FAILED), "val/acc").reason == "RuntimeError: boom"
    missing = _outcome(ret({"val/loss": 1.0}), "val/acc")
    assert missing.state == TrialState.FAIL and "not among the job's metrics (val/loss)" in missing.reason
    assert [default_direction(m) for m in ("val/acc", "val/loss", "gan/fid", "val/token_acc")] == [
        "maximize",
        "minimize",
        "minimize",
        "maximize",
    ]


def test_override_lines_read_back_as_the_same_values() -> None:
    from hydra_plugins.pdl_optuna_sweeper._space import override_line

    parser = OverridesParser.create()
    for value in [
        "mlp",
        "a b",
        "it's",
        "end\\",
        "1",
        "true",
        "c,d",
        "sqlite:////tmp/a b/o.db",
        1e-05,
        3,
        True,
    ]:
        assert parser.parse_override(override_line("k", value)).value() == value, value
    assert override_line("k", None) == "k=null"
