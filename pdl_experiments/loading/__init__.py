"""Finished runs read back safely: runs.py (`load_run`, `evaluate_run`, `run_config`,
`submodule_state`) and safety.py (a config read back from disk is data: its targets are
checked against the registries before anything it names is imported)."""

from .runs import LoadedRun, evaluate_run, load_run, run_config, submodule_state

__all__ = ["LoadedRun", "evaluate_run", "load_run", "run_config", "submodule_state"]
