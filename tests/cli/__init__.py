"""pdl_experiments/cli/: the console scripts, one-line errors."""
