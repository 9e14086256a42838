"""A run that is an Optuna trial: it reports the search's metric every epoch and stops when pruned.

The project's Optuna sweeper (`hydra/sweeper=optuna`, hydra_plugins/pdl_optuna_sweeper)
starts each trial as a sweep job with the trial in three environment variables (Hydra's
`hydra.job.env_set`, so every launcher passes them on). run/flow.py asks `epoch_hook()` for a hook
and installs it on the run's trainer; without the variables there is none and nothing here
imports Optuna. The study says what to report and how to prune (its user attributes, written
by the sweeper): after each epoch the hook reports the metric (step = epochs so far, across
the run's phases) and, when the pruner says so, raises StopRun(status="pruned"): the trainer
writes last.pt and the run ends; pdl-run marks the job `pruned` and the sweeper tells the study.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from typing import Any

log = logging.getLogger("pdl_experiments")

ENV_STORAGE = "PDL_OPTUNA_STORAGE"
ENV_STUDY = "PDL_OPTUNA_STUDY"
ENV_TRIAL = "PDL_OPTUNA_TRIAL"  # the trial's number in the study
# Study user attributes the sweeper sets: the metric the search optimises, and the pruner
# ({"name": "median", **its options} or {"name": "none"}).
ATTR_METRIC = "pdl.metric"
ATTR_PRUNER = "pdl.pruner"


def make_pruner(spec: dict[str, Any] | None) -> Any:
    """The Optuna pruner a study's `pdl.pruner` attribute describes."""
    import optuna

    spec = dict(spec or {"name": "none"})
    name = spec.pop("name", "none")
    if name == "median":
        return optuna.pruners.MedianPruner(**spec)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}; expected median or none")


def epoch_hook() -> Callable[[int, dict[str, float]], None] | None:
    """The trainer's epoch hook for the trial this process runs, or None when it runs none."""
    storage, study_name, number = (os.environ.get(k) for k in (ENV_STORAGE, ENV_STUDY, ENV_TRIAL))
    if not (storage and study_name and number):
        return None
    import optuna

    from ..training import StopRun

    study = optuna.load_study(study_name=study_name, storage=storage)
    metric = str(study.user_attrs.get(ATTR_METRIC, "val/acc"))
    pruner_spec = study.user_attrs.get(ATTR_PRUNER)
    study.pruner = make_pruner(pruner_spec)
    frozen = next((t for t in study.get_trials(deepcopy=False) if t.number == int(number)), None)
    if frozen is None:
        raise RuntimeError(f"trial {number} is not in study {study_name!r} of {storage}")
    trial = optuna.trial.Trial(study, frozen._trial_id)
    step = 0

    def report(epoch: int, logs: dict[str, float]) -> None:
        nonlocal step
        value = logs.get(metric)
        if value is None or not math.isfinite(value):
            return
        # Epochs so far, over all phases: a step Optuna has not seen yet. A run resumed mid-phase
        # (a requeued SLURM job) goes on from its epoch, not from 1.
        step = max(step + 1, epoch)
        trial.report(float(value), step)
        if trial.should_prune():
            name = (pruner_spec or {}).get("name", "?")
            log.info("trial %s pruned at epoch %d (%s=%.4g, %s pruner)", number, step, metric, value, name)
            raise StopRun(
                f"pruned by the {name} pruner at epoch {step} ({metric}={value:.4g})", status="pruned"
            )

    return report
