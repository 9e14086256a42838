"""Progress display: rich bars with ETA on a terminal, one plain line per epoch elsewhere."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

log = logging.getLogger("pdl_experiments")


class Progress:
    def __init__(self, mode: str, description: str, total_epochs: int, batches: int):
        if mode == "auto":
            mode = "rich" if sys.stdout.isatty() else "plain"
        self.mode = mode
        self.description = description
        self._bar = None
        if mode == "rich":
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self._bar.start()
            self._epochs = self._bar.add_task(description, total=total_epochs, info="")
            self._batches = self._bar.add_task("  batches", total=batches, info="")

    def start_epoch(self, epoch: int, completed_batches: int = 0) -> None:
        if self._bar is not None:
            self._bar.reset(self._batches, completed=completed_batches)

    def advance_batch(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._batches)

    def end_epoch(self, epoch: int, total: int, summary: str) -> None:
        if self._bar is not None:
            self._bar.update(self._epochs, completed=epoch, info=summary)
        elif self.mode == "plain":
            log.info("%s epoch %d/%d  %s", self.description, epoch, total, summary)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def summary_table(title: str, metrics: dict, console: Console | None = None) -> None:
    """The end-of-run table of final metrics."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    (console or Console()).print(table)
