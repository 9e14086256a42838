"""pdl_experiments/training/: the trainer, checkpoints, loggers, speed switches."""
