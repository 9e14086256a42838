"""What survives what (docs/faults.md), around one machine: each fault injected for real into a
running pdl-run. The MLflow tracking server is killed (SIGKILL) three epochs into a run, and
comes back or does not; a tracking URI that nothing answers; the disk of the checkpoints
(a real tmpfs, mounted here) fills during a save; last.pt truncated before a resume; the run
itself killed with SIGKILL. The engines beyond the machine (PostgreSQL, SLURM):
test_faults_engines.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from helpers import ENV, PY, MlflowServer, free_port, one_line_error, pdl_run

pytestmark = pytest.mark.e2e

# The whole digits set (about 0.1-0.3 s an epoch here): slow enough to strike mid-run.
RUN = ["trainer.num_threads=1", "bn.diagnostics=false", "trainer.progress=plain"]
# A last.pt at every epoch's end, and the two newest per-epoch snapshots.
CKPT = [*RUN, "trainer.max_epochs=12", "trainer.checkpoint_interval_s=0", "trainer.keep=2"]


class Running:
    """pdl-run in the background, its output (stdout and stderr together) read line by line."""

    def __init__(self, args: list[str], cwd: Path, stderr_apart: bool = False):
        self.proc = subprocess.Popen(
            [PY, "-m", "pdl_experiments.cli", *args],
            cwd=cwd,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if stderr_apart else subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []

    def until(self, text: str) -> str:
        """Read on until a line holds `text`; that line."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"pdl-run ended before {text!r}: {''.join(self.lines)[-3000:]}")

    def finish(self, timeout: float = 300) -> int:
        out, err = self.proc.communicate(timeout=timeout)
        self.lines.append(out or "")
        self.stderr = err or ""
        return self.proc.returncode

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def read(path: Path) -> dict:
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------- MLflow
def mlflow_run(url: str, run_dir: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    return client, client.get_run(run_id)


def val_loss_steps(client, run) -> list[int]:
    """The steps of the run's val/loss history (the final value shares the last epoch's step)."""
    return sorted({m.step for m in client.get_metric_history(run.info.run_id, "val/loss")})


def run_logging_to_a_server(tmp_path, epochs: int):
    """A real MLflow server and a pdl-run of `epochs` epochs logging to it, both started."""
    pytest.importorskip("mlflow")
    server = MlflowServer(tmp_path / "store")
    url = server.start()
    run_dir = tmp_path / "run"
    args = [*RUN, f"trainer.max_epochs={epochs}", "logger=[tensorboard,mlflow]"]
    run = Running([*args, f"logger.mlflow.tracking_uri={url}", f"hydra.run.dir={run_dir}"], tmp_path)
    return server, url, run_dir, run


def test_mlflow_server_dies_and_returns_the_queue_drains(tmp_path):
    """Killed three epochs in: one warning naming the server, training goes on; the server
    comes back while the run trains (the run is held with SIGSTOP until it answers, so the
    return falls inside the run): the queue drains, the MLflow run is whole and FINISHED."""
    epochs = 25
    server, url, run_dir, run = run_logging_to_a_server(tmp_path, epochs)
    try:
        run.until(f"epoch 3/{epochs}")
        server.kill()
        warning = run.until("does not answer")
        run.proc.send_signal(signal.SIGSTOP)  # the server comes back before the run trains on
        server.start()
        run.proc.send_signal(signal.SIGCONT)
        assert run.finish() == 0, run.output()[-3000:]
        client, mlrun = mlflow_run(url, run_dir)  # from the same store
        steps = val_loss_steps(client, mlrun)
    finally:
        run.stop()
        server.stop()
    out = run.output()
    assert url in warning and "training goes on" in warning
    assert out.count("does not answer") == 1 and out.count("answers again") == 1, out[-3000:]
    assert out.index(warning) < out.index(f"epoch {epochs}/{epochs}")  # it came while the run trained
    assert not (run_dir / "mlflow_undelivered.json").exists()
    assert mlrun.info.status == "FINISHED"
    assert len(steps) == epochs  # every epoch's val/loss


def test_mlflow_server_dies_for_good_the_run_finishes_and_replays_later(tmp_path):
    """Killed three epochs in, not back before the run ends: exit 0 with metrics.json and the
    checkpoints; one warning says what was not delivered and the command that sends it; that
    command, once the server is back, makes the MLflow run whole and FINISHED."""
    epochs = 12
    server, url, run_dir, run = run_logging_to_a_server(tmp_path, epochs)
    try:
        run.until(f"epoch 3/{epochs}")
        server.kill()
        assert run.finish() == 0, run.output()[-3000:]
    finally:
        run.stop()
    out = run.output()
    assert (run_dir / "metrics.json").is_file()
    assert (run_dir / "checkpoints" / "last.pt").is_file() and (run_dir / "checkpoints" / "best.pt").is_file()
    assert out.count("does not answer") == 1, out[-3000:]
    (kept,) = [ln for ln in out.splitlines() if "were not delivered" in ln]
    command = f"python -m pdl_experiments.training.mlflow_sink {run_dir}"
    assert url in kept and command in kept and "mlflow_undelivered.json" in kept
    assert (run_dir / "mlflow_undelivered.json").is_file()

    server.start()  # the same store, later
    try:
        sent = subprocess.run([PY, *command.split()[1:]], env=ENV, capture_output=True, text=True)
        assert sent.returncode == 0 and "metric values sent" in sent.stdout, sent.stderr
        client, mlrun = mlflow_run(url, run_dir)
        assert mlrun.info.status == "FINISHED"
        assert len(val_loss_steps(client, mlrun)) == epochs
        final = read(run_dir / "metrics.json")
        assert mlrun.data.metrics["test/acc"] == final["test/acc"]
    finally:
        server.stop()
    assert not (run_dir / "mlflow_undelivered.json").exists()


def test_a_tracking_uri_nothing_answers_is_one_line_within_15_s(tmp_path):
    pytest.importorskip("mlflow")
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    p = pdl_run(
        [*RUN, "trainer.max_epochs=1", "logger=[tensorboard,mlflow]", f"logger.mlflow.tracking_uri={uri}"],
        tmp_path,
    )
    elapsed = time.monotonic() - t0  # the whole process, Python's start-up included
    line = one_line_error(p)
    assert f"logger.mlflow.tracking_uri={uri}" in line and "Connection refused" in line
    assert elapsed < 15, elapsed


# ---------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict:
    """The metrics of the run the faults below strike, run uninterrupted."""
    tmp = tmp_path_factory.mktemp("clean")
    p = pdl_run([*CKPT, f"hydra.run.dir={tmp / 'run'}"], tmp)
    assert p.returncode == 0, p.stderr[-3000:]
    return read(tmp / "run" / "metrics.json")


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    """The same run killed with SIGKILL (no handler runs) after its fifth epoch."""
    tmp = tmp_path_factory.mktemp("killed")
    run = Running([*CKPT, f"hydra.run.dir={tmp / 'run'}"], tmp)
    try:
        run.until("epoch 5/12")
        run.proc.send_signal(signal.SIGKILL)
        assert run.finish() == -signal.SIGKILL
    finally:
        run.stop()
    assert not (tmp / "run" / "metrics.json").exists()
    return tmp / "run"


def resume_auto(run_dir: Path) -> subprocess.CompletedProcess:
    """The same command again with trainer.resume=auto, in the same run directory."""
    return pdl_run([*CKPT, f"hydra.run.dir={run_dir}", "trainer.resume=auto"], run_dir.parent)


def assert_as_clean(run_dir: Path, clean: dict) -> None:
    got = read(run_dir / "metrics.json")
    assert got["test/acc"] == clean["test/acc"]
    for key in ("val/loss", "test/loss", "final/train_acc"):
        assert got[key] == pytest.approx(clean[key], abs=1e-6), key


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def test_sigkill_then_resume_auto_ends_as_the_uninterrupted_run(tmp_path, killed, clean):
    run_dir = copy_of(killed, tmp_path)
    epoch = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["loop"]["epoch"]
    assert 4 <= epoch < 12  # the periodic checkpoint of the last epoch done (or the one before)
    p = resume_auto(run_dir)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"resumed phase 'train' at epoch {epoch}, batch 0" in (run_dir / "run.log").read_text()
    assert_as_clean(run_dir, clean)


def test_a_truncated_last_pt_resumes_from_the_newest_intact_snapshot(tmp_path, killed, clean):
    run_dir = copy_of(killed, tmp_path)
    ckpt = run_dir / "checkpoints"
    last = ckpt / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    newest = max(ckpt.glob("train_epoch*.pt"), key=lambda p: p.stat().st_mtime)
    p = resume_auto(run_dir)
    assert p.returncode == 0, p.stderr[-3000:]
    log = (run_dir / "run.log").read_text()
    assert f"cannot read checkpoint {last}" in log and f"resuming from {newest.name} instead" in log
    assert_as_clean(run_dir, clean)


def test_no_intact_checkpoint_is_one_line_naming_what_to_delete(tmp_path, killed):
    run_dir = copy_of(killed, tmp_path)
    ckpt = run_dir / "checkpoints"
    for f in [ckpt / "last.pt", *ckpt.glob("train_epoch*.pt")]:
        f.write_bytes(f.read_bytes()[:1000])
    line = one_line_error(resume_auto(run_dir))
    assert (
        f"cannot read checkpoint {ckpt / 'last.pt'}" in line and "none of its 2 snapshots is intact" in line
    )
    assert f"delete {ckpt / 'last.pt'} to start the run over" in line
    (ckpt / "last.pt").unlink()  # as it says: the run starts over
    p = resume_auto(run_dir)
    assert p.returncode == 0, p.stderr[-3000:]


def test_disk_full_during_a_checkpoint_save_then_resume_auto(tmp_path, clean):
    """The checkpoints on a real 4 MiB tmpfs, filled up after the second epoch."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoints"
    ckpt.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "pdl-test-full", str(ckpt)], check=True)
    try:
        run = Running([*CKPT, f"hydra.run.dir={run_dir}"], tmp_path, stderr_apart=True)
        try:
            run.until("epoch 2/12")
            filler = ckpt / "filler"
            with open(filler, "wb") as f, pytest.raises(OSError, match="No space left"):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            rc = run.finish()
        finally:
            run.stop()
        p = subprocess.CompletedProcess(run.proc.args, rc, run.output(), run.stderr)
        line = one_line_error(p)
        # last.pt or the epoch's snapshot (trainer.keep), whichever save met the full disk
        assert re.search(
            rf"cannot save checkpoint {ckpt}/(last|train_epoch\d+)\.pt: no space left on device", line
        )
        last = torch.load(ckpt / "last.pt", weights_only=True)  # the previous one, intact
        assert 1 <= last["loop"]["epoch"] < 12
        assert not list(ckpt.glob(".*.tmp"))  # no half-written file left behind
        filler.unlink()  # space freed
        p = resume_auto(run_dir)
        assert p.returncode == 0, p.stderr[-3000:]
        assert f"resumed phase 'train' at epoch {last['loop']['epoch']}" in (run_dir / "run.log").read_text()
        assert_as_clean(run_dir, clean)
    finally:
        subprocess.run(["umount", "-l", str(ckpt)], check=False)
