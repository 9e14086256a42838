"""pdl_experiments/sweeps/: job names, summaries, seed statistics, the Optuna sweeper."""
