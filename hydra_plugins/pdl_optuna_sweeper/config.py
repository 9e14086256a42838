"""The sweeper's configuration: `hydra/sweeper=optuna`, samplers in `hydra/sweeper/sampler`.

The keys are those of Hydra's Optuna sweeper (n_trials, n_jobs, direction, sampler,
study_name, storage, params, max_failure_rate) plus this project's: metric,
allow_test_metric, pruner and its two options. Registered in Hydra's ConfigStore when Hydra
scans the plugins; nothing here imports Optuna. (No `from __future__ import annotations`: Hydra's scan runs this
module before it is in sys.modules, where dataclasses look string annotations up.)
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class SamplerConf:
    _target_: str = MISSING


@dataclass
class TPESamplerConf(SamplerConf):
    """https://optuna.readthedocs.io/en/stable/reference/samplers/generated/optuna.samplers.TPESampler.html"""

    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = 0  # an int, or null for a different search each time
    n_startup_trials: int = 10  # random trials before TPE models the results
    multivariate: bool = False
    constant_liar: bool = False  # with n_jobs > 1: keep trials run at once apart


@dataclass
class RandomSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = 0


@dataclass
class GridSamplerConf(SamplerConf):
    """Every combination of the (discrete) search space; the grid is built from `params`."""

    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True
    seed: int | None = 0  # the order the grid is visited in


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.pdl_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    _recursive_: bool = False  # the sampler is built when the sweep starts (its seed, its grid)
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])

    sampler: SamplerConf = MISSING
    # The objective: a key of the metrics dict the task returns (a task returning a number
    # is optimised on that number). A search must not select on the test split: test
    # metrics are refused unless allow_test_metric=true.
    metric: str = "val/acc"
    allow_test_metric: bool = False
    # maximize | minimize; null: minimize a metric named like a loss, an error, a FID, a
    # time or a latency, maximize any other.
    direction: str | None = None
    # Trials wanted in the study in all: a resumed study runs only the missing ones.
    n_trials: int = 20
    n_jobs: int = 1  # trials asked for and launched at once (with hydra/launcher=joblib: in parallel)
    # null: sqlite:///<hydra.sweep.dir>/optuna.db, so the same sweep dir resumes its study.
    storage: str | None = None
    study_name: str | None = None  # null: the sweep directory's name
    # median | none. Every trial reports `metric` after each epoch either way.
    pruner: str = "none"
    pruner_startup_trials: int = 5  # median: no trial is pruned before this many have finished
    pruner_warmup_epochs: int = 0  # median: a trial is not pruned in its first epochs
    # The search stops with an error once more than this fraction of its trials failed
    # (1.0: never; failed trials are FAIL in the study and the search goes on).
    max_failure_rate: float = 1.0
    # The search space, as override strings: {optimizer.lr: "tag(log, interval(1e-4, 1e-1))"}.
    params: dict[str, str] | None = None


_store = ConfigStore.instance()
_store.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="pdl_optuna_sweeper")
for _name, _node in (("tpe", TPESamplerConf), ("random", RandomSamplerConf), ("grid", GridSamplerConf)):
    _store.store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="pdl_optuna_sweeper")
