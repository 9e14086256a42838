"""The console log: rich on a terminal, one plain record per line anywhere else.

On a terminal the log goes through rich (colours, wrapped to the window). In a log file, a
pipe, CI or a SLURM job's output there is no window: rich would assume 80 columns and break
long lines, the run directory's path among them, across two lines that no one can copy or
grep. There every record is one line, whatever its length. The Hydra logging config
(configs/hydra/job_logging/rich.yaml) names `console_handler` as its console handler.
"""

from __future__ import annotations

import logging
import sys
from typing import Any


def console_handler(**rich_options: Any) -> logging.Handler:
    """A RichHandler when stdout is a terminal, else a plain handler writing whole lines."""
    if sys.stdout.isatty():
        from rich.logging import RichHandler

        return RichHandler(**rich_options)
    return logging.StreamHandler(sys.stdout)
