"""A run's logs: TensorBoard (the default), a CSV file, MLflow, or several at once.

`RunLogger` is what the trainer and the techniques call. It fans out to the backends the
`logger` config group switched on (`LoggerConfig` in config/schema.py): scalars go to every one of
them; text, images, figures and histograms to TensorBoard only. MLflow is imported only when
it is selected; its sink (mlflow_sink.py) sends from a background thread, so a tracking
server that stops answering never holds the training up.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch

from .mlflow_sink import MlflowSink, mlflow_name  # noqa: F401  (mlflow_name: imported from here too)

# TensorBoard's CUSTOM SCALARS tab: train and val curves in one chart each. The tags are
# regular expressions and are the same in every phase of a run (its global step runs on
# across phases), so one layout covers all of them, and every run writes the same one
# (TensorBoard merges identical charts of many runs into one).
OVERVIEW = {
    "overview": {
        "loss": ["Multiline", [r"^train/loss$", r"^val/loss$"]],
        "accuracy": ["Multiline", [r"^train/(acc|tf_token_acc)$", r"^val/(acc|token_acc|seq_acc)$"]],
    }
}


class _ScalarSink(Protocol):
    def scalars(self, values: Mapping[str, float], step: int) -> None: ...
    def final(self, hparams: Mapping[str, Any], metrics: Mapping[str, float], step: int) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class RunLogger:
    """One run's logger: a SummaryWriter that also writes the HPARAMS entry properly, plus
    the other selected backends.

    `settings`: the run's `logger` config section (None: TensorBoard only). `params`: the
    run's hparams, for the backends that record them when the run starts (MLflow).
    `purge_step`: a resumed run's step; TensorBoard drops what earlier event files of this
    directory logged from that step on (an interrupted run's tail after its checkpoint), the
    CSV file keeps its rows before it.
    """

    def __init__(
        self,
        log_dir: str | Path,
        purge_step: int | None = None,
        settings: Any = None,
        params: Mapping[str, Any] | None = None,
    ):
        self.log_dir = Path(log_dir)
        self.writer: Any = None
        if settings is None or settings.tensorboard.enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
            self.writer.add_custom_scalars(OVERVIEW)
        self._sinks: list[_ScalarSink] = []
        if settings is not None and settings.csv.enabled:
            self._sinks.append(CsvSink(self.log_dir / "metrics.csv", purge_step))
        if settings is not None and settings.mlflow.enabled:
            clean = {k: _hparam_value(v) for k, v in (params or {}).items()}
            self._sinks.append(MlflowSink(settings.mlflow, self.log_dir, clean, purge_step))

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, float(v), step)
        for sink in self._sinks:
            sink.scalars(values, step)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text, step)

    def image(self, tag: str, img: torch.Tensor, step: int = 0) -> None:
        """img: (C, H, W) in [0, 1]."""
        if self.writer is not None:
            self.writer.add_image(tag, img.detach().float().clamp(0, 1).cpu(), step)

    def figure(self, tag: str, fig: Any, step: int = 0) -> None:
        if self.writer is not None:
            self.writer.add_figure(tag, fig, step, close=True)
        else:
            from matplotlib import pyplot as plt

            plt.close(fig)

    def histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        if self.writer is not None:
            values = values.detach().float().cpu()
            if not bool(torch.isfinite(values).all()):
                # A diverged run meets its NaN here first, in a diagnostic: name it as what it is.
                from .state import NonFiniteLossError

                raise NonFiniteLossError.diverged(f"values in {tag} at step {step}")
            self.writer.add_histogram(tag, values, step)

    def hparams(
        self,
        hparams: Mapping[str, Any],
        metrics: Mapping[str, float],
        step: int,
        final: Mapping[str, float] | None = None,
    ) -> None:
        """The run's entry in TensorBoard's HPARAMS tab, and its final metrics.

        `metrics`: the headline metrics (outputs.headline), the table's metric columns in this
        order, also logged as scalars at `step` (the table reads their last values).
        `final`: every final metric (default: `metrics`), for MLflow.

        SummaryWriter.add_hparams opens a new writer in a timestamped sub-directory, which
        TensorBoard shows as a separate run; the summaries go through our own file writer
        instead, so hparams, metrics and curves stay in one run. The experiment summary names
        the metric columns: without it TensorBoard makes one of every scalar tag of every run
        (each per-layer diagnostic). It names this run's hparams as the columns too;
        TensorBoard takes one run's experiment for a whole log directory, so a sweep's table
        (its jobs share their keys) is complete, a directory of unlike runs shows the keys of
        one of them.
        """
        if self.writer is not None:
            from torch.utils.tensorboard.summary import hparams as hp_summary

            clean = {k: _hparam_value(v) for k, v in hparams.items()}
            exp, ssi, sei = hp_summary(clean, dict(metrics))
            fw = self.writer._get_file_writer()
            fw.add_summary(exp)
            fw.add_summary(ssi)
            fw.add_summary(sei)
            for k, v in metrics.items():
                self.writer.add_scalar(k, float(v), step)
        for sink in self._sinks:
            sink.final(hparams, final if final is not None else metrics, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()
        for sink in self._sinks:
            sink.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        for sink in self._sinks:
            sink.close()


def _hparam_value(v: Any) -> Any:
    if isinstance(v, bool):  # as on the command line (torch would write a bool as 0.0 / 1.0)
        return "true" if v else "false"
    if isinstance(v, (int, float, str)):
        return v
    if v is None:
        return "None"
    return str(v)


class CsvSink:
    """`metrics.csv`: one row per logged step (scalars logged at one step in a row share it),
    a `step` column, then one column per scalar in the order they first appear.

    Rewritten whole (atomically) on flush and close: columns appear as the run goes on (val/*
    at the first epoch end), and the file is small.
    """

    def __init__(self, path: Path, purge_step: int | None = None):
        self.path = path
        self.columns: dict[str, None] = {"step": None}
        self.rows: list[dict[str, Any]] = []
        if purge_step is not None and path.is_file():  # resumed: keep what came before
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                self.columns.update(dict.fromkeys(reader.fieldnames or []))
                self.rows = [r for r in reader if r.get("step", "").isdigit() and int(r["step"]) < purge_step]
            for r in self.rows:
                r["step"] = int(r["step"])

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if not self.rows or self.rows[-1]["step"] != step:
            self.rows.append({"step": step})
        row = self.rows[-1]
        for k, v in values.items():
            row[k] = float(v)
            self.columns.setdefault(k)

    def final(self, hparams: Mapping[str, Any], metrics: Mapping[str, float], step: int) -> None:
        pass  # the final metrics are metrics.json

    def flush(self) -> None:
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(self.columns), restval="")
            w.writeheader()
            w.writerows(self.rows)
        os.replace(tmp, self.path)

    def close(self) -> None:
        self.flush()
