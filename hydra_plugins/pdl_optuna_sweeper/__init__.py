"""pdl-experiments' Optuna sweeper for Hydra: `pdl-run -m hydra/sweeper=optuna ...`.

A stored, resumable Optuna study (Optuna >= 4, the `hpo` extra) searched with the syntax and
keys of Hydra's Optuna sweeper, plus an objective named by `hydra.sweeper.metric`, trial
pruning through the run's trainer, and plots. Configuration: config.py; the sweep: _impl.py;
the search space: _space.py; the trial's side, inside a run: pdl_experiments/sweeps/hpo.py.

`hydra_plugins` is a namespace package (no __init__.py) shared with the other Hydra plugins.
"""
