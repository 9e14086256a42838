"""MLflow with a tracking server, as docs/outputs.md advises for parallel launchers: `mlflow server` on
127.0.0.1 (SQLite behind it, artifacts in a temporary directory), a two-job joblib sweep
logging to it at once, both runs read back through MLflow's own client."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from helpers import ENV, PY, pdl_run

mlflow = pytest.importorskip("mlflow")  # the `tracking` extra

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]

SMALL = ["trainer.num_threads=1", "bn.diagnostics=false", "trainer.progress=none", "dataset.subset=300"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """The URL of an MLflow tracking server on 127.0.0.1, stopped at the end of the test."""
    store = tmp_path / "mlflow-server"
    store.mkdir()
    port = free_port()
    cmd = [PY, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    cmd += ["--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}"]
    cmd += ["--artifacts-destination", str(store / "artifacts")]
    log = store / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=store,
            # It reports nowhere, and starts no job runner (MLflow 3's GenAI jobs: a dozen processes).
            env={**ENV, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the server and its workers: one process group to stop
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"mlflow server exited: {log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"mlflow server did not answer: {log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with pytest.raises(OSError):  # stopped: nothing answers on its port any more
        urllib.request.urlopen(f"{url}/health", timeout=2)


def test_a_parallel_sweep_logs_both_runs_to_an_mlflow_server(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    from pdl_experiments.training.logger import mlflow_name

    sweep = tmp_path / "sweep"
    p = pdl_run(
        [
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "logger=[tensorboard,mlflow]",
            f"logger.mlflow.tracking_uri={mlflow_server}",
            "optimizer.lr=0.001,0.002",
            "trainer.max_epochs=2",
            *SMALL,
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    jobs = sorted(d for d in sweep.iterdir() if (d / ".hydra").is_dir())
    assert len(jobs) == 2

    client = MlflowClient(tracking_uri=mlflow_server)  # over HTTP, from the server
    experiment = client.get_experiment_by_name("pdl-experiments")
    runs = {r.data.tags["pdl.run_dir"]: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == [str(d.resolve()) for d in jobs]
    for job, lr in zip(jobs, ("0.001", "0.002"), strict=True):
        run = runs[str(job.resolve())]
        assert run.info.status == "FINISHED"
        assert run.data.params["optimizer.lr"] == lr and run.data.params["model"] == "cnn"
        assert run.data.params["trainer.max_epochs"] == "2"
        saved = json.loads((job / "metrics.json").read_text())
        final = {mlflow_name(k): v for k, v in saved.items()}  # every final metric, by MLflow's name
        assert {k: run.data.metrics.get(k) for k in final} == final
        history = client.get_metric_history(run.info.run_id, "val/acc")
        assert len({m.step for m in history}) == 2  # one per epoch (the final value at the last)
        assert len(list(job.glob("events.out.tfevents.*"))) == 1  # TensorBoard as well
