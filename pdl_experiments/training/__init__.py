from .checkpoint import CheckpointError, load_checkpoint, save_atomic
from .state import FitResult, Interrupted, NonFiniteLossError, RunState, StopRun
from .trainer import Trainer

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
