"""More than one process (pdl_experiments/distributed.py): real runs of two gloo processes on
the CPU (pdl-run's own launch and torchrun), and the pure pieces (the job -> GPU assignment,
the batch sharding, the SyncBatchNorm conversion)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from pdl_experiments.config import ConfigError
from pdl_experiments.data import TensorLoader
from pdl_experiments.parallel.distributed import convert_sync_bn
from pdl_experiments.parallel.launch import assign_gpus

from helpers import ENV, PY, pdl_run, run_small

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


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["technique=gan"], "trainer.devices=2: technique=gan steps its generator"),
        (["technique=nas"], "trainer.devices=2: technique=nas steps the architecture"),
        (["trainer.sync_bn=true", "trainer.device=cpu"], "trainer.sync_bn=true needs CUDA"),
        (["trainer.batch_size=1"], "trainer.batch_size=1 is the global batch"),
    ],
    ids=["gan", "nas", "sync_bn_cpu", "batch"],
)
def test_refused_before_any_process_starts(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        run_small(tmp_path, ["trainer.devices=2", *overrides])


def test_devices_range(tmp_path):
    with pytest.raises(ConfigError, match=r"trainer.devices=0 is out of range: expected an integer >= 1"):
        run_small(tmp_path, ["trainer.devices=0"])


@pytest.mark.parametrize(
    "visible,expected",
    [(1, [[0], [0], [0], [0], [0]]), (2, [[0], [1], [0], [1], [0]]), (4, [[0], [1], [2], [3], [0]])],
)
def test_sweep_jobs_get_gpus_round_robin(visible, expected):
    assert [assign_gpus(job, visible) for job in range(5)] == expected


def test_gpu_blocks_for_multi_gpu_jobs():
    assert [assign_gpus(job, 4, devices=2) for job in range(3)] == [[0, 1], [2, 3], [0, 1]]
    assert assign_gpus(3, 0) == []
    with pytest.raises(ValueError):
        assign_gpus(0, 2, devices=4)


@pytest.mark.parametrize("n", [10, 9])
def test_each_rank_takes_its_slice_of_the_same_global_batches(n):
    x, y = torch.arange(n).float().view(n, 1), torch.arange(n)

    def batches(rank, world):
        gen = torch.Generator().manual_seed(3)
        loader = TensorLoader(x, y, 4, shuffle=True, generator=gen, rank=rank, world_size=world)
        return [yb.tolist() for _, yb in loader]

    one = batches(0, 1)
    r0, r1 = batches(0, 2), batches(1, 2)
    assert len(r0) == len(r1)  # the ranks step together
    assert [a + b for a, b in zip(r0, r1, strict=True)] == one[: len(r0)]
    assert len(r0) == (3 if n == 10 else 2)  # a last batch of 1 cannot feed two ranks: dropped


def test_sync_bn_conversion_keeps_parameters_and_state():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    )
    params = list(model.parameters())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    convert_sync_bn(model)
    assert isinstance(model[1], nn.SyncBatchNorm) and isinstance(model[2][1], nn.SyncBatchNorm)
    assert all(a is b for a, b in zip(params, model.parameters(), strict=True))  # optimizers still hold them
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
