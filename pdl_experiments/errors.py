"""The errors a user sees, and the ends of a run that are not errors.

Every error raised for bad input or a broken file derives from `PdlError`: its message is
one line saying what was wrong and what is allowed, and the console scripts print it as it
is (`pdl-run: error: <message>`), whatever Hydra or a launcher wrapped it in. The
subclasses live with what they are about: `config.ConfigError`, `data.DataError`,
`training.CheckpointError`, `training.NonFiniteLossError`, `parallel.ProcessFailed`.

`RunEnded` is a run that stopped because it was asked to (a signal, a sweep's stop
request, an epoch hook such as an Optuna pruner) after writing last.pt: every rank agreed
on it, nothing failed. A leaf module: it imports nothing.
"""

from __future__ import annotations


class PdlError(Exception):
    """An error the user sees as one line; the CLI prints its message alone."""


class RunEnded(PdlError):
    """The run stopped on request with last.pt written (training.Interrupted, training.StopRun)."""


__all__ = ["PdlError", "RunEnded"]
