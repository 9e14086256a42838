"""TensorBoard logging for one run, into the run directory's own event file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch


class RunLogger:
    """A thin layer over SummaryWriter that also knows how to write hparams properly."""

    def __init__(self, log_dir: str | Path, purge_step: int | None = None):
        """`purge_step`: a resumed run's step; TensorBoard drops what earlier event files of
        this directory logged from that step on (an interrupted run's tail after its checkpoint)."""
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, float(v), step)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        self.writer.add_text(tag, text, step)

    def image(self, tag: str, img: torch.Tensor, step: int = 0) -> None:
        """img: (C, H, W) in [0, 1]."""
        self.writer.add_image(tag, img.detach().float().clamp(0, 1).cpu(), step)

    def figure(self, tag: str, fig: Any, step: int = 0) -> None:
        self.writer.add_figure(tag, fig, step, close=True)

    def histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        self.writer.add_histogram(tag, values.detach().float().cpu(), step)

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float], step: int) -> None:
        """HPARAMS tab entry written into this run's own event file.

        SummaryWriter.add_hparams opens a new writer in a timestamped sub-directory, which
        TensorBoard shows as a separate run; writing the session summaries through our own
        file writer keeps hparams, metrics and curves in one run. No experiment summary is
        written, so TensorBoard builds the table from all runs of a sweep together.
        """
        from torch.utils.tensorboard.summary import hparams as hp_summary

        clean = {k: _hparam_value(v) for k, v in hparams.items()}
        _, ssi, sei = hp_summary(clean, dict(metrics))
        fw = self.writer._get_file_writer()
        fw.add_summary(ssi)
        fw.add_summary(sei)
        self.scalars(metrics, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _hparam_value(v: Any) -> Any:
    if isinstance(v, bool) or isinstance(v, (int, float, str)):
        return v
    if v is None:
        return "None"
    return str(v)
