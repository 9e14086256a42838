"""A run that is an Optuna trial: it reports the search's metric every epoch and stops when pruned.

The project's Optuna sweeper (`hydra/sweeper=optuna`, hydra_plugins/pdl_optuna_sweeper)
starts each trial as a sweep job with the trial in three environment variables (Hydra's
`hydra.job.env_set`, so every launcher passes them on). run/flow.py asks `epoch_hook()` for a hook
and installs it on the run's trainer; without the variables there is none and nothing here
imports Optuna. The study says what to report and how to prune (its user attributes, written
by the sweeper): after each epoch the hook reports the metric (step = epochs so far, across
the run's phases) and, when the pruner says so, raises StopRun(status="pruned"): the trainer
writes last.pt and the run ends; pdl-run marks the job `pruned` and the sweeper tells the study.

A database server that restarts under a search (PostgreSQL shared by several workers) costs
no trial: the storage pings each pooled connection before use (SQLAlchemy's pool_pre_ping),
so connections the restart closed are replaced rather than used; calls made while it is down
are retried for up to STORAGE_WAIT_S (`retrying`); an epoch's report that cannot wait is
skipped with a warning and the trial trains on.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("pdl_experiments")

ENV_STORAGE = "PDL_OPTUNA_STORAGE"
ENV_STUDY = "PDL_OPTUNA_STUDY"
ENV_TRIAL = "PDL_OPTUNA_TRIAL"  # the trial's number in the study
# Study user attributes the sweeper sets: the metric the search optimises, and the pruner
# ({"name": "median", **its options} or {"name": "none"}).
ATTR_METRIC = "pdl.metric"
ATTR_PRUNER = "pdl.pruner"
STORAGE_WAIT_S = 120.0  # how long a call waits for a database that does not answer
RETRY_EVERY_S = 2.0

T = TypeVar("T")


def storage(url: str) -> Any:
    """Optuna's RDB storage for `url` (a SQLAlchemy URL), its pooled connections pinged
    before use: a database restart does not hand the next call a dead connection."""
    import optuna

    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})


def transient(err: BaseException) -> bool:
    """An error of a database that does not answer (down, restarting, the connection cut), as
    SQLAlchemy raises it or Optuna wraps it; not one of a bad query or a broken invariant."""
    import sqlalchemy.exc

    cut = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)
    seen = 0
    while err is not None and seen < 5:
        if isinstance(err, cut) or (
            isinstance(err, sqlalchemy.exc.DBAPIError) and err.connection_invalidated
        ):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1  # type: ignore[assignment]
    return False


def retrying(call: Callable[[], T], what: str, wait_s: float = STORAGE_WAIT_S) -> T:
    """call(), tried again every RETRY_EVERY_S while the database does not answer, for up to
    wait_s; one warning when it first fails, one line when it answers again."""
    deadline = time.monotonic() + wait_s
    down_since = None
    while True:
        try:
            out = call()
        except Exception as e:
            if not transient(e) or time.monotonic() > deadline:
                raise
            if down_since is None:
                down_since = time.monotonic()
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                log.warning(
                    "Optuna storage does not answer while %s (%s): retrying for up to %.0f s",
                    what,
                    first,
                    wait_s,
                )
            time.sleep(RETRY_EVERY_S)
            continue
        if down_since is not None:
            log.info("Optuna storage answers again after %.0f s (%s)", time.monotonic() - down_since, what)
        return out


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
    url, study_name, number = (os.environ.get(k) for k in (ENV_STORAGE, ENV_STUDY, ENV_TRIAL))
    if not (url and study_name and number):
        return None
    import optuna

    from ..training import StopRun

    study = retrying(
        lambda: optuna.load_study(study_name=study_name, storage=storage(url)), f"loading trial {number}"
    )
    metric = str(study.user_attrs.get(ATTR_METRIC, "val/acc"))
    pruner_spec = study.user_attrs.get(ATTR_PRUNER)
    study.pruner = make_pruner(pruner_spec)
    frozen = next((t for t in study.get_trials(deepcopy=False) if t.number == int(number)), None)
    if frozen is None:
        raise RuntimeError(f"trial {number} is not in study {study_name!r} of {url}")
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
        try:
            trial.report(float(value), step)
            prune = trial.should_prune()
        except Exception as e:
            if not transient(e):
                raise
            # The database is away (restarting): the trial trains on without this epoch's report.
            log.warning(
                "Optuna storage does not answer: trial %s's report of epoch %d is skipped (%s)",
                number,
                step,
                type(e).__name__,
            )
            return
        if prune:
            name = (pruner_spec or {}).get("name", "?")
            log.info("trial %s pruned at epoch %d (%s=%.4g, %s pruner)", number, step, metric, value, name)
            raise StopRun(
                f"pruned by the {name} pruner at epoch {step} ({metric}={value:.4g})", status="pruned"
            )

    return report
