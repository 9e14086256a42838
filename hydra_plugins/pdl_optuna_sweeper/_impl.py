"""The sweep: a stored Optuna study, asked for trials, each launched as a Hydra job, then told.

    study = create_study(storage, study_name, load_if_exists=True)   # resumes a stored study
    trials left in RUNNING by a sweep that was killed -> FAIL
    while the study has fewer than n_trials finished trials:
        ask n_jobs trials -> one job each (launcher.launch) -> tell each its outcome
    optimization_results.yaml (name, best_params, best_value) and the plots, in the sweep dir

A job's return value is its outcome: a number is the objective; a dict (what pdl-run's task
returns) holds it under `metric`, or says `status`: "pruned" (PRUNED; its pruner stopped it,
see pdl_experiments/sweeps/hpo.py), "failed" (FAIL), "interrupted" / "skipped" (FAIL, and the
search stops: the sweep was told to stop). A job that raised is FAIL; so is a non-finite
objective (a diverging run). Finished trials count towards n_trials (COMPLETE, PRUNED and
FAIL); trials that ended without a verdict (interrupted, skipped, left RUNNING) do not.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, cast

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, Trial, TrialState

from pdl_experiments.errors import PdlError
from pdl_experiments.sweeps import hpo

from ._space import fixed_line, grid, grid_size, override_line, search_space

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"
# A trial's user attributes: why it failed; why it ended without a verdict.
ATTR_ERROR = "error"
ATTR_STOPPED = "pdl.stopped"  # "interrupted", "skipped" or "abandoned": not counted in n_trials
PLOTS = ("optimization_history", "param_importances", "parallel_coordinate")

# The start of the reason of a trial whose job did not return the metric: the sweep stops.
_MISSING = "hydra.sweeper.metric="
_TEST_METRIC = re.compile(r"(^|[/_])test([/_]|$)")
_LOWER_IS_BETTER = re.compile(r"loss|err|fid|latency|time|wall")


class SweeperError(PdlError, ValueError):
    """A sweep that cannot start or go on (a wrong setting, a missing metric)."""


def default_direction(metric: str) -> str:
    return "minimize" if _LOWER_IS_BETTER.search(metric.rsplit("/", 1)[-1].lower()) else "maximize"


@dataclass
class Outcome:
    state: TrialState
    value: float | None = None
    reason: str = ""
    stopped: str | None = None  # the trial ended without a verdict (the sweep was stopped)
    label: str = "value"  # what `value` is: the metric's name, or "value" (a task returning a number)


class OptunaSweeperImpl:
    def __init__(
        self,
        sampler: DictConfig,
        metric: str,
        allow_test_metric: bool,
        direction: str | None,
        n_trials: int,
        n_jobs: int,
        storage: str | None,
        study_name: str | None,
        pruner: str,
        pruner_startup_trials: int,
        pruner_warmup_epochs: int,
        max_failure_rate: float,
        params: DictConfig | None,
    ) -> None:
        self.sampler_conf = sampler
        self.metric = str(metric)
        self.allow_test_metric = bool(allow_test_metric)
        self.direction = direction
        self.n_trials, self.n_jobs = int(n_trials), int(n_jobs)
        self.storage, self.study_name = storage, study_name
        self.pruner = str(pruner)
        self.pruner_options = {
            "n_startup_trials": int(pruner_startup_trials),
            "n_warmup_steps": int(pruner_warmup_epochs),
        }
        self.max_failure_rate = float(max_failure_rate)
        self.params = params
        self.next_job = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # ------------------------------------------------------------------ settings
    def _check(self) -> Literal["maximize", "minimize"]:
        """The settings checked before anything runs; returns the direction."""
        if _TEST_METRIC.search(self.metric) and not self.allow_test_metric:
            raise SweeperError(
                f"hydra.sweeper.metric={self.metric} would select on the test split; search on a "
                "val/ metric, or set hydra.sweeper.allow_test_metric=true to do it anyway"
            )
        direction = self.direction or default_direction(self.metric)
        if direction not in ("maximize", "minimize"):
            raise SweeperError(f"hydra.sweeper.direction={direction}: expected maximize or minimize")
        if self.pruner not in ("median", "none"):
            raise SweeperError(f"hydra.sweeper.pruner={self.pruner}: expected median or none")
        if self.n_trials < 1 or self.n_jobs < 1:
            raise SweeperError("hydra.sweeper.n_trials and hydra.sweeper.n_jobs must be at least 1")
        return cast(Literal["maximize", "minimize"], direction)

    def _sampler(self, space: dict[str, Any], n_before: int) -> tuple[Any, int | None]:
        """(sampler, its grid's size or None). A resumed study's sampler is seeded with
        seed + the trials already there: its random start does not repeat the first sweep's."""
        conf = OmegaConf.to_container(self.sampler_conf, resolve=True)
        assert isinstance(conf, dict)
        if conf.get("seed") is not None:
            conf["seed"] = int(conf["seed"]) + n_before
        if str(conf.get("_target_", "")).endswith("GridSampler"):
            choices = grid(space)
            conf.pop("_partial_", None)
            return instantiate(conf, search_space=choices), grid_size(choices)
        return instantiate(conf), None

    # ------------------------------------------------------------------ the sweep
    def sweep(self, arguments: list[str]) -> None:
        direction = self._check()
        params: dict[str, str] = {str(k): str(v) for k, v in (self.params or {}).items()}
        lines = [f"{k}={v}" for k, v in params.items()] + list(arguments)
        space, fixed = search_space(lines)
        if not space:
            raise SweeperError(
                "nothing to search: give the search space, e.g. 'optimizer.lr=interval(0.0005,0.01)' "
                "or hydra.sweeper.params"
            )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        storage = self.storage or f"sqlite:///{sweep_dir.resolve() / 'optuna.db'}"
        study_name = self.study_name or sweep_dir.resolve().name
        study = hpo.retrying(
            lambda: optuna.create_study(
                storage=hpo.storage(storage), study_name=study_name, direction=direction, load_if_exists=True
            ),
            "opening the study",
        )
        if study.direction.name.lower() != direction:
            raise SweeperError(
                f"study {study_name!r} in {storage} is to {study.direction.name.lower()}, not to "
                f"{direction}: set hydra.sweeper.direction, or use another study_name or sweep dir"
            )
        _fail_abandoned(study)
        _name_objective(study, self.metric)
        study.sampler, n_grid = self._sampler(space, len(study.trials))
        n_trials = min(self.n_trials, n_grid) if n_grid is not None else self.n_trials
        study.set_user_attr(hpo.ATTR_METRIC, self.metric)
        study.set_user_attr(hpo.ATTR_PRUNER, {"name": self.pruner, **self.pruner_options})
        before = _counted(study)
        log.info(
            "Optuna study %r in %s: %s %s, %d of %d trials done; sampler %s, pruner %s",
            study_name,
            storage,
            direction,
            self.metric,
            before,
            n_trials,
            type(study.sampler).__name__,
            self.pruner,
        )
        log.info("search space: %s; fixed: %s", space, fixed or "none")

        ran = failed = 0
        stopped, last_reason = False, ""
        # Between the jobs, the sweeper's calls wait for a database that restarts (hpo.retrying).
        counted = partial(hpo.retrying, partial(_counted, study), "counting trials")
        while not stopped and (left := n_trials - counted()) > 0:
            trials = [hpo.retrying(study.ask, "asking for a trial") for _ in range(min(self.n_jobs, left))]
            suggest = partial(
                self._overrides, space=space, fixed=fixed, storage=storage, study_name=study_name
            )
            batch = [hpo.retrying(partial(suggest, t), f"suggesting trial {t.number}") for t in trials]
            first = max(self.next_job, trials[0].number)  # job number = trial number when it can be
            returns = self.launcher.launch(batch, initial_job_idx=first)
            self.next_job = first + len(returns)
            outcomes = [_outcome(ret, self.metric) for ret in returns]
            for trial, outcome in zip(trials, outcomes, strict=True):
                hpo.retrying(partial(self._tell, study, trial, outcome), f"telling trial {trial.number}")
                stopped = stopped or outcome.stopped is not None
                if outcome.stopped is None:
                    ran += 1
                    failed += outcome.state == TrialState.FAIL
                    last_reason = outcome.reason or last_reason
            wrong = [o.reason for o in outcomes if o.reason.startswith(_MISSING)]
            if wrong:  # a setting, not a trial's fate: every trial would fail the same way
                raise SweeperError(wrong[0])
            if ran and failed / ran > self.max_failure_rate:
                raise RuntimeError(
                    f"{failed} of {ran} trials failed, more than hydra.sweeper.max_failure_rate="
                    f"{self.max_failure_rate}; the last: {last_reason}"
                )
        self._finish(study, sweep_dir)

    def _overrides(
        self, trial: Trial, space: dict[str, Any], fixed: dict[str, str], storage: str, study_name: str
    ) -> list[str]:
        for key, d in space.items():
            trial._suggest(key, d)
        lines = [override_line(k, v) for k, v in trial.params.items()]
        lines += [fixed_line(k, v) for k, v in fixed.items()]
        # The trial, for the job's epoch hook (pdl_experiments/sweeps/hpo.py); Hydra sets these
        # while the job runs, in whatever process the launcher runs it.
        env = {hpo.ENV_STORAGE: storage, hpo.ENV_STUDY: study_name, hpo.ENV_TRIAL: str(trial.number)}
        lines += [override_line(f"++hydra.job.env_set.{k}", v) for k, v in env.items()]
        return lines

    def _tell(self, study: optuna.Study, trial: Trial, outcome: Outcome) -> None:
        if outcome.reason:
            trial.set_user_attr(ATTR_ERROR if outcome.state == TrialState.FAIL else "reason", outcome.reason)
        if outcome.stopped is not None:
            trial.set_user_attr(ATTR_STOPPED, outcome.stopped)
        if outcome.state == TrialState.FAIL and outcome.stopped is None:
            log.warning("trial %d failed: %s", trial.number, outcome.reason)
        else:
            shown = f"{outcome.label}={outcome.value:.6g}" if outcome.value is not None else outcome.reason
            log.info("trial %d %s: %s", trial.number, outcome.state.name, shown)
        try:
            study.tell(trial, outcome.value, state=outcome.state)
        except RuntimeError as e:  # the grid sampler stops "the optimisation" on its last point
            if "Study.stop" not in str(e):
                raise

    def _finish(self, study: optuna.Study, sweep_dir: Path) -> None:
        counts: dict[str, int] = {}
        for t in study.trials:
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
        log.info("study %r: %s", study.study_name, ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        if not counts.get("COMPLETE"):
            log.error("no trial of study %r completed: no best value, no %s", study.study_name, RESULTS_FILE)
            return
        best = study.best_trial
        log.info("best trial %d: value %s, %s", best.number, best.value, best.params)
        results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
        OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)
        write_plots(study, sweep_dir)


def _outcome(ret: JobReturn, metric: str) -> Outcome:
    try:
        value = ret.return_value
    except Exception as e:  # the task raised (a plain Hydra app; pdl-run's task returns a dict)
        return Outcome(TrialState.FAIL, reason=f"{type(e).__name__}: {e}")
    if isinstance(value, Mapping):
        status = value.get("status")
        if status == "pruned":
            return Outcome(TrialState.PRUNED, reason=str(value.get("reason", "")))
        if status in ("interrupted", "skipped"):
            return Outcome(TrialState.FAIL, reason=f"the sweep was stopped: job {status}", stopped=status)
        if status == "failed":
            return Outcome(TrialState.FAIL, reason=str(value.get("error", "failed")))
        if metric not in value:
            have = ", ".join(sorted(str(k) for k in value)[:12])
            return Outcome(
                TrialState.FAIL,
                reason=f"{_MISSING}{metric} is not among the job's metrics ({have}); choose one of them",
            )
        value, label = value[metric], metric
    else:
        label = "value"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return Outcome(
            TrialState.FAIL,
            reason=f"{_MISSING}{metric}: the job returned {value!r}, not a number or a dict holding it",
        )
    if not math.isfinite(number):
        return Outcome(TrialState.FAIL, reason=f"{metric} is {number}")
    return Outcome(TrialState.COMPLETE, number, label=label)


def _counted(study: optuna.Study) -> int:
    """Finished trials that count towards n_trials: all but those stopped without a verdict."""
    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and ATTR_STOPPED not in t.user_attrs
    )


