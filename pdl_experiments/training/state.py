"""What a run's trainer reports and obeys besides its loop: the run's state (stop requests,
phases done, technique state kept in checkpoints), a phase's result, the loop's typed state,
and the exceptions that end a run (interrupted, stopped by a hook, a non-finite loss)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import PdlError, RunEnded

# The handler the requeue signal had before the run's own (submitit's), by signal number.
_chained: dict[int, Callable[[int, Any], Any]] = {}


class NonFiniteLossError(PdlError, RuntimeError):
    """The loss (or the weights, or a logged tensor) became NaN or infinite: the run cannot go on."""

    @classmethod
    def diverged(cls, what: str) -> NonFiniteLossError:
        """The one message of a diverged run: what went non-finite, where, and what to try."""
        return cls(f"non-finite {what}: the run diverged; lower optimizer.lr or set trainer.grad_clip")


class Interrupted(RunEnded):
    """SIGINT/SIGTERM arrived (or a sweep's stop request); last.pt has been written."""

    def __init__(self, signum: int, phase: str = "", epoch: int = 0):
        self.signame = signal.Signals(signum).name
        super().__init__(f"interrupted by {self.signame} in phase {phase}, epoch {epoch}; last.pt saved")
        self.signum, self.phase, self.epoch = signum, phase, epoch


class StopRun(RunEnded):
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
    keeps each phase's record there (pdl_experiments/run/context.py).
    """

    config_yaml: str = ""
    technique: str = ""
    extra: dict = field(default_factory=dict)
    phases_done: list = field(default_factory=list)
    stop_signal: int | None = None
    stop_file: Path | None = None  # a sweep's stop request (pdl_experiments/sweeps/stop.py)
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
        """First SIGINT/SIGTERM: finish the current step, save last.pt, exit. In a job that
        submitit started, its requeue signal (requeue_signal()) stops the run the same way;
        submitit's own handler for it runs after last.pt is saved (hand_on)."""

        def handler(signum, frame):
            if self.stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C means now
            self.stop_signal = signum

        handler.pdl_run_state = True  # type: ignore[attr-defined]  # ours, not one to chain to
        requeue = requeue_signal()
        for s in (signal.SIGINT, signal.SIGTERM, *([requeue] if requeue is not None else [])):
            try:
                previous = signal.signal(s, handler)
            except ValueError:  # not the main thread (some launchers): keep defaults
                continue
            if s == requeue and callable(previous) and not hasattr(previous, "pdl_run_state"):
                _chained[s] = previous


def requeue_signal() -> int | None:
    """The signal SLURM sends a job that submitit started before its time limit (or when it
    is preempted): SIGUSR2, or $SUBMITIT_PREEMPT_SIGNAL. None outside such a job."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return int(getattr(signal, name)) if hasattr(signal, name) else None


def requeued_by_slurm() -> bool:
    """In a job submitit started: SLURM has put this job back in its queue itself (its node was
    set DOWN or failed; JobRequeue), so another attempt of it will run. Read from `scontrol
    show job`: its restart count is past this attempt's ($SLURM_RESTART_COUNT)."""
    job = os.environ.get("SLURM_JOB_ID")
    if not (os.environ.get("SUBMITIT_EXECUTOR") and job):
        return False
    import subprocess

    try:
        out = subprocess.run(
            ["scontrol", "show", "job", "-o", job], capture_output=True, text=True, timeout=15
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
    restarts = fields.get("Restarts", "0")
    return restarts.isdigit() and int(restarts) > int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def hand_on(signum: int) -> None:
    """Once last.pt is saved: the requeue signal goes on to the handler it had before the run's
    (submitit's: on rank 0 it resubmits the job, asks SLURM to requeue it and exits the
    process; on other ranks it returns). Nothing for any other signal."""
    previous = _chained.get(signum)
    if previous is not None:
        previous(signum, None)


@dataclass
class FitResult:
    phase: str
    epochs: int = 0
    best_value: float | None = None
    best_epoch: int = 0
    val: dict = field(default_factory=dict)  # last validation metrics
    time_s: float = 0.0
    stopped_early: bool = False


@dataclass
class LoopState:
    """Where a phase's loop stands: saved in every checkpoint as "loop", restored on resume."""

    epoch: int = 0  # epochs done
    batch: int = 0  # batches done in the current epoch
    global_step: int = 0  # runs on across phases
    best: float | None = None  # the best value of the monitored metric so far
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best one (early stopping)
    elapsed: float = 0.0  # training seconds of this phase
    epoch_gen_state: Any = None  # the loader generator's state at the current epoch's start

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoopState:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


@dataclass
class PhaseRun:
    """One call of Trainer.fit: what its steps share (the task, its loaders, the loop)."""

    task: Any  # Task
    train_loader: Any
    val_loader: Any
    phase: str
    max_epochs: int
    monitor: str
    sign: float  # +1: higher is better (mode=max), -1: lower is better
    schedulers: dict[str, Any]
    loop: LoopState
    result: FitResult
    best_state: dict | None = None  # the weights of the best epoch so far
    step: Callable[..., dict[str, Any]] | None = None  # the task's step (DDP-wrapped under several processes)
    gen: Any = None  # the training loader's generator (its state keys each epoch's order)
    progress: Any = None  # Progress
    last_save: float = 0.0  # time.monotonic() of the last periodic last.pt
