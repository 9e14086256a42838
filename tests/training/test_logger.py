"""training/logger.py: the CSV sink on resume, MLflow's metric names, and the one TensorBoard
event file of a run (scalars, images, HPARAMS) in the run directory itself."""

from __future__ import annotations

import csv


def test_resumed_csv_keeps_the_rows_before_the_checkpoint(tmp_path):
    from pdl_experiments.training.logger import CsvSink

    first = CsvSink(tmp_path / "metrics.csv")
    for step in (5, 10, 15):
        first.scalars({"train/loss": 1.0 / step}, step)
    first.close()
    resumed = CsvSink(tmp_path / "metrics.csv", purge_step=10)  # checkpoint at step 10
    resumed.scalars({"train/loss": 0.5, "val/acc": 0.9}, 10)
    resumed.close()
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open(newline="")))
    assert [(r["step"], r["val/acc"]) for r in rows] == [("5", ""), ("10", "0.9")]


def test_mlflow_names_are_sanitized():
    from pdl_experiments.training.logger import mlflow_name

    assert mlflow_name("adv/acc/fgsm@0.1") == "adv/acc/fgsm_0.1"
    assert mlflow_name("val/acc") == "val/acc"


def test_event_file_has_scalars_images_and_hparams_in_the_run_itself(default_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir = default_run
    events = list(run_dir.glob("events.out.tfevents.*"))
    assert len(events) == 1, "one event file, no stray sub-run"
    assert not [p for p in run_dir.iterdir() if p.is_dir() and list(p.glob("events.*"))]
    acc = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    for tag in ("train/loss", "val/acc", "lr", "train/epoch_time_s", "train/samples_per_s", "test/acc"):
        assert tag in scalars, tag
    val_steps = [e.step for e in acc.Scalars("val/acc")]
    assert len(val_steps) == 5 and val_steps == sorted(val_steps)  # 4 epochs + the final value
    assert "augmentation/augmented" in acc.Tags()["images"]
    plugins = acc.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in plugins
