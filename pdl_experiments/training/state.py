"""What a run's trainer reports and obeys besides its loop: the run's state (stop requests,
phases done, technique state kept in checkpoints), a phase's result, and the exceptions that
end a run (interrupted, stopped by a hook, a non-finite loss)."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: the run cannot go on."""


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived (or a sweep's stop request); last.pt has been written."""

    def __init__(self, signum: int, phase: str = "", epoch: int = 0):
        self.signame = signal.Signals(signum).name
        super().__init__(f"interrupted by {self.signame} in phase {phase}, epoch {epoch}; last.pt saved")
        self.signum, self.phase, self.epoch = signum, phase, epoch


class StopRun(Exception):
    """An epoch hook ended the run early (an Optuna pruner, say); last.pt has been written.

    A hook in `Trainer.epoch_hooks` raises it with the run's outcome (`status`, e.g. "pruned");
    the trainer saves last.pt, fills in the phase and epoch and lets it through: the rest of
    the run (later phases, final evaluation) does not happen.
    """

    def __init__(self, reason: str, status: str = "stopped"):
        super().__init__(reason)
        self.status, self.phase, self.epoch = status, "", 0


@dataclass
class RunState:
    """What outlives one fit: the technique's own records, the phases done, a stop request.

    `extra` is saved in every checkpoint (plain values and tensors only): the run context
    keeps each phase's record there (pdl_experiments/context.py).
    """

    config_yaml: str = ""
    technique: str = ""
    extra: dict = field(default_factory=dict)
    phases_done: list = field(default_factory=list)
    stop_signal: int | None = None
    stop_file: Path | None = None  # a sweep's stop request (pdl_experiments/sweep.py)
    _next_poll: float = 0.0

    def should_stop(self) -> bool:
        """A signal arrived, or the sweep's stop file appeared (looked for once a second)."""
        if self.stop_signal is None and self.stop_file is not None:
            now = time.monotonic()
            if now >= self._next_poll:
                self._next_poll = now + 1.0
                try:
                    self.stop_signal = int(self.stop_file.read_text().strip() or signal.SIGTERM)
                except (OSError, ValueError):
                    pass
        return self.stop_signal is not None

    def install_signal_handlers(self) -> None:
        """First SIGINT/SIGTERM: finish the current step, save last.pt, exit."""

        def handler(signum, frame):
            if self.stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C means now
            self.stop_signal = signum

        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                signal.signal(s, handler)
            except ValueError:  # not the main thread (some launchers): keep defaults
                pass


@dataclass
class FitResult:
    phase: str
    epochs: int = 0
    best_value: float | None = None
    best_epoch: int = 0
    val: dict = field(default_factory=dict)  # last validation metrics
    time_s: float = 0.0
    stopped_early: bool = False
