"""More than one process (parallel/): real runs of two gloo processes on the CPU (pdl-run's own
launch and torchrun). The pure pieces: parallel/test_launch.py (the job -> GPU assignment,
what is refused first), parallel/test_distributed.py (SyncBatchNorm), data/test_loaders.py
(the batch sharding)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from helpers import ENV, PY, pdl_run

pytestmark = pytest.mark.e2e

# The default run (technique=bn, the cnn on the digits), small: ~1 s of training per process.
COMMON = ["trainer.max_epochs=5", "trainer.progress=plain", "bn.diagnostics=false", "trainer.num_threads=1"]


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def two_procs(tmp_path_factory):
    """`pdl-run trainer.devices=2`, uninterrupted: (the directory it ran in, its run dir)."""
    cwd = tmp_path_factory.mktemp("two")
    r = pdl_run([*COMMON, "trainer.devices=2", f"hydra.run.dir={cwd / 'run'}"], cwd)
    assert r.returncode == 0, r.stderr
    return cwd, cwd / "run"


def test_two_processes_write_one_run_dir(two_procs):
    cwd, run = two_procs
    assert [p.name for p in cwd.iterdir()] == ["run"]  # nothing written outside the run dir
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    env = json.loads((run / "env.json").read_text())
    assert env["world_size"] == 2 and env["launcher"] == "pdl-run" and env["backend"] == "gloo"
    assert len(torch.load(run / "checkpoints" / "last.pt", weights_only=True)["rng_ranks"]) == 2
    assert metrics_of(run)["test/acc"] >= 0.95


def test_two_processes_match_one_with_the_same_global_batch(two_procs, tmp_path):
    one = pdl_run([*COMMON, f"hydra.run.dir={tmp_path / 'one'}"], tmp_path)
    assert one.returncode == 0, one.stderr
    assert json.loads((tmp_path / "one" / "env.json").read_text())["world_size"] == 1
    assert abs(metrics_of(tmp_path / "one")["test/acc"] - metrics_of(two_procs[1])["test/acc"]) <= 0.01


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_sigterm_to_any_rank_stops_all_and_resumes_exactly(two_procs, tmp_path):
    """SIGTERM reaches rank 1 only: every rank stops at the same step, rank 0 writes last.pt,
    pdl-run exits 143 with no process left; the resumed run ends as the uninterrupted one."""
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [PY, "-m", "pdl_experiments.cli", *COMMON, "trainer.devices=2", f"hydra.run.dir={killed}"],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    workers: list[int] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if "epoch 2/5" in line:
            workers = [
                c for c in _children(proc.pid) if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()
            ]
            os.kill(workers[0], signal.SIGTERM)
            break
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert workers and not any(Path(f"/proc/{w}").exists() for w in workers)
    last = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)
    assert not last["phase_complete"] and 2 <= last["loop"]["epoch"] < 5
    assert not (killed / "metrics.json").exists()

    resumed = pdl_run(
        [*COMMON, "trainer.devices=2", f"trainer.resume={killed}", f"hydra.run.dir={tmp_path / 'resumed'}"],
        tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr
    got, expected = metrics_of(tmp_path / "resumed"), metrics_of(two_procs[1])
    assert got["test/acc"] == expected["test/acc"]
    assert got["val/loss"] == pytest.approx(expected["val/loss"], rel=1e-6)


def test_torchrun_gives_the_same_run_in_one_directory(two_procs, tmp_path):
    """Every rank runs @hydra.main and its own ${now:} directory: rank 0's is the run's, the
    others' disappear; the result is pdl-run trainer.devices=2's, to the last digit."""
    r = subprocess.run(
        [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        + [f"--log-dir={tmp_path / 'torchrun'}"]  # torchrun's own logs: not in /tmp
        + ["-m", "pdl_experiments.cli", *COMMON],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs", "torchrun"]
    (run,) = (tmp_path / "outputs" / "runs" / "bn").glob("*/*")
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    env = json.loads((run / "env.json").read_text())
    assert env["world_size"] == 2 and env["launcher"] == "torchrun"
    assert metrics_of(run)["test/acc"] == metrics_of(two_procs[1])["test/acc"]
    assert metrics_of(run)["val/loss"] == pytest.approx(metrics_of(two_procs[1])["val/loss"], rel=1e-6)


def test_prune_two_processes(tmp_path):
    """A technique whose phases change the architecture: DDP is rebuilt for each."""
    r = pdl_run(
        [
            "technique=prune",
            "trainer.devices=2",
            "dataset.subset=300",
            "trainer.max_epochs=2",
            "prune.level=filter",
            "prune.iterations=2",
            "prune.finetune_epochs=1",
            "prune.latency_repeats=1",
            "trainer.progress=none",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    m = metrics_of(tmp_path / "run")
    assert m["prune/params_after"] < m["prune/params_before"] and m["test/acc"] > 0.3  # chance: 0.1
    assert len(list((tmp_path / "run").glob("events.out.tfevents.*"))) == 1


def test_a_sweep_of_two_process_jobs(tmp_path):
    """Jobs one after the other in pdl-run's process: each forms (and ends) its own group."""
    r = pdl_run(
        ["-m", "trainer.devices=2", "trainer.max_epochs=1", "dataset.subset=300", "bn.diagnostics=false"]
        + ["trainer.progress=none", "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert len(jobs) == 2
    for job in jobs:
        assert json.loads((job / "status.json").read_text())["status"] == "ok"
        assert len(list(job.glob("events.out.tfevents.*"))) == 1