def _name_objective(study: optuna.Study, metric: str) -> None:
    """The study's objective named after the metric (`study.metric_names`), so that
    optuna-dashboard and Optuna's plots say `val/acc` rather than "Objective 0"."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # "experimental" API
        study.set_metric_names([metric])


def _fail_abandoned(study: optuna.Study) -> None:
    """Trials left RUNNING by a sweep that was killed: FAIL, not counted (their jobs rerun as new trials)."""
    running: Sequence[FrozenTrial] = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in running:
        Trial(study, t._trial_id).set_user_attr(ATTR_STOPPED, "abandoned")
        study.tell(t.number, state=TrialState.FAIL)
        log.warning("trial %d was left running by an earlier sweep: marked FAIL", t.number)


def write_plots(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Optuna's matplotlib plots of the study, as PNGs; one Optuna cannot draw is skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.visualization import matplotlib as vis

    n_complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    written = []
    for name in PLOTS:
        if name == "param_importances" and n_complete < 2:
            log.info("no %s plot: it needs 2 complete trials, the study has %d", name, n_complete)
            continue
        # Optuna's default importance evaluator, seeded: the same study draws the same plot.
        kw: dict[str, Any] = (
            {"evaluator": FanovaImportanceEvaluator(seed=0)} if name == "param_importances" else {}
        )
        if name == "optimization_history" and study.metric_names:
            kw["target_name"] = study.metric_names[0]  # the others read the name from the study
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "experimental" warnings of the matplotlib backend
                ax = getattr(vis, f"plot_{name}")(study, **kw)
        except Exception as e:
            log.info("no %s plot: %s", name, e)
            continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    log.info("plots: %s", ", ".join(p.name for p in written) or "none")
    return written
