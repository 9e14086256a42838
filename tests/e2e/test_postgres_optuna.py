"""Optuna on PostgreSQL (scripts/postgres_local.sh): one study, two workers at once, read back
through Optuna's own client.

`hydra/sweeper=optuna hydra.sweeper.storage=postgresql+psycopg2://...` with two trials at a
time, run by joblib's two processes and by two SLURM jobs of the local cluster (one of them
requeued at its time limit and resumed: still one trial); a worker killed mid-trial leaves
its trial RUNNING, the same command marks it FAIL and runs a new trial in its place.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid

import pytest

from helpers import ENV, PY, SLURM_FIT, SweepInBackground, finished_slurm_job, pdl_run, wait_for_text

optuna = pytest.importorskip("optuna")  # the `hpo` extra
from optuna.trial import TrialState  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]

SEARCH = ["hydra/sweeper=optuna", "hydra.sweeper.n_jobs=2", "optimizer.lr=interval(0.0005,0.01)"]
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
RUN = ["trainer.num_threads=1", "bn.diagnostics=false", "trainer.progress=none"]
SMALL = [*RUN, "dataset.subset=300", "trainer.max_epochs=2"]


@pytest.fixture
def study(postgres_url):
    """(storage, a study name of this test's own); the study is dropped afterwards."""
    name = f"pdl-test-{uuid.uuid4().hex[:8]}"
    yield postgres_url, name
    try:
        optuna.delete_study(study_name=name, storage=postgres_url)
    except KeyError:
        pass


def storage_args(study, sweep) -> list[str]:
    url, name = study
    return [f"hydra.sweeper.storage={url}", f"hydra.sweeper.study_name={name}", f"hydra.sweep.dir={sweep}"]


def job_dirs(sweep) -> dict[int, object]:
    return {int(d.name.split("_", 1)[0]): d for d in sweep.iterdir() if (d / ".hydra").is_dir()}


def assert_six_complete_trials(study, sweep) -> optuna.Study:
    url, name = study
    loaded = optuna.load_study(study_name=name, storage=url)
    trials = loaded.get_trials(deepcopy=False)
    assert [(t.number, t.state) for t in trials] == [(n, TrialState.COMPLETE) for n in range(6)]
    lrs = [t.params["optimizer.lr"] for t in trials]
    assert len(set(lrs)) == 6, lrs  # no trial ran twice under another number
    assert loaded.metric_names == ["val/acc"]  # optuna-dashboard's label for the objective
    jobs = job_dirs(sweep)
    assert sorted(jobs) == list(range(6))
    for t in trials:  # each trial's job ran its parameters and reported its metric
        assert jobs[t.number].name == f"{t.number}_optimizer.lr={t.params['optimizer.lr']}"
        assert t.value == json.loads((jobs[t.number] / "metrics.json").read_text())["val/acc"]
    return loaded


def test_two_joblib_workers_share_a_postgres_study(tmp_path, study):
    sweep = tmp_path / "sweep"
    args = ["-m", *SEARCH, "hydra.sweeper.n_trials=6", *JOBLIB, *SMALL, *storage_args(study, sweep)]
    p = pdl_run(args, tmp_path, timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    loaded = assert_six_complete_trials(study, sweep)
    results = (sweep / "optimization_results.yaml").read_text()
    assert f"best_value: {loaded.best_value}" in results


def test_two_slurm_jobs_share_a_postgres_study_and_a_requeued_trial_stays_one(tmp_path, study, slurm_cluster):
    sweep = tmp_path / "sweep"
    epochs = 10
    run_args = [*RUN, f"trainer.max_epochs={epochs}", "trainer.checkpoint_interval_s=3600"]
    args = ["-m", *SEARCH, "hydra.sweeper.n_trials=6", "hydra/launcher=slurm", *SLURM_FIT, *run_args]
    args += ["trainer.resume=auto", "trainer.progress=plain", *storage_args(study, sweep)]
    with SweepInBackground(args, tmp_path, f"pdl-test-{uuid.uuid4().hex[:8]}") as run:
        submitted = wait_for_text(
            lambda: list(sweep.glob(".submitit/*/*_submission.sh")), "#SBATCH", 120, run.proc
        )
        first = f"{submitted.parent.name}_0"  # trial 0's SLURM job
        wait_for_text(
            lambda: list(sweep.glob(f".submitit/{first}/*_0_log.out")), "train epoch 1/", 300, run.proc
        )
        subprocess.run(["scancel", "--signal=USR2", first], check=True)  # its time limit, as SLURM signals it
        assert run.wait(timeout=600) == 0, run.output()[-3000:]

    loaded = assert_six_complete_trials(study, sweep)
    log = (job_dirs(sweep)[0] / "run.log").read_text()
    assert "SIGUSR2: saved last.pt" in log and "resumed phase 'train'" in log
    assert finished_slurm_job(first)["Restarts"] == "1"
    # The requeued trial reported each epoch once, at its own step, across both attempts.
    assert sorted(loaded.trials[0].intermediate_values) == list(range(1, epochs + 1))


def test_a_killed_worker_trial_is_failed_and_replaced_on_resume(tmp_path, study):
    sweep = tmp_path / "sweep"
    args = ["-m", *SEARCH, "hydra.sweeper.n_trials=2", *JOBLIB, *RUN, "trainer.max_epochs=15"]
    args += storage_args(study, sweep)
    proc = subprocess.Popen(
        [PY, "-m", "pdl_experiments.cli", *args],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        env = wait_for_text(lambda: list(sweep.glob("0_*/env.json")), '"pid"', 240, proc)
        time.sleep(1)  # trial 0 is training in its joblib worker
        os.kill(json.loads(env.read_text())["pid"], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1
    assert err.strip().splitlines()[-1].startswith("pdl-run: error: A worker process managed by the executor")
    url, name = study
    left = optuna.load_study(study_name=name, storage=url).trials
    assert left[0].state == TrialState.RUNNING  # what a killed worker leaves in the study

    p = pdl_run(args, tmp_path, timeout=400)  # the same command
    # The search is complete; the killed jobs' directories stay, listed `incomplete` in the
    # sweep summary, and count as failed jobs of the sweep (exit status 1), as in any sweep.
    assert p.returncode == 1 and "2 of 4 jobs failed" in p.stderr, p.stderr[-3000:]
    rows = (sweep / "summary.csv").read_text()
    assert rows.count(",incomplete,") == 2 and rows.count(",ok,") == 2
    trials = optuna.load_study(study_name=name, storage=url).trials
    failed = [t for t in trials if t.state == TrialState.FAIL]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert trials[0].state == TrialState.FAIL and all(
        t.user_attrs["pdl.stopped"] == "abandoned" for t in failed
    )
    assert len(complete) == 2 and len(trials) == len(failed) + 2
    assert min(t.number for t in complete) > max(t.number for t in failed)  # replaced, numbered after
    lrs = [t.params["optimizer.lr"] for t in trials]
    assert len(set(lrs)) == len(lrs)
