"""Sweeps that stop when told and resume where they stopped.

One Ctrl-C or SIGTERM stops a whole `pdl-run -m` sweep, whatever the launcher:

* the signal reaches the process running a job (the basic launcher runs them in pdl-run's
  own process; joblib's workers see a terminal's Ctrl-C themselves): the job finishes its
  step, writes last.pt and ends `interrupted`;
* `STOP_FILE` in the sweep directory records the signal. pdl-run's own process writes it
  when the signal reaches it (SweepStopCallback's handler, for launchers whose jobs run
  elsewhere); a running job polls it (about once a second) and stops the same way; a job
  that starts after it exists does not run at all and leaves no directory behind;
* when the launcher returns, the summary is written (report.SweepSummaryCallback) and
  pdl-run exits 128 + the signal number (130 for SIGINT, 143 for SIGTERM). A second Ctrl-C
  stops at once.

The same command with `trainer.resume=auto` (and the same `hydra.sweep.dir`) continues it:
finished jobs are not rerun, interrupted ones resume from their last.pt, the others run.
"""

from __future__ import annotations

import logging
import shutil
import signal
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

log = logging.getLogger("pdl_experiments")

STOP_FILE = ".stop"


class SweepStopped(SystemExit):
    """The sweep was stopped by a signal; its summary is written. pdl-run exits 128 + signum.

    A SystemExit, because Hydra turns an Exception raised in a callback into a warning.
    """

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


def stop_file(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / STOP_FILE


def request_stop(sweep_dir: str | Path, signum: int) -> None:
    """Record that the sweep must stop (first signal wins)."""
    path = stop_file(sweep_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(signum))


def stop_requested(sweep_dir: str | Path) -> int | None:
    """The signal that stopped the sweep, or None."""
    try:
        return int(stop_file(sweep_dir).read_text().strip() or signal.SIGTERM)
    except (OSError, ValueError):
        return None


def skip_job(job_dir: str | Path) -> None:
    """A job that would start after the stop: it leaves nothing behind (never started)."""
    log.info("sweep stopped: not starting %s", Path(job_dir).name)
    shutil.rmtree(job_dir, ignore_errors=True)


class SweepStopCallback(Callback):
    """Hydra callback: one signal stops the sweep (see the module docstring)."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        stop_file(sweep_dir).unlink(missing_ok=True)  # a resumed sweep starts unstopped

        def handler(signum, frame):
            if stop_requested(sweep_dir) is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C means now
            request_stop(sweep_dir, signum)
            log.warning(
                "%s: stopping the sweep after the running job(s) save their state",
                signal.Signals(signum).name,
            )

        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                signal.signal(s, handler)
            except ValueError:  # not the main thread
                pass

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        signum = stop_requested(config.hydra.sweep.dir)
        if signum is not None:
            raise SweepStopped(signum)
