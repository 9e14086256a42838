"""Sweep job names that say what varies: `1_model=mlp`, not every override of the command line.

`hydra.sweep.subdir` (configs/config.yaml) is `${hydra.job.num}_${pdl.swept:}`; the directory
is also the run's name in TensorBoard. Which keys a sweep varies is known only where the
sweep starts: `SweptKeysCallback.on_multirun_start` reads them from the multirun's own
overrides (Hydra's parser: `a,b`, `range(...)`, `choice(...)`, `glob(...)`) and from
`hydra.sweeper.params` (the presets' sweeps), and hands them to the jobs in $PDL_SWEPT_KEYS,
which every launcher passes on (jobs in this process, joblib workers, submitit and SLURM
jobs). The overrides all jobs share are left out of the job names; the sweep summary names
them once. Without the variable (a job started some other way) a job is named by all its
overrides, as Hydra's `override_dirname` would.

Importing this module registers the resolver; Hydra imports it in the launching process
(the callback is in the primary config) and in every worker (it unpickles the callback), so
the name is resolved wherever the job starts. Cheap to import: no torch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

ENV = "PDL_SWEPT_KEYS"


def override_key(line: str) -> str:
    """The key Hydra's exclude_keys compare with: `+a.b@pkg=1` -> `a.b`."""
    return line.split("=", 1)[0].lstrip("+~").split("@", 1)[0]


def swept_keys(overrides: Iterable[str], sweeper_params: Any = None) -> list[str]:
    """The keys a multirun sweeps: its sweep overrides and the sweeps of hydra.sweeper.params."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lines = [str(o) for o in overrides]
    if sweeper_params:
        lines += [f"{k}={v}" for k, v in sweeper_params.items()]
    parsed = OverridesParser.create().parse_overrides(lines)
    return sorted({o.key_or_group for o in parsed if o.is_sweep_override()})


def job_dirname(task_overrides: Iterable[str], swept: Iterable[str] | None, settings: Any) -> str:
    """Hydra's override_dirname of a job, restricted to the swept keys (None: all keys)."""
    keep = None if swept is None else set(swept)
    exclude = set(settings.exclude_keys)
    lines = sorted(
        line
        for line in map(str, task_overrides)
        if override_key(line) not in exclude and (keep is None or override_key(line) in keep)
    )
    return str(settings.item_sep).join(lines).replace("=", str(settings.kv_sep))


def _swept_resolver(*, _root_: DictConfig) -> str:
    hydra = _root_.hydra
    env = os.environ.get(ENV)
    swept = None if env is None else [k for k in env.split(",") if k]
    return job_dirname(hydra.overrides.task, swept, hydra.job.config.override_dirname)


def _job_dir_resolver(*, _root_: DictConfig) -> str:
    """`<job number>_<what varies>` (1_model=mlp); a sweep of one job, where nothing varies,
    is named after its run: its overrides, or its technique when it has none."""
    swept = _swept_resolver(_root_=_root_)
    if swept:
        return f"{_root_.hydra.job.num}_{swept}"
    hydra = _root_.hydra
    return job_dirname(hydra.overrides.task, None, hydra.job.config.override_dirname) or str(_root_.technique)


OmegaConf.register_new_resolver("pdl.swept", _swept_resolver, replace=True)
OmegaConf.register_new_resolver("pdl.job_dir", _job_dir_resolver, replace=True)


class SweptKeysCallback(Callback):
    """Hydra callback: hand the swept keys of a multirun to its jobs (see the module doc)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            keys = swept_keys(config.hydra.overrides.task, OmegaConf.select(config, "hydra.sweeper.params"))
        except Exception:  # a malformed override: Hydra's sweeper reports it itself
            os.environ.pop(ENV, None)
            return
        os.environ[ENV] = ",".join(keys)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ.pop(ENV, None)
