"""What users see of pdl-run's runs: TensorBoard's HPARAMS and layout, and the CSV and MLflow
loggers, each read back through the tool's own API."""

from __future__ import annotations

import csv
import json

import pytest

from helpers import ENV, REPO, pdl_run

pytestmark = pytest.mark.e2e

FAST = ["dataset.subset=300", "trainer.progress=none"]


# ---------------------------------------------------------------- TensorBoard
def _hparams_tab(logdir):
    """The HPARAMS tab as TensorBoard serves it: its plugin's /experiment and
    /session_groups answers over the event files of `logdir`."""
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer as pem
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import hparams_plugin
    from werkzeug.test import Client
    from werkzeug.wrappers import Response

    mux = pem.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    ctx = base_plugin.TBContext(
        logdir=str(logdir),
        multiplexer=mux,
        data_provider=data_provider.MultiplexerDataProvider(mux, str(logdir)),
    )
    apps = hparams_plugin.HParamsPlugin(ctx).get_plugin_apps()

    def ask(route, request):
        answer = Client(apps[route], Response).post(
            route, data=json.dumps(request), content_type="application/json"
        )
        assert answer.status_code == 200, answer.get_data(as_text=True)
        return json.loads(answer.get_data(as_text=True))

    experiment = ask("/experiment", {"experimentName": ""})
    statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
    groups = ask(
        "/session_groups",
        {"experimentName": "", "allowedStatuses": statuses, "startIndex": 0, "sliceSize": 100},
    )["sessionGroups"]
    return experiment, groups


def test_sweep_hparams_show_option_names_and_headline_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sweep = tmp_path / "sweep"
    p = pdl_run(["-m", "model=cnn,mlp", "trainer.max_epochs=1", *FAST, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert p.returncode == 0, p.stderr
    # Job names (= TensorBoard run names) say only what varies between the jobs.
    jobs = sorted(d.name for d in sweep.iterdir() if d.is_dir())
    assert jobs == ["0_model=cnn", "1_model=mlp"]

    experiment, groups = _hparams_tab(sweep)
    assert sorted(g["hparams"]["model"] for g in groups) == ["cnn", "mlp"]  # not a dict
    assert all(g["hparams"]["bn.enabled"] == "true" for g in groups)  # a plain scalar
    metrics = [m["name"]["tag"] for m in experiment["metricInfos"]]
    assert metrics[0] == "test/acc" and len(metrics) <= 8, metrics
    assert "bn/grad_ratio_first_last" in metrics  # bn's own headline
    assert not [m for m in metrics if m.startswith(("weight_layers/", "train/"))], metrics
    for g in groups:
        saved = json.loads((sweep / g["name"] / "metrics.json").read_text())
        shown = {m["name"]["tag"]: m["value"] for m in g["metricValues"]}
        assert shown["test/acc"] == pytest.approx(saved["test/acc"])

    # Layout: the custom-scalars overview, and per-layer diagnostics in a group that sorts
    # after the headline groups (TensorBoard groups cards by the tag's first component).
    acc = EventAccumulator(str(sweep / jobs[0]))
    acc.Reload()
    assert "custom_scalars__config__" in acc.PluginTagToContent("custom_scalars")
    scalars = acc.Tags()["scalars"]
    layer_tags = [t for t in scalars if "features." in t]
    assert layer_tags and all(t.startswith("weight_layers/") for t in layer_tags)
    groups_in_order = sorted({t.split("/")[0] for t in scalars})
    assert groups_in_order[-1] == "weight_layers" and {"test", "train", "val"} <= set(groups_in_order)


# ---------------------------------------------------------------- CSV and MLflow
def test_csv_logger_writes_a_row_per_epoch(tmp_path):
    run_dir = tmp_path / "run"
    p = pdl_run(["logger=csv", "trainer.max_epochs=2", *FAST, f"hydra.run.dir={run_dir}"], tmp_path)
    assert p.returncode == 0, p.stderr
    with (run_dir / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    epochs = [r for r in rows if r["val/acc"]]
    assert len(epochs) == 2 and [int(r["step"]) for r in epochs] == [5, 10]  # 300 * 0.65 / 64 per epoch
    assert all(0 <= float(r["val/acc"]) <= 1 and float(r["train/loss"]) > 0 for r in epochs)
    assert not list(run_dir.glob("events.out.tfevents.*"))  # logger=csv alone: no TensorBoard


def _no_network_env(tmp_path):
    """ENV plus a sitecustomize that records (and refuses) every TCP connection and name lookup."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os, socket\n"
        "def _refuse(*a, **k):\n"
        "    open(os.environ['NETWORK_LOG'], 'a').write(repr(a[:2]) + '\\n')\n"
        "    raise OSError('network refused by the test')\n"
        "_connect = socket.socket.connect\n"
        "def connect(self, address):\n"
        "    if self.family in (socket.AF_INET, socket.AF_INET6):\n"
        "        _refuse(address)\n"
        "    return _connect(self, address)\n"
        "socket.socket.connect = connect\n"
        "socket.getaddrinfo = _refuse\n"
    )
    log = tmp_path / "network.log"
    return {**ENV, "PYTHONPATH": f"{site}:{REPO}", "NETWORK_LOG": str(log)}, log


def test_mlflow_run_reads_back_through_mlflows_client(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/store/mlflow.db"  # a directory that does not exist yet
    run_dir = tmp_path / "run"
    env, network = _no_network_env(tmp_path)
    p = pdl_run(
        [
            "logger=mlflow",
            f"logger.mlflow.tracking_uri={uri}",
            "trainer.max_epochs=2",
            *FAST,
            f"hydra.run.dir={run_dir}",
        ],
        tmp_path,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    assert not network.exists(), network.read_text()  # no telemetry, no server: no network

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("pdl-experiments")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert run.data.metrics["test/acc"] == saved["test/acc"]
    assert run.data.params["optimizer.lr"] == "0.002" and run.data.params["model"] == "cnn"
    assert run.data.params["bn.enabled"] == "true"
    assert run.info.status == "FINISHED"
    assert run.data.tags["pdl.run_dir"] == str(run_dir.resolve())
    history = client.get_metric_history(run.info.run_id, "val/acc")
    assert sorted({m.step for m in history}) == [5, 10]  # per epoch (and the final value at 10)
    assert not list(run_dir.glob("events.out.tfevents.*"))


def test_tensorboard_and_mlflow_at_once(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_dir = tmp_path / "run"
    p = pdl_run(
        [
            "logger=[tensorboard,mlflow]",
            f"logger.mlflow.tracking_uri={uri}",
            "trainer.max_epochs=1",
            "bn.diagnostics=false",
            *FAST,
            f"hydra.run.dir={run_dir}",
        ],
        tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("pdl-experiments").experiment_id])
    assert {"test/acc", "val/acc", "train/loss"} <= set(run.data.metrics)


def test_mlflow_missing_is_one_line_naming_the_extra(tmp_path):
    fake = tmp_path / "fake" / "mlflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named mlflow')\n")
    env = {**ENV, "PYTHONPATH": f"{fake.parent}:{REPO}"}
    p = pdl_run(["logger=mlflow", "trainer.max_epochs=1", *FAST], tmp_path, env=env)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install -e ".[tracking]"' in lines[0], p.stderr
