"""Faults and bad input: kills, divergence, bad values, bad files, concurrency, disk use."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

from helpers import ENV, PY, REPO, pdl_run, run_small

PACKAGE = REPO / "pdl_experiments"


def one_line_error(p: subprocess.CompletedProcess) -> str:
    assert p.returncode != 0
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("pdl-run: error:") and "Traceback" not in p.stderr
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finished")
    return run_small(tmp, ["trainer.max_epochs=2", "bn.diagnostics=false"])[1]


# ---------------------------------------------------------------- bad input
BAD_VALUES = [
    (["model=nosuch"], "available options in 'model'"),
    (["trainer.nosuch=1"], "trainer.nosuch"),
    (["trainer.max_epochs=abc"], "trainer.max_epochs"),
    (["technique=prune", "prune.ratio=1.5"], "prune.ratio"),
    (["technique=adv", "adv.epsilon=-0.1"], "adv.epsilon"),
    (["trainer.batch_size=0"], "trainer.batch_size"),
    (["trainer.max_epochs=0"], "trainer.max_epochs"),
    (["augmentation.saturation=0.5"], "1-channel"),
    (["dataset=mnist"], "dataset.download=true"),
    (["trainer.resume=/no/such/run"], "does not exist"),
    (["hydra.run.dir=/proc/not_writable"], "hydra.run.dir"),
]


@pytest.mark.parametrize("args,expected", BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_bad_input_is_one_line_and_nonzero(tmp_path, args, expected):
    line = one_line_error(pdl_run(args, tmp_path, timeout=120))
    assert expected in line
    assert not list(tmp_path.rglob("metrics.json"))


def test_full_traceback_on_request(tmp_path):
    p = pdl_run(["trainer.batch_size=0"], tmp_path, env={**ENV, "HYDRA_FULL_ERROR": "1"})
    assert p.returncode != 0 and "Traceback" in p.stderr


def _resume(tmp_path, ckpt: Path, *extra):
    return pdl_run(["trainer.max_epochs=2", f"trainer.resume={ckpt}", *extra], tmp_path, timeout=120)


def test_truncated_checkpoint(tmp_path, finished_run):
    bad = tmp_path / "truncated.pt"
    data = (finished_run / "checkpoints" / "last.pt").read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    assert "truncated, corrupted" in one_line_error(_resume(tmp_path, bad))


def test_corrupted_checkpoint(tmp_path):
    bad = tmp_path / "noise.pt"
    bad.write_bytes(os.urandom(4096))
    assert "cannot read checkpoint" in one_line_error(_resume(tmp_path, bad))


def test_checkpoint_of_another_technique_or_model(tmp_path, finished_run):
    line = one_line_error(_resume(tmp_path, finished_run, "technique=adv"))
    assert "technique=bn" in line
    line = one_line_error(_resume(tmp_path, finished_run, "model=mlp"))
    assert "SmallCNN" in line and "MLP" in line


def test_malicious_checkpoint_is_refused_not_executed(tmp_path):
    from pdl_experiments.training.checkpoint import CheckpointError, load_checkpoint

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused|cannot read"):
        load_checkpoint(path)
    assert not marker.exists()


def test_no_unsafe_loading_anywhere_in_the_package():
    for f in PACKAGE.rglob("*.py"):
        src = f.read_text()
        for call in re.findall(r"torch\.load\([^)]*\)", src):
            assert "weights_only=True" in call, f"{f}: {call}"
        assert not re.search(r"(?<![.\w])(eval|exec)\(", src), f
        assert "pickle.load(" not in src and "pickle.loads(" not in src, f


def test_docs_bind_tensorboard_to_localhost():
    readme = (REPO / "README.md").read_text()
    assert "tensorboard --logdir outputs --host 127.0.0.1" in readme


def test_readme_lists_what_goes_wrong():
    readme = (REPO / "README.md").read_text()
    assert "## When things go wrong" in readme


# ---------------------------------------------------------------- kills
def test_atomic_save_never_leaves_half_a_file(tmp_path):
    from pdl_experiments.training.checkpoint import save_atomic

    target = tmp_path / "last.pt"
    save_atomic({"format": 1, "x": torch.zeros(3)}, target)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_atomic({"format": 1, "x": Boom()}, target)
    assert torch.load(target, weights_only=True)["x"].shape == (3,)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


# ---------------------------------------------------------------- divergence in a sweep
def test_diverging_job_fails_alone_in_a_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    p = pdl_run(
        [
            "-m",
            "optimizer=sgd",
            "optimizer.lr=0.05,1e9",
            "bn.enabled=false",
            "bn.diagnostics=false",
            "trainer.max_epochs=2",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert p.returncode != 0
    rows = (sweep / "summary.csv").read_text().splitlines()
    assert len(rows) == 3
    assert ",ok," in rows[1]
    assert "failed: non-finite loss" in rows[2] and "epoch 1, step" in rows[2]
    ok_job = next(d for d in sweep.iterdir() if d.name.startswith("0_"))
    assert json.loads((ok_job / "metrics.json").read_text())["test/acc"] > 0.2  # chance: 0.1


# ---------------------------------------------------------------- concurrency and disk
def test_two_runs_started_together_get_their_own_dirs(tmp_path):
    args = [PY, "-m", "pdl_experiments.cli", "trainer.max_epochs=1", "bn.diagnostics=false"]
    procs = [
        subprocess.Popen(
            args, cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=240) == 0, p.stderr.read()
    runs = sorted(tmp_path.glob("outputs/runs/bn/*/*"))
    assert len(runs) == 2 and runs[0] != runs[1]
    for r in runs:
        assert (r / "metrics.json").is_file() and len(list(r.glob("events.out.tfevents.*"))) == 1


def test_checkpoints_keep_last_and_best_only_by_default(tmp_path):
    _, run_dir = run_small(tmp_path, ["trainer.max_epochs=3", "bn.diagnostics=false"], "default")
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    _, run_dir = run_small(
        tmp_path, ["trainer.max_epochs=4", "trainer.keep=2", "bn.diagnostics=false"], "keep2"
    )
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "best.pt",
        "last.pt",
        "train_epoch0003.pt",
        "train_epoch0004.pt",
    ]
