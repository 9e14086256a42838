"""`hydra/sweeper=optuna`: the Sweeper Hydra instantiates. Optuna is imported when a sweep
starts, not when Hydra scans its plugins (every `pdl-run`, `--help` included)."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """Hydra sweeper driving a stored Optuna study through its ask/tell API (see _impl.py)."""

    def __init__(self, **settings: Any) -> None:
        from ._impl import OptunaSweeperImpl

        self._impl = OptunaSweeperImpl(**settings)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self._impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        self._impl.sweep(arguments)
