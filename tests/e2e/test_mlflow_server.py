"""MLflow with a tracking server, as docs/outputs.md advises for parallel launchers: `mlflow server` on
127.0.0.1 (SQLite behind it, artifacts in a temporary directory), a two-job joblib sweep
logging to it at once, both runs read back through MLflow's own client."""

from __future__ import annotations

import json
import urllib.request

import pytest

from helpers import MlflowServer, pdl_run

mlflow = pytest.importorskip("mlflow")  # the `tracking` extra

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]

SMALL = ["trainer.num_threads=1", "bn.diagnostics=false", "trainer.progress=none", "dataset.subset=300"]


@pytest.fixture
def mlflow_server(tmp_path):
    """The URL of an MLflow tracking server on 127.0.0.1, stopped at the end of the test."""
    server = MlflowServer(tmp_path / "mlflow-server")
    try:
        yield server.start()
    finally:
        server.stop()
    with pytest.raises(OSError):  # stopped: nothing answers on its port any more
        urllib.request.urlopen(f"{server.url}/health", timeout=2)


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
