"""The Optuna sweeper (`hydra/sweeper=optuna`, hydra_plugins/pdl_optuna_sweeper) in processes.

First the cases of Hydra's own Optuna sweeper tests (plugins/hydra_optuna_sweeper/tests/
test_optuna_sweeper_plugin.py) that run its example app (optuna_app/sphere.py), ported to
this sweeper: a sweep with nothing to search is refused. Then pdl-run itself on the bundled
digits: a stored study resumed, the test split refused as an objective, pruning through the
trainer, a diverging trial, a trial left running by a killed sweep. The in-process cases
(the search space, trial states): sweeps/test_optuna_sweeper.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")  # the `hpo` extra

from omegaconf import OmegaConf  # noqa: E402
from optuna.distributions import (  # noqa: E402
    FloatDistribution,
)
from optuna.trial import TrialState  # noqa: E402

from helpers import ENV, PY, REPO, optuna_study, pdl_run, trial_states  # noqa: E402

pytestmark = pytest.mark.e2e

SPHERE = REPO / "tests" / "optuna_app" / "sphere.py"
# pdl-run jobs small enough for CI: 300 training digits, no BN diagnostics, no progress bars.
SMALL = ["dataset.subset=300", "bn.diagnostics=false", "trainer.progress=none"]


def _sphere(args: list[str], tmp_path: Path, warnings_are_errors: bool = True):
    import subprocess

    cmd = [PY, *(["-Werror"] if warnings_are_errors else []), str(SPHERE), "--multirun", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)


# ======================================================================== ported cases


def test_empty_search_space_is_refused(tmp_path: Path) -> None:
    p = _sphere(["hydra.sweeper.params=null", f"hydra.sweep.dir={tmp_path / 's'}"], tmp_path)
    assert p.returncode != 0 and "nothing to search" in p.stderr


@pytest.mark.parametrize("with_commandline", [True, False])
def test_optuna_example(with_commandline: bool, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'test.db'}"
    study_name = "test-optuna-example"
    args = [
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "hydra.job.chdir=True",
        "hydra.sweeper.n_trials=20",
        "hydra.sweeper.n_jobs=1",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweeper.study_name={study_name}",
        "hydra/sweeper/sampler=tpe",
        "hydra.sweeper.sampler.seed=123",
        "~z",
    ]
    if with_commandline:
        args += ["x=choice(0, 1, 2)", "y=0"]  # y: a fixed parameter
    p = _sphere(args, tmp_path)
    assert p.returncode == 0, p.stderr
    returns = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    study = optuna.load_study(storage=storage, study_name=study_name)
    best_trial = study.best_trial
    assert returns.name == "optuna"
    assert returns["best_params"]["x"] == best_trial.params["x"]
    if with_commandline:
        assert "y" not in returns["best_params"]
        assert "y" not in best_trial.params
    else:
        assert returns["best_params"]["y"] == best_trial.params["y"]
    assert returns["best_value"] == best_trial.value
    assert len(study.trials) == 20
    # Upstream's bound on TPE's search (the 95th percentile over 1000 seeds).
    assert returns["best_value"] <= 2.27
    for plot in ("optimization_history", "param_importances", "parallel_coordinate"):
        assert (tmp_path / "sweep" / f"{plot}.png").stat().st_size > 1000


@pytest.mark.parametrize("num_trials", [10, 1])
def test_optuna_grid_sampler(tmp_path: Path, num_trials: int) -> None:
    storage = f"sqlite:///{tmp_path / 'test.db'}"
    args = [
        "--config-name=test_grid",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "hydra.job.chdir=False",
        f"hydra.sweeper.n_trials={num_trials}",
        "hydra.sweeper.n_jobs=1",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=test-grid-sampler",
    ]
    p = _sphere(args, tmp_path)
    assert p.returncode == 0, p.stderr
    returns = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    bv, bx, by, bz = (returns["best_value"], *(returns["best_params"][k] for k in "xyz"))
    study = optuna.load_study(storage=storage, study_name="test-grid-sampler")
    if num_trials >= 8:  # the whole grid (2 x 2 x 2), nothing twice
        assert len(study.trials) == 8
        assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 8
        assert bv == 1 and abs(bx) == 1 and by == 0
    else:
        assert len(study.trials) == 1
        assert bx in (-1, 1) and by in (-1, 0)
    assert bz in ("foo", "bar")


@pytest.mark.parametrize("max_failure_rate", [0.5, 1.0])
def test_failure_rate(max_failure_rate: float, tmp_path: Path) -> None:
    args = [
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "hydra.job.chdir=True",
        "hydra.sweeper.n_trials=20",
        "hydra.sweeper.n_jobs=2",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=123",
        f"hydra.sweeper.max_failure_rate={max_failure_rate}",
        "error=true",
    ]
    p = _sphere(args, tmp_path)
    error_string = "RuntimeError: cfg.error is True"
    study = optuna_study(tmp_path / "sweep")
    if max_failure_rate < 1.0:
        assert p.returncode != 0 and error_string in p.stderr
        assert trial_states(study) == {"FAIL": 2}  # stopped after the first batch
    else:
        assert error_string not in p.stderr
        assert trial_states(study) == {"FAIL": 20}  # every trial tried, none stopped the search
        assert not (tmp_path / "sweep" / "optimization_results.yaml").exists()
    assert all(t.user_attrs["error"] == error_string for t in study.trials)


# ======================================================================== pdl-run
def _metrics(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]


def test_search_resumes_its_stored_study(tmp_path: Path) -> None:
    sweep = tmp_path / "D"
    cmd = [
        "-m",
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=3",
        "optimizer.lr=interval(0.0005,0.01)",
        "trainer.max_epochs=2",
        *SMALL,
        f"hydra.sweep.dir={sweep}",
    ]
    p = pdl_run(cmd, tmp_path, timeout=400)
    assert p.returncode == 0, p.stderr
    study = optuna_study(sweep)
    assert trial_states(study) == {"COMPLETE": 3}
    jobs = _metrics(sweep)
    assert len(jobs) == 3
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert study.best_value == max(m["val/acc"] for m in jobs) == results.best_value
    assert results.name == "optuna" and set(results.best_params) == {"optimizer.lr"}
    assert (sweep / "summary.csv").read_text().count(",ok,") == 3

    # The same command, more trials wanted: only the missing ones run, in new job dirs.
    p = pdl_run([a.replace("n_trials=3", "n_trials=5") for a in cmd], tmp_path, timeout=400)
    assert p.returncode == 0, p.stderr
    study = optuna_study(sweep)
    assert trial_states(study) == {"COMPLETE": 5}
    assert sorted(d.name.split("_", 1)[0] for d in sweep.iterdir() if (d / ".hydra").is_dir()) == list(
        "01234"
    )
    jobs = _metrics(sweep)
    assert study.best_value == max(m["val/acc"] for m in jobs)
    assert OmegaConf.load(sweep / "optimization_results.yaml").best_value == study.best_value
    lrs = [t.params["optimizer.lr"] for t in study.trials]
    assert len(set(lrs)) == 5  # the resumed sampler did not repeat the first trials


def test_a_test_metric_is_refused_before_any_trial(tmp_path: Path) -> None:
    sweep = tmp_path / "D"
    args = ["-m", "hydra/sweeper=optuna", "optimizer.lr=interval(0.0005,0.01)", f"hydra.sweep.dir={sweep}"]
    p = pdl_run([*args, "hydra.sweeper.metric=test/acc"], tmp_path, timeout=120)
    assert p.returncode == 1
    err = p.stderr.strip().splitlines()
    assert err[-1].startswith("pdl-run: error: hydra.sweeper.metric=test/acc would select on the test split")
    assert "allow_test_metric=true" in err[-1]
    assert not (sweep / "optuna.db").exists() and not list(sweep.glob("*/metrics.json"))


def test_pruned_trials_stop_through_the_trainer(tmp_path: Path) -> None:
    sweep = tmp_path / "D"
    p = pdl_run(
        [
            "-m",
            "hydra/sweeper=optuna",
            "hydra.sweeper.n_trials=5",
            "hydra.sweeper.pruner=median",
            "hydra.sweeper.pruner_startup_trials=2",
            "optimizer.lr=tag(log, interval(1e-4, 1.0))",
            "trainer.max_epochs=4",
            *SMALL,
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
        timeout=400,
    )
    assert p.returncode == 0, p.stderr
    study = optuna_study(sweep)
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert pruned and len(pruned) + trial_states(study).get("COMPLETE", 0) == 5
    # Every trial reported val/acc after each epoch it ran.
    for t in study.trials:
        assert t.intermediate_values and max(t.intermediate_values) == (
            4 if t.state == TrialState.COMPLETE else t.last_step
        )
    for t in pruned:
        job = next(sweep.glob(f"{t.number}_*"))
        status = json.loads((job / "status.json").read_text())
        assert status["status"] == "pruned" and status["epoch"] == t.last_step <= 4
        assert (job / "checkpoints" / "last.pt").is_file() and not (job / "metrics.json").exists()
    rows = (sweep / "summary.csv").read_text()
    assert rows.count(",pruned (train epoch ") == len(pruned)
    assert _metrics(sweep) and study.best_value == max(m["val/acc"] for m in _metrics(sweep))


def test_a_diverging_trial_fails_and_the_search_goes_on(tmp_path: Path) -> None:
    sweep = tmp_path / "D"
    p = pdl_run(
        [
            "-m",
            "hydra/sweeper=optuna",
            "hydra/sweeper/sampler=grid",
            "optimizer=sgd",
            "optimizer.lr=choice(0.05, 1e9)",
            "bn.enabled=false",
            "trainer.max_epochs=1",
            *SMALL,
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
        timeout=300,
    )
    assert p.returncode == 1  # as in any sweep: a failed job is reported at the end
    assert "1 of 2 jobs failed" in p.stderr
    study = optuna_study(sweep)
    assert trial_states(study) == {"COMPLETE": 1, "FAIL": 1}
    failed = study.get_trials(states=(TrialState.FAIL,))[0]
    assert failed.params == {"optimizer.lr": 1e9} and "non-finite" in failed.user_attrs["error"]
    assert OmegaConf.load(sweep / "optimization_results.yaml").best_params["optimizer.lr"] == 0.05
    assert "failed: non-finite" in (sweep / "summary.csv").read_text()


def test_a_trial_left_running_is_failed_and_not_counted(tmp_path: Path) -> None:
    sweep = tmp_path / "D"
    sweep.mkdir()
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    # What a sweep killed mid-trial (SIGKILL, power loss) leaves: a RUNNING trial 0.
    left = optuna.create_study(storage=storage, study_name="D", direction="maximize")
    left.ask({"optimizer.lr": FloatDistribution(0.0005, 0.01)})
    p = pdl_run(
        [
            "-m",
            "hydra/sweeper=optuna",
            "hydra.sweeper.n_trials=1",
            "optimizer.lr=interval(0.0005,0.01)",
            "trainer.max_epochs=1",
            *SMALL,
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    t0, t1 = optuna_study(sweep, "D").trials
    assert t0.state == TrialState.FAIL and t0.user_attrs["pdl.stopped"] == "abandoned"
    assert t1.state == TrialState.COMPLETE
    assert [d.name.split("_", 1)[0] for d in sweep.iterdir() if (d / ".hydra").is_dir()] == ["1"]


def test_a_metric_no_job_reports_stops_the_search(tmp_path: Path) -> None:
    sweep = tmp_path / "D"
    p = pdl_run(
        [
            "-m",
            "hydra/sweeper=optuna",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.metric=val/nosuch",
            "optimizer.lr=interval(0.0005,0.01)",
            "trainer.max_epochs=1",
            *SMALL,
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
        timeout=300,
    )
    assert p.returncode == 1
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("pdl-run: error: hydra.sweeper.metric=val/nosuch is not among the job's metrics (")
    assert "val/acc" in last
    assert trial_states(optuna_study(sweep)) == {"FAIL": 1}  # one trial told, none more started


def test_a_stopped_search_resumes_with_the_same_command(tmp_path: Path) -> None:
    import signal
    import subprocess

    sweep = tmp_path / "D"
    args = [
        "-m",
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=3",
        "optimizer.lr=interval(0.0005,0.01)",
        "trainer.max_epochs=4",
        "dataset.subset=300",
        "bn.diagnostics=false",
        "trainer.progress=plain",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = subprocess.Popen(
        [PY, "-m", "pdl_experiments.cli", *args],
        cwd=tmp_path,
        env={**ENV, "COLUMNS": "250"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    started = False
    for line in proc.stdout:  # SIGTERM in trial 1's first epoch
        started = started or "#1 : optimizer.lr=" in line
        if started and " epoch " in line and "/4" in line:
            proc.send_signal(signal.SIGTERM)
            break
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    study = optuna_study(sweep)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert study.trials[1].user_attrs["pdl.stopped"] == "interrupted"
    assert "interrupted (train epoch" in (sweep / "summary.md").read_text()

    p = pdl_run(args, tmp_path, timeout=400)  # the same command: two more trials, new job dirs
    assert p.returncode == 0, p.stderr
    study = optuna_study(sweep)
    assert trial_states(study) == {"COMPLETE": 3, "FAIL": 1}
    assert sorted(d.name.split("_", 1)[0] for d in sweep.iterdir() if (d / ".hydra").is_dir()) == list("0123")
