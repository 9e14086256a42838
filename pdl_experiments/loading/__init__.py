"""Finished runs read back safely: runs.py (`load_run`, `evaluate_run`, `run_config`,
`submodule_state`) and safety.py (a config read back from disk is data: its targets are
checked against the registries before anything it names is imported).

`load_run` and friends are imported from runs.py when first asked for, so importing
`loading.safety` (pdl-report, `pdl-run --help`'s sweep callbacks) does not import torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LoadedRun", "evaluate_run", "load_run", "run_config", "submodule_state"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import runs

        return getattr(runs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
