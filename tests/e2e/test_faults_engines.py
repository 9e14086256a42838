"""What survives what (docs/faults.md), beyond one machine: PostgreSQL stopped and started
again (scripts/postgres_local.sh) under an Optuna search of two joblib workers, whose storage
is written `postgresql://...` as Optuna's docs write it; the SLURM node of
scripts/slurm_local.sh set DOWN under a running sweep job. Each holds the local engines alone
while it strikes (the `disrupts` marker, conftest.py): no other test's jobs are under it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from helpers import ENV, PY, SLURM_FIT, SweepInBackground, finished_slurm_job, slurm_jobs, wait_for_text

optuna = pytest.importorskip("optuna")  # the `hpo` extra
from optuna.trial import TrialState  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slurm, pytest.mark.disrupts]

RUN = ["trainer.num_threads=1", "bn.diagnostics=false", "trainer.progress=plain"]
PG = Path(__file__).resolve().parents[2] / "scripts" / "postgres_local.sh"


def postgres(command: str) -> None:
    subprocess.run(["bash", str(PG), command], check=True, capture_output=True, timeout=120)


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def found(paths, text: str) -> bool:
    return any(text in p.read_text(errors="replace") for p in paths if p.is_file())


def test_pool_pre_ping_carries_an_optuna_storage_across_a_postgres_restart(postgres_url):
    """What hpo.storage relies on, checked on the real server: without pre-ping, the first call
    after a restart fails on a connection the restart closed; with it, it goes through."""
    from pdl_experiments.sweeps import hpo

    outcome = {}
    for ping in (False, True):
        storage = optuna.storages.RDBStorage(postgres_url, engine_kwargs={"pool_pre_ping": ping})
        name = f"pdl-test-{uuid.uuid4().hex[:8]}"
        study = optuna.create_study(storage=storage, study_name=name)
        study.enqueue_trial({"x": 1.0})
        postgres("stop")
        postgres("start")
        try:
            outcome[ping] = len(study.get_trials(deepcopy=False))
        except Exception as e:
            assert hpo.transient(e), e  # what hpo.retrying waits out
            outcome[ping] = type(e).__name__
        optuna.delete_study(study_name=name, storage=postgres_url)
    assert outcome == {False: "StorageInternalError", True: 1}
    assert hpo.storage(postgres_url).engine.pool._pre_ping  # what the sweeper and the trials use


def test_postgres_restarts_under_a_two_worker_search_no_trial_lost(tmp_path, postgres_url):
    """hydra.sweeper.storage=postgresql://... (psycopg 3); the server stopped while the second
    pair of trials trains, started again once the outage was felt: the search ends with its 4
    trials COMPLETE, each once, each with its job's metric."""
    url = postgres_url.replace("postgresql+psycopg2://", "postgresql://")
    name = f"pdl-test-{uuid.uuid4().hex[:8]}"
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=4"]
    args += ["optimizer.lr=interval(0.0005,0.01)", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    args += [
        *RUN,
        "trainer.max_epochs=25",
        f"hydra.sweeper.storage={url}",
        f"hydra.sweeper.study_name={name}",
    ]
    args += [f"hydra.sweep.dir={sweep}"]
    log = tmp_path / "pdl-run.log"
    logs = lambda: [log, *sweep.glob("*/run.log")]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [PY, "-m", "pdl_experiments.cli", *args],
            cwd=tmp_path,
            env=ENV,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_text(lambda: list(sweep.glob("[23]_*/run.log")), "train epoch 2/", 300, proc)
        postgres("stop")
        try:
            deadline = time.monotonic() + 120
            while not found(logs(), "Optuna storage does not answer") and time.monotonic() < deadline:
                time.sleep(0.3)
        finally:
            postgres("start")
        assert proc.wait(timeout=400) == 0, log.read_text()[-3000:]
        text = "\n".join(p.read_text() for p in logs())
        assert "Optuna storage does not answer" in text, text[-3000:]
        study = optuna.load_study(study_name=name, storage=postgres_url)
        trials = study.get_trials(deepcopy=False)
        assert [(t.number, t.state) for t in trials] == [(n, TrialState.COMPLETE) for n in range(4)]
        assert len({t.params["optimizer.lr"] for t in trials}) == 4  # none ran twice
        jobs = {int(d.name.split("_", 1)[0]): d for d in sweep.iterdir() if (d / ".hydra").is_dir()}
        assert sorted(jobs) == [0, 1, 2, 3]
        for t in trials:
            assert t.value == read(jobs[t.number] / "metrics.json")["val/acc"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        postgres("start")
        try:
            optuna.delete_study(study_name=name, storage=postgres_url)
        except KeyError:
            pass


def test_a_slurm_node_set_down_under_a_sweep_job_requeues_and_resumes_it(tmp_path, slurm_cluster):
    """`scontrol update nodename=<node> state=down` while the sweep's first job trains: SLURM
    ends and requeues the node's jobs; `state=resume` lets them run again; trainer.resume=auto
    continues the first from its last periodic checkpoint; the summary has both jobs."""
    node = socket.gethostname().split(".")[0]
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=slurm", *SLURM_FIT, *RUN, "trainer.max_epochs=30", "trainer.resume=auto"]
    args += ["trainer.checkpoint_interval_s=0", "optimizer.lr=0.001,0.002", f"hydra.sweep.dir={sweep}"]
    name = f"pdl-test-{uuid.uuid4().hex[:8]}"
    down = ["scontrol", "update", f"nodename={node}"]
    try:
        with SweepInBackground(args, tmp_path, name) as run:
            submitted = wait_for_text(
                lambda: list(sweep.glob(".submitit/*/*_submission.sh")), "#SBATCH", 120, run.proc
            )
            first = f"{submitted.parent.name}_0"
            wait_for_text(
                lambda: list(sweep.glob(f".submitit/{first}/*_0_log.out")), "train epoch 3/", 300, run.proc
            )
            subprocess.run([*down, "state=down", "reason=pdl-test"], check=True)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # until SLURM has taken the job off the node
                state = subprocess.run(
                    ["squeue", "-h", "-j", first, "-o", "%T"], capture_output=True, text=True
                )
                if state.stdout.strip() not in ("RUNNING", "COMPLETING"):
                    break
                time.sleep(0.5)
            # The cluster's ReturnToService=2 may have put the node back already, as soon as its
            # slurmd answered (then SLURM refuses RESUME as a transition from IDLE).
            subprocess.run([*down, "state=resume"], capture_output=True)
            assert run.wait(timeout=400) == 0, run.output()[-3000:]
    finally:
        subprocess.run([*down, "state=resume"], capture_output=True)
    jobs = sorted(d for d in sweep.iterdir() if (d / ".hydra").is_dir())
    assert len(jobs) == 2 and all(read(d / "status.json")["status"] == "ok" for d in jobs)
    assert (sweep / "summary.csv").read_text().count(",ok,") == 2
    log = (jobs[0] / "run.log").read_text()
    assert "resumed phase 'train' at epoch" in log, log[-3000:]
    assert int(finished_slurm_job(first)["Restarts"]) >= 1
    assert first in slurm_jobs(sweep)
