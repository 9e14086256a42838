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


def console() -> Console:
    """rich's console for tables: the terminal's width on a terminal; elsewhere (a log file,
    CI, a SLURM job's output) rich would assume 80 columns and fold long cells and titles (a
    run directory's path) across lines, so there it gets room enough for any of them."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=1000)


def summary_table(title: str, metrics: dict, out: Console | None = None) -> None:
    """The end-of-run table of final metrics."""
    from rich.table import Table

    out = out or console()
    if not out.is_terminal:  # the title (a run directory's path) on a line of its own, whole
        out.print(title, soft_wrap=True, markup=False, highlight=False)
    table = Table(title=title if out.is_terminal else None, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    out.print(table)
