"""run(cfg): the run flow -- typed config, data, context, technique.run(ctx), metrics.

Kept apart from the Hydra entry point (cli/) so tests and notebooks can call it with a
config composed any way they like. What a technique may use is in context.py; what a run
writes besides checkpoints is in outputs.py; reading finished runs back is in loading/.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from .. import techniques  # noqa: F401  (fills registry.TECHNIQUES: every technique registers itself)
from ..config import typed
from ..config.checks import check, check_options
from ..config.ranges import validate
from ..data import as_float
from ..parallel import distributed, launch
from ..registry import TECHNIQUES, Technique
from ..training.logger import RunLogger
from ..training.state import NonFiniteLossError
from .context import RunContext, load_resume, load_resume_auto
from .environment import (
    check_writable,
    choices,
    command_line_groups,
    group_choice,
    hydra_output_dir,
    resolve_device,
    seed_everything,
)
from .outputs import (
    finished_metrics,
    headline,
    hparams,
    is_final,
    print_summary,
    process_start_time,
    save_json,
    write_env,
)

log = logging.getLogger("pdl_experiments")

EpochHook = Callable[[int, dict[str, float]], None]


def run(
    cfg: DictConfig,
    run_dir: str | Path | None = None,
    stop_file: Path | None = None,
    epoch_hooks: Sequence[EpochHook] = (),
) -> dict[str, float]:
    """Run one experiment; returns (and writes to metrics.json) its final metrics.

    `stop_file`: a sweep's stop request (sweeps/stop.py), polled while training;
    `epoch_hooks`: called on rank 0 after each epoch (an Optuna trial's, sweeps/hpo.py).
    """
    threads = torch.get_num_threads()
    try:
        metrics = _run(cfg, run_dir, stop_file, epoch_hooks)
    except BaseException as e:
        failed = launch.shutdown(e)  # under DDP: no process outlives the run
        if failed is not None:  # another rank failed first: its error is the run's
            raise failed from e
        raise
    else:
        failed = launch.shutdown()
        if failed is not None:
            raise failed
        return metrics
    finally:
        # trainer.num_threads is torch's process-wide setting: give it back, so the next job
        # of a sweep in this process (or the caller of run()) gets its own choice.
        torch.set_num_threads(threads)


def _run(
    cfg: DictConfig, run_dir: str | Path | None, stop_file: Path | None, epoch_hooks: Sequence[EpochHook]
) -> dict[str, float]:
    t_start = time.perf_counter()
    cfg, technique, run_dir, device = _preflight(cfg, run_dir)
    # trainer.devices=N, torchrun, SLURM: this process's rank, rank 0's run dir, its device.
    run_dir, device = launch.setup(cfg, run_dir, device, stop_file, entry=_worker_entry)
    done, resume = distributed.from_main(lambda: _resume_state(cfg, run_dir))
    if done is not None:
        if distributed.is_main():
            log.info("run dir %s: finished before, not rerun (trainer.resume=auto)", run_dir)
            print_summary(cfg, run_dir, done)
        return done

    seed_everything(int(cfg.seed))
    from hydra.utils import instantiate

    with distributed.main_first():  # a download happens once
        data = instantiate(cfg.dataset, _convert_="all").to(device)
    # Resumed, the event file purges what the interrupted run logged after its checkpoint,
    # so TensorBoard never draws two overlapping histories. Under DDP rank 0 alone logs.
    logger = (
        RunLogger(
            run_dir,
            purge_step=resume["loop"]["global_step"] if resume is not None else None,
            settings=cfg.logger,  # the backends of the `logger` group
            params=hparams(cfg),
        )
        if distributed.is_main()
        else None
    )
    ctx = RunContext(cfg, run_dir, data, device, logger, resume, stop_file)
    if logger is not None:  # rank 0's hooks (an Optuna trial's report and pruning); a StopRun reaches all
        ctx.trainer.epoch_hooks.extend(epoch_hooks)
    _announce(ctx, run_dir, device)

    ctx.state.install_signal_handlers()
    try:
        try:
            metrics = dict(technique.run(ctx))
        except NonFiniteLossError as e:
            if str(cfg.trainer.on_divergence) != "chance":
                raise
            metrics = diverged_metrics(data.info, e)
        if str(cfg.trainer.on_divergence) == "chance":
            metrics.setdefault("run/diverged", 0.0)
        metrics.update(ctx.debug.metrics())  # the overfit check's verdict, the profile (debug.py)
    finally:
        ctx.debug.close()
        if logger is not None:
            logger.flush()
    return _finish(ctx, technique, metrics, t_start)


def _preflight(
    cfg: DictConfig, run_dir: str | Path | None
) -> tuple[DictConfig, Technique, Path, torch.device]:
    """Everything that can be refused, refused before any data is loaded or process started:
    types, ranges, the run directory, the device, what goes with what, every `_target_`
    group's options."""
    cfg = typed(cfg)  # types and enums checked (ConfigError naming the key), before any work
    validate(cfg)
    run_dir = Path(run_dir) if run_dir is not None else hydra_output_dir()
    check_writable(run_dir)
    if cfg.trainer.num_threads > 0:
        torch.set_num_threads(int(cfg.trainer.num_threads))
    if cfg.trainer.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    device = resolve_device(cfg.trainer.device)
    technique = TECHNIQUES[str(cfg.technique)].obj
    check(cfg, technique, choices(), command_line_groups(), outside=launch.external_launch())
    groups = ("dataset", "optimizer", "scheduler")
    for group in groups if technique.needs.model is None else ("model", *groups):
        if cfg.get(group) is not None:
            check_options(cfg[group], group)
    return cfg, technique, run_dir, device


def _worker_entry(cfg: DictConfig, run_dir: str, stop_file: Path | None) -> None:
    """What ranks 1..N-1 of `trainer.devices=N` run (launch.py starts them with it)."""
    run(cfg, run_dir, stop_file)


def _announce(ctx: RunContext, run_dir: Path, device: torch.device) -> None:
    """env.json, the config as text, the log's first lines, the augmentation preview (rank 0)."""
    cfg, data, logger = ctx.cfg, ctx.data, ctx.logger
    if logger is not None:
        write_env(run_dir, device, distributed.describe())
        logger.text("config", "```\n" + ctx.state.config_yaml + "\n```")
    log.info("run dir: %s", run_dir)
    log.info(
        "technique=%s model=%s dataset=%s device=%s  %s",
        cfg.technique,
        group_choice("model"),
        data.info.name,
        device,
        " ".join(f"{k}={v}" for k, v in data.sizes().items()),  # after trainer.limit_*_batches
    )
    if ctx.augment is not None and cfg.augmentation.grid and logger is not None:
        x = as_float(data.train[0][:32])  # the training split may be uint8 (or streamed)
        ctx.log_images("augmentation/original", x)
        # The preview draws from the global RNG: on a forked state, so it changes nothing of
        # the run (the same initial weights with the grid on or off).
        with torch.random.fork_rng(devices=[]):
            ctx.log_images("augmentation/augmented", ctx.augment(x))


def _finish(
    ctx: RunContext, technique: Technique, metrics: dict[str, Any], t_start: float
) -> dict[str, float]:
    """The run's timings added; on rank 0 metrics.json, the HPARAMS row and the summary."""
    metrics.setdefault("train/time_s", ctx.train_time_s)
    metrics["run/wall_s"] = time.perf_counter() - t_start
    started = process_start_time()
    if ctx.first_step_at is not None and started is not None:
        metrics["run/time_to_first_step_s"] = ctx.first_step_at - started
    out = {k: float(v) for k, v in metrics.items()}
    logger = ctx.logger
    if logger is None:  # not rank 0: it writes
        return out
    save_json(out, ctx.run_dir / "metrics.json")
    final = {k: v for k, v in out.items() if is_final(k)}
    logger.hparams(hparams(ctx.cfg), headline(out, technique.headline), step=ctx.global_step, final=final)
    logger.close()
    print_summary(ctx.cfg, ctx.run_dir, out)
    return out


def diverged_metrics(info, err: Exception) -> dict[str, float]:
    """trainer.on_divergence=chance: a run whose loss or weights went non-finite ends as a
    finished run that scored chance, so a sweep counts it (a too-high learning rate is a
    result, not a missing job). Set, not measured: a NaN network has no prediction to score
    (argmax over NaN logits picks class 0, an accident of the kernel). Accuracies only, of an
    image classifier's test and val splits; the technique's other metrics are absent."""
    log.warning("run diverged (%s): test/acc and val/acc set to chance, run/diverged=1", err)
    metrics = {"run/diverged": 1.0}
    if info.kind == "image" and info.num_classes > 0:
        metrics["test/acc"] = metrics["val/acc"] = 1.0 / info.num_classes
    return metrics


def _resume_state(cfg: DictConfig, run_dir: Path) -> tuple[dict[str, float] | None, dict | None]:
    """(metrics of a run that finished in run_dir before, None), or (None, the checkpoint to
    resume from, or None for a fresh start)."""
    if str(cfg.trainer.resume) == "auto":  # this run's own directory: done, resumable or new
        done = finished_metrics(run_dir)
        if done is not None:
            return done, None
        return None, load_resume_auto(cfg, run_dir / "checkpoints")
    return None, load_resume(cfg, str(cfg.trainer.resume)) if cfg.trainer.resume else None
