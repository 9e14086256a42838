from .checkpoint import CheckpointError, load_checkpoint, save_atomic
from .trainer import FitResult, Interrupted, NonFiniteLossError, RunState, StopRun, Trainer

__all__ = [
    "CheckpointError",
    "FitResult",
    "Interrupted",
    "NonFiniteLossError",
    "RunState",
    "StopRun",
    "Trainer",
    "load_checkpoint",
    "save_atomic",
]
