"""pdl-run stopped by a signal (exit 128 + signum) resumes to the uninterrupted run's metrics;
a bad checkpoint to resume from is refused in one line. In-process, every technique killed in
each of its phases: run/test_context.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from helpers import ENV, PY, one_line_error, pdl_run, run_small

pytestmark = pytest.mark.e2e
SIGNALS = (signal.SIGTERM, signal.SIGINT)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finished")
    return run_small(tmp, ["trainer.max_epochs=2", "bn.diagnostics=false"])[1]


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


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_pdl_run_stops_on_a_signal_with_its_exit_code_and_resumes(tmp_path, sig):
    """The command line: a real pdl-run process, one signal, exit 128 + signum, resumable."""
    common = ["trainer.max_epochs=12", "trainer.progress=plain", "bn.diagnostics=false"]
    proc = subprocess.Popen(
        [PY, "-m", "pdl_experiments.cli", *common, f"hydra.run.dir={tmp_path / 'killed'}"],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in proc.stdout:  # wait until training is under way
        if "epoch 3/12" in line:
            proc.send_signal(sig)
            break
    proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig
    ckpt = torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=True)
    assert not ckpt["phase_complete"] and 3 <= ckpt["loop"]["epoch"] < 12
    resumed = pdl_run(
        common + [f"trainer.resume={tmp_path / 'killed'}", f"hydra.run.dir={tmp_path / 'resumed'}"], tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr
    clean = pdl_run(common + [f"hydra.run.dir={tmp_path / 'clean'}"], tmp_path)
    assert clean.returncode == 0, clean.stderr
    read = lambda d: json.loads((tmp_path / d / "metrics.json").read_text())
    assert read("resumed")["test/acc"] == read("clean")["test/acc"]
    assert read("resumed")["val/loss"] == pytest.approx(read("clean")["val/loss"], rel=1e-6)
