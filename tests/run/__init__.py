"""pdl_experiments/run/: the run flow, its context and phases, outputs, debug tools."""
