"""The one training loop (trainer.py) and what it needs: the Task a technique hands it
(task.py), the loop's state and the exceptions that end a run (state.py), atomic
checkpoints read with `weights_only=True` (checkpoint.py), the loggers (logger.py), progress
bars (progress.py), channels-last and torch.compile (speed.py). Names no technique."""

from .checkpoint import CheckpointError, load_checkpoint, save_atomic
from .state import FitResult, Interrupted, NonFiniteLossError, RunState, StopRun
from .task import ClassificationTask, Task, classification_metrics
from .trainer import Trainer

__all__ = [
    "CheckpointError",
    "ClassificationTask",
    "FitResult",
    "Interrupted",
    "NonFiniteLossError",
    "RunState",
    "StopRun",
    "Task",
    "Trainer",
    "classification_metrics",
    "load_checkpoint",
    "save_atomic",
]
