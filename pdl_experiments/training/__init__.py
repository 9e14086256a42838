from .checkpoint import CheckpointError, load_checkpoint, save_atomic
from .trainer import FitResult, Interrupted, NonFiniteLossError, RunState, Trainer

__all__ = [
    "CheckpointError",
    "FitResult",
    "Interrupted",
    "NonFiniteLossError",
    "RunState",
    "Trainer",
    "load_checkpoint",
    "save_atomic",
]
