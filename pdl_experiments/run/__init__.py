"""The run: its flow (flow.py: typed config, pre-flight checks, data, context,
technique.run(ctx), metrics), what a technique may use (context.py: RunContext, phases,
resume), what a run writes besides checkpoints (outputs.py), what it asks of its
surroundings (environment.py: device, seeds, Hydra's runtime) and its debug tools (debug.py).

`run(cfg, run_dir)` is the one entry: the CLI calls it, and so can a test or a notebook.
"""

from .flow import run

__all__ = ["run"]
