"""The SLURM presets on a real SLURM: the one-node cluster of scripts/slurm_local.sh (Debian's
slurm-wlm and munge), through hydra-submitit-launcher, as a user runs them.

A sweep of SLURM jobs; a job at its time limit: SLURM's signal (SIGUSR2, `#SBATCH
--signal=USR2@<signal_delay_s>`), last.pt written at that step, the job requeued by submitit,
resumed from that step, ending as an uninterrupted run does; the same for one run on two
SLURM tasks (slurm_ddp: one run directory, world_size 2, every task signalled), ending as
`trainer.devices=2` does; a job cancelled with scancel, interrupted and continued with
trainer.resume=auto.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import uuid

import pytest

from helpers import (
    ENV,
    PY,
    SLURM_FIT,
    SweepInBackground,
    finished_slurm_job,
    pdl_run,
    slurm_jobs,
    wait_for_text,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]

SMALL = [
    "trainer.num_threads=1",
    "bn.diagnostics=false",
    "trainer.progress=none",
    "dataset.subset=300",
    "trainer.max_epochs=2",
]
# One run on two SLURM tasks of the node, one CPU each.
DDP = [
    "hydra/launcher=slurm_ddp",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.tasks_per_node=2",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.timeout_min=10",
]
LAUNCHERS = {"slurm": ["hydra/launcher=slurm", *SLURM_FIT], "slurm_ddp": DDP}
# Runs long enough (~10-30 s of training on the digits) to be signalled mid-training; no
# periodic checkpoint (checkpoint_interval_s): the only last.pt is the one written at the signal.
LONG = [
    "trainer.max_epochs=30",
    "trainer.num_threads=1",
    "bn.diagnostics=false",
    "trainer.checkpoint_interval_s=3600",
]
SAVED = re.compile(r"(SIG\w+): saved last\.pt in phase '(\w+)' at epoch (\d+), batch (\d+), step (\d+)")
RESUMED = re.compile(r"resumed phase '(\w+)' at epoch (\d+), batch (\d+), step (\d+)")


def job_dirs(sweep) -> list:
    return sorted((d for d in sweep.iterdir() if (d / ".hydra").is_dir()), key=lambda d: d.name)


def read(path) -> dict:
    return json.loads(path.read_text())


def task_logs(sweep, job_id: str):
    """Rank 0's stdout of a SLURM job (submitit's <job>_0_log.out)."""
    return lambda: sorted((sweep / ".submitit" / job_id).glob("*_0_log.out"))


def first_job_training(sweep, run: SweepInBackground, n_jobs: int = 1) -> str:
    """The SLURM job id of the sweep's job 0, once it logged the end of its second training
    epoch (the run's signal handlers are in place by then)."""
    submitted = wait_for_text(
        lambda: list(sweep.glob(".submitit/*/*_submission.sh")), "#SBATCH", 120, run.proc
    )
    job = f"{submitted.parent.name}_0" if n_jobs > 1 else submitted.parent.name  # an array, or one job
    wait_for_text(task_logs(sweep, job), "train epoch 2/", 300, run.proc)
    return job


@pytest.fixture
def reference(tmp_path):
    """start(overrides): the same run, uninterrupted, on this machine (no SLURM), started in
    the background while the SLURM jobs run; its metrics(): its metrics.json, once written."""
    started = []

    class Reference:
        def __init__(self, overrides: list[str]):
            self.dir = tmp_path / "reference"
            args = [*overrides, "trainer.progress=none", f"hydra.run.dir={self.dir}"]
            self.proc = subprocess.Popen(
                [PY, "-m", "pdl_experiments.cli", *args],
                cwd=tmp_path,
                env=ENV,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            started.append(self.proc)

        def metrics(self) -> dict:
            _, err = self.proc.communicate(timeout=300)
            assert self.proc.returncode == 0, err[-2000:]
            return read(self.dir / "metrics.json")

    yield Reference
    for proc in started:  # a test that failed before it read them
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_sweep_runs_as_slurm_jobs(tmp_path, slurm_cluster):
    sweep = tmp_path / "sweep"
    name = f"pdl-test-{uuid.uuid4().hex[:8]}"
    args = ["-m", "hydra/launcher=slurm", *SLURM_FIT, "optimizer.lr=0.001,0.002", *SMALL]
    p = pdl_run([*args, f"hydra.sweep.dir={sweep}", f"hydra.launcher.name={name}"], tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert [d.name for d in jobs] == ["0_optimizer.lr=0.001", "1_optimizer.lr=0.002"]
    assert all(read(d / "status.json")["status"] == "ok" for d in jobs)
    assert read(jobs[0] / "metrics.json")["test/acc"] != read(jobs[1] / "metrics.json")["test/acc"]
    # Each job was a task of one SLURM array job, run and completed by SLURM.
    ids = slurm_jobs(sweep)
    assert len(ids) == 2 and len({i.split("_")[0] for i in ids}) == 1, ids
    for job_id in ids:
        info = finished_slurm_job(job_id)
        assert (info["JobState"], info["JobName"], info["Partition"]) == ("COMPLETED", name, "local")
    assert (sweep / "summary.csv").read_text().count(",ok,") == 2


@pytest.mark.parametrize("launcher", ["slurm", "slurm_ddp"])
def test_a_job_at_its_time_limit_saves_then_is_requeued_and_resumes(
    tmp_path, slurm_cluster, reference, launcher
):
    """slurm_ddp: one run on two SLURM tasks (one run directory, world_size 2), every task
    signalled; it ends as `trainer.devices=2` does on this machine."""
    ddp = launcher == "slurm_ddp"
    sweep = tmp_path / "sweep"
    uninterrupted = reference([*LONG, *(["trainer.devices=2"] if ddp else [])])
    args = ["-m", *LAUNCHERS[launcher], *LONG, "trainer.progress=plain", "trainer.resume=auto"]
    name = f"pdl-test-{uuid.uuid4().hex[:8]}"
    with SweepInBackground([*args, f"hydra.sweep.dir={sweep}"], tmp_path, name) as run:
        job_id = first_job_training(sweep, run)
        # What SLURM does `signal_delay_s` before the time limit (`#SBATCH --signal=USR2@...`):
        # SIGUSR2 to the job's tasks. Sent now rather than waited for: SLURM checks limits
        # every 30 s or so (the real time limit: docs/scaling.md "Time limits and requeues", by hand).
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        assert run.wait(timeout=400) == 0, run.output()[-3000:]

    (job,) = job_dirs(sweep)  # one run directory (under DDP: for both processes)
    log = (job / "run.log").read_text()
    saved, resumed = SAVED.findall(log), RESUMED.findall(log)
    assert len(saved) == 1 and len(resumed) == 1, log[-3000:]
    signame, *where = saved[0]
    assert signame == "SIGUSR2" and tuple(where) == resumed[0]  # resumed at the step of the signal
    phase, epochs, batches, step = where[0], *map(int, where[1:])
    per_epoch = math.ceil(int(re.search(r"train=(\d+)", log)[1]) / 64)  # trainer.batch_size: 64
    assert phase == "train" and epochs >= 2 and step == epochs * per_epoch + batches
    assert log.index("saved last.pt") < log.index("resumed phase")
    assert read(job / "status.json") == {"status": "ok"}
    info = finished_slurm_job(job_id)  # the same SLURM job, requeued once by submitit, then completed
    assert (info["JobState"], info["Restarts"], info["NumTasks"]) == ("COMPLETED", "1", "2" if ddp else "1")
    env = read(job / "env.json")
    assert (env["world_size"], env["launcher"]) == ((2, "slurm") if ddp else (1, None))

    got, expected = read(job / "metrics.json"), uninterrupted.metrics()
    assert got["test/acc"] == expected["test/acc"]
    for key in ("val/loss", "test/loss", "final/train_acc"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key


def test_scancel_interrupts_a_job_and_resume_auto_finishes_the_sweep(tmp_path, slurm_cluster, reference):
    sweep = tmp_path / "sweep"
    uninterrupted = reference([*LONG, "optimizer.lr=0.001"])
    args = ["-m", "hydra/launcher=slurm", *SLURM_FIT, *LONG, "optimizer.lr=0.001,0.002"]
    args += ["trainer.progress=plain", f"hydra.sweep.dir={sweep}"]
    with SweepInBackground(args, tmp_path, f"pdl-test-{uuid.uuid4().hex[:8]}") as run:
        job_id = first_job_training(sweep, run, n_jobs=2)
        subprocess.run(["scancel", job_id], check=True)  # SIGTERM, then SIGKILL after KillWait
        rc = run.wait(timeout=200)
    # As any sweep stopped by a signal: the summary is written and pdl-run exits 128 + SIGTERM.
    assert rc == 143, run.output()[-3000:]
    first = job_dirs(sweep)[0]
    status = read(first / "status.json")
    assert (status["status"], status["signal"]) == ("interrupted", "SIGTERM"), status
    assert "interrupted (train epoch" in (sweep / "summary.md").read_text()
    assert (first / "checkpoints" / "last.pt").is_file() and not (first / "metrics.json").exists()
    assert finished_slurm_job(job_id)["JobState"] == "CANCELLED"

    p = pdl_run([*args, "trainer.resume=auto"], tmp_path, timeout=400)  # the same command, resumed
    assert p.returncode == 0, p.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert len(jobs) == 2 and all(read(d / "status.json")["status"] == "ok" for d in jobs)
    log = (first / "run.log").read_text()
    (saved,), (resumed,) = SAVED.findall(log), RESUMED.findall(log)
    assert saved[0] == "SIGTERM" and saved[1:] == resumed
    got, expected = read(first / "metrics.json"), uninterrupted.metrics()
    assert got["test/acc"] == expected["test/acc"]
    assert got["val/loss"] == pytest.approx(expected["val/loss"], abs=1e-6)
