"""Sweeps that stop when told and resume where they stopped (real pdl-run -m processes)."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from helpers import ENV, PY, pdl_run

pytestmark = pytest.mark.e2e

LRS = ["0.001", "0.002", "0.003", "0.004"]
EPOCHS = 6
COMMON = [
    "model=mlp",
    "bn.diagnostics=false",
    "trainer.progress=plain",
    "trainer.num_threads=1",
    "trainer.checkpoint_interval_s=1",
]


def sweep_args(sweep, *extra, epochs=EPOCHS):
    return [
        "-m",
        f"optimizer.lr={','.join(LRS)}",
        f"trainer.max_epochs={epochs}",
        *COMMON,
        f"hydra.sweep.dir={sweep}",
        *extra,
    ]


def jobs(sweep) -> dict[str, object]:
    """job number -> its directory, for the job directories that exist."""
    return {d.name.split("_", 1)[0]: d for d in sweep.iterdir() if d.is_dir() and d.name[0].isdigit()}


def status(job_dir) -> str:
    return json.loads((job_dir / "status.json").read_text())["status"]


def stop_during(sweep, sig, launcher_args, start_marker: str, epochs_seen: int, epochs=EPOCHS):
    """Start the sweep, send `sig` once `epochs_seen` epoch lines followed `start_marker`."""
    env = {**ENV, "COLUMNS": "250"}
    args = sweep_args(sweep, *launcher_args, epochs=epochs)
    proc = subprocess.Popen(
        [PY, "-m", "pdl_experiments.cli", *args],
        cwd=sweep.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started, seen, lines = False, 0, []
    for line in proc.stdout:
        lines.append(line)
        started = started or start_marker in line
        if started and " epoch " in line and f"/{epochs}" in line:
            seen += 1
            if seen == epochs_seen:
                proc.send_signal(sig)
                break
    t0 = time.monotonic()
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, time.monotonic() - t0, "".join(lines) + out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_one_signal_stops_a_basic_sweep_and_resume_auto_finishes_it(tmp_path, sig):
    sweep = tmp_path / "sweep"
    rc, took, log = stop_during(sweep, sig, [], "#1 : optimizer.lr=0.002", epochs_seen=1)  # job 2, epoch 2
    assert rc == 128 + sig, log[-2000:]
    assert took < 15
    found = jobs(sweep)
    assert sorted(found) == ["0", "1"], log[-2000:]  # jobs 3 and 4 never started
    assert status(found["0"]) == "ok" and status(found["1"]) == "interrupted"
    assert "interrupted (train epoch" in (sweep / "summary.md").read_text()
    if sig == signal.SIGINT:
        return  # the resume below is the same for either signal

    resumed = pdl_run(sweep_args(sweep, "trainer.resume=auto"), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    found = jobs(sweep)
    assert sorted(found) == ["0", "1", "2", "3"] and all(status(d) == "ok" for d in found.values())
    assert len(list(found["0"].glob("events.out.tfevents.*"))) == 1  # job 1 was not rerun
    reference = pdl_run(
        [
            f"optimizer.lr={LRS[1]}",
            f"trainer.max_epochs={EPOCHS}",
            *COMMON,
            f"hydra.run.dir={tmp_path / 'ref'}",
        ],
        tmp_path,
    )
    assert reference.returncode == 0, reference.stderr[-2000:]
    got = json.loads((found["1"] / "metrics.json").read_text())
    expected = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    assert got["test/acc"] == expected["test/acc"]
    assert got["val/loss"] == pytest.approx(expected["val/loss"], rel=1e-6)


def test_one_sigterm_stops_every_joblib_worker_and_resume_auto_finishes(tmp_path):
    sweep = tmp_path / "sweep"
    launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    # Long enough jobs that both workers are mid-training when the signal comes.
    rc, took, log = stop_during(sweep, signal.SIGTERM, launcher, "Launching", epochs_seen=4, epochs=60)
    assert rc == 143, log[-2000:]
    assert took < 15
    found = jobs(sweep)
    assert sorted(found) == ["0", "1"], log[-2000:]  # the pending jobs never started
    assert [status(found[j]) for j in ("0", "1")] == ["interrupted", "interrupted"]

    resumed = pdl_run(sweep_args(sweep, *launcher, "trainer.resume=auto", epochs=60), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    found = jobs(sweep)
    assert sorted(found) == ["0", "1", "2", "3"] and all(status(d) == "ok" for d in found.values())
    reference = pdl_run(
        [f"optimizer.lr={LRS[0]}", "trainer.max_epochs=60", *COMMON, f"hydra.run.dir={tmp_path / 'ref'}"],
        tmp_path,
    )
    assert reference.returncode == 0, reference.stderr[-2000:]
    got = json.loads((found["0"] / "metrics.json").read_text())
    expected = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    assert got["test/acc"] == expected["test/acc"]
