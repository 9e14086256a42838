"""pdl-experiments: the practical ideas of deep learning as config-driven experiments.

`pdl-run` (cli.py) is the command line; `load_run(run_dir)` picks up any finished run in
a notebook: model (best weights, eval mode), config, data splits and metrics.
"""

__version__ = "0.1.0"


def load_run(run_dir, checkpoint: str = "best.pt", device: str = "cpu"):
    """See pdl_experiments.run.load_run (imported lazily: this package must import fast)."""
    from .run import load_run as _load_run

    return _load_run(run_dir, checkpoint, device)


__all__ = ["__version__", "load_run"]
