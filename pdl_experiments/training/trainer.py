"""One training loop for every technique.

A technique hands the trainer a `Task` (techniques/base.py): an nn.Module that owns its
networks, builds its optimizer(s), and whose `training_step` returns a dict with `loss`
(everything else in it is logged). The trainer owns everything around the step: device,
mixed precision, epochs, evaluation, best-model tracking, LR schedules, gradient clipping,
early stopping, checkpoints, signals, logging and progress. It knows no technique by name.
Tasks with several optimizers (GAN, DARTS) set `manual_optimization = True` and call
`trainer.optimize(loss, name)` from their step for each update.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .. import distributed
from . import speed
from .checkpoint import FORMAT_VERSION, capture_rng, restore_rng, save_atomic
from .progress import Progress
from .state import FitResult, Interrupted, NonFiniteLossError, RunState, StopRun

if TYPE_CHECKING:
    from ..techniques.base import Task

log = logging.getLogger("pdl_experiments")


class Trainer:
    def __init__(
        self,
        cfg: Any,  # TrainerConfig
        device: torch.device,
        run_state: RunState,
        ckpt_dir: Path,
        make_optimizer: Callable[..., torch.optim.Optimizer],
        make_scheduler: Callable[..., Any] | None = None,
        logger: Any = None,  # RunLogger
    ):
        self.cfg = cfg
        self.device = device
        self.state = run_state
        self.ckpt_dir = Path(ckpt_dir)
        self.make_optimizer = make_optimizer
        self.make_scheduler = make_scheduler
        self.logger = logger
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.global_step = 0  # runs on across phases so TensorBoard curves never overlap
        self.epoch = 0
        self.train_time_s = 0.0  # all phases' training time
        self.first_step_at: float | None = None  # time.time() after the first step
        # Called as hook(epoch, logs) after each epoch's validation and best-model tracking
        # (logs: that epoch's train/ and val/ scalars); a hook may raise StopRun to end the run.
        self.epoch_hooks: list[Callable[[int, dict[str, float]], None]] = []
        # Called as hook(global_step, out) after each training step (out: what the task's
        # training_step returned); the debug tools' profiler and overfit check (debug.py).
        self.step_hooks: list[Callable[[int, dict[str, Any]], None]] = []
        self._use_amp = device.type == "cuda" and cfg.amp
        # The losses are checked for NaN/inf together, once per log interval and at the end of
        # every epoch (a check is a device sync on CUDA and ~10 us of op overhead on CPU); the
        # error still names the exact step where the loss first went non-finite.
        # Read once: an OmegaConf attribute access costs ~10 us, too much for every step.
        self._log_every = int(cfg.log_every_n_steps)
        self._grad_clip = float(cfg.grad_clip)

    # ------------------------------------------------------------------ public API
    def autocast(self):
        if self._use_amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def optimize(self, loss: torch.Tensor, name: str = "default") -> None:
        """zero_grad -> backward -> clip -> step for one of the task's optimizers."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self._grad_clip > 0:
            params = [p for g in opt.param_groups for p in g["params"]]
            nn.utils.clip_grad_norm_(params, self._grad_clip)
        opt.step()

    def fit(
        self,
        task: Task,
        train_loader: Any,
        val_loader: Any = None,
        phase: str = "train",
        max_epochs: int | None = None,
        monitor: str | None = None,
        mode: str | None = None,
        resume: dict | None = None,
    ) -> FitResult:
        """Train one phase; `resume`: a checkpoint taken in this phase, to continue from."""
        result = self._fit(task, train_loader, val_loader, phase, max_epochs, monitor, mode, resume)
        self.train_time_s += result.time_s
        return result

    def _fit(self, task, train_loader, val_loader, phase, max_epochs, monitor, mode, ckpt) -> FitResult:
        cfg = self.cfg
        max_epochs = cfg.max_epochs if max_epochs is None else max_epochs
        monitor = cfg.monitor if monitor is None else monitor
        sign = 1.0 if str(mode or cfg.mode) == "max" else -1.0
        if ckpt is not None:  # e.g. pruned shapes: before the optimizers take the parameters
            task.restore_architecture(ckpt["task"])
        task.to(self.device)
        speed.prepare(task, cfg)  # trainer.channels_last, trainer.compile (speed.py)
        self.optimizers = dict(task.configure_optimizers(self.make_optimizer))
        schedulers = {}
        if self.make_scheduler is not None:
            schedulers = {n: self.make_scheduler(o) for n, o in self.optimizers.items()}
        result = FitResult(phase=phase)
        # The loop's state: saved in every checkpoint as "loop", restored on resume.
        st: dict[str, Any] = {
            "epoch": 0,
            "batch": 0,
            "global_step": self.global_step,
            "best": None,
            "best_epoch": 0,
            "bad_epochs": 0,
            "elapsed": 0.0,
            "epoch_gen_state": None,
        }
        best_state = None

        if ckpt is not None:
            task.load_state_dict(ckpt["task"])
            for n, o in self.optimizers.items():
                o.load_state_dict(ckpt["optimizers"][n])
            for n, s in schedulers.items():
                s.load_state_dict(ckpt["schedulers"][n])
            st.update(ckpt["loop"])
            self.global_step = st["global_step"]
            best_state = ckpt.get("best_state")
            restore_rng(distributed.own_rng(ckpt))
            log.info(
                "resumed phase %r at epoch %d, batch %d, step %d",
                phase,
                st["epoch"],
                st["batch"],
                st["global_step"],
            )
            if ckpt.get("phase_complete"):
                result.epochs, result.time_s = st["epoch"], st["elapsed"]
                result.best_value, result.best_epoch = st["best"], st["best_epoch"]
                result.val = ckpt.get("val", {})
                self._finish_phase(task, phase, best_state, st, schedulers, result, save=False)
                return result

        # Under DDP the step goes through DistributedDataParallel, rebuilt every phase (a
        # pruned architecture is a new set of parameters); one process: the task's own step.
        step = distributed.wrap_step(task, self.optimizers, self.device, bool(getattr(cfg, "sync_bn", False)))
        gen = getattr(train_loader, "generator", None)
        n_batches = len(train_loader)
        bars = str(cfg.progress) if distributed.is_main() else "none"  # under DDP rank 0 shows it
        progress = Progress(bars, phase, max_epochs, n_batches)
        last_save = time.monotonic()
        try:
            while st["epoch"] < max_epochs:
                epoch = st["epoch"] + 1
                self.epoch = epoch
                if gen is not None:
                    # The epoch's order comes from the generator state at its start; saving
                    # that state lets a resume replay the same order and skip done batches.
                    if st["epoch_gen_state"] is None:
                        st["epoch_gen_state"] = gen.get_state()
                    else:
                        gen.set_state(st["epoch_gen_state"])
                progress.start_epoch(epoch, st["batch"])
                task.train()
                # Per-step outputs, detached, reduced once at the end of the epoch: a running
                # sum would cost a few tensor ops per step (~1% of a small CPU step).
                outs: dict[str, list[torch.Tensor]] = {}
                sizes: list[int] = []
                checked = 0  # losses up to this index are known to be finite
                seen = 0
                t0 = time.perf_counter()
                for batch in train_loader.iter_from(st["batch"]):
                    with self.autocast():
                        out = step(batch, self)
                    loss = out["loss"]
                    if not task.manual_optimization:
                        self.optimize(loss)
                    if self.first_step_at is None:
                        self.first_step_at = time.time()
                    st["batch"] += 1
                    st["global_step"] += 1
                    self.global_step = st["global_step"]
                    if self.step_hooks:
                        for step_hook in self.step_hooks:
                            step_hook(self.global_step, out)
                    n_samples = len(batch[1])
                    seen += n_samples
                    sizes.append(n_samples)
                    for k, v in out.items():
                        outs.setdefault(k, []).append(
                            v.detach() if torch.is_tensor(v) else torch.tensor(float(v))
                        )
                    if st["global_step"] % self._log_every == 0:
                        checked = self._check_finite(outs["loss"], checked, epoch, st["global_step"], phase)
                    if self.logger is not None and st["global_step"] % self._log_every == 0:
                        self.logger.scalars({"train/loss_step": loss.item()}, st["global_step"])
                    progress.advance_batch()
                    if distributed.agree_stop(self.state):  # under DDP: any rank's request, at the same step
                        st["elapsed"] += time.perf_counter() - t0
                        raise self._stop_at_signal(task, phase, st, schedulers, best_state, epoch)
                if "loss" in outs:
                    self._check_finite(outs["loss"], checked, epoch, st["global_step"], phase)
                distributed.sync_buffers(task)  # under DDP: rank 0's BN statistics on every rank
                self._check_weights(task, epoch, st["global_step"], phase)
                train_time = time.perf_counter() - t0
                st["elapsed"] += train_time
                st["batch"] = 0
                st["epoch"] = epoch
                if gen is not None:
                    st["epoch_gen_state"] = gen.get_state()  # where the next epoch starts
                for s in schedulers.values():
                    s.step()

                weights = torch.tensor(sizes, dtype=torch.float32)  # batch sizes: a sample-weighted mean
                logs = {
                    f"train/{k}": (torch.stack(v).float() @ weights.to(v[0].device)).item() / max(seen, 1)
                    for k, v in outs.items()
                }
                logs["train/epoch_time_s"] = train_time
                logs["train/samples_per_s"] = distributed.all_sum(seen) / max(train_time, 1e-9)
                for n, o in self.optimizers.items():
                    key = "lr" if n == "default" else f"lr/{n}"
                    logs[key] = o.param_groups[0]["lr"]
                if val_loader is not None:
                    result.val = {f"val/{k}": v for k, v in self.evaluate(task, val_loader).items()}
                    logs.update(result.val)
                logs.update(task.on_epoch_end(self, epoch) or {})
                logs = distributed.broadcast(logs)  # under DDP every rank decides on rank 0's numbers
                if self.logger is not None:
                    self.logger.scalars(logs, st["global_step"])

                value = logs.get(monitor)
                if value is not None and math.isfinite(value):
                    if st["best"] is None or sign * value > sign * st["best"]:
                        st["best"], st["best_epoch"], st["bad_epochs"] = value, epoch, 0
                        best_state = _clone_state(task)
                    else:
                        st["bad_epochs"] += 1
                shown = {k: logs[k] for k in ("train/loss", monitor) if k in logs}
                progress.end_epoch(epoch, max_epochs, "  ".join(f"{k}={v:.4f}" for k, v in shown.items()))
                try:
                    # On rank 0 only under DDP; a StopRun reaches every rank.
                    distributed.from_main(functools.partial(self._run_epoch_hooks, epoch, logs))
                except StopRun as e:
                    self._save_last(task, phase, st, schedulers, best_state, False)
                    e.phase, e.epoch = phase, epoch
                    raise

                if distributed.agree_stop(self.state):
                    raise self._stop_at_signal(task, phase, st, schedulers, best_state, epoch)
                if cfg.keep > 0:
                    self._save_snapshot(task, phase, st, schedulers, best_state)
                if distributed.broadcast(time.monotonic() - last_save > cfg.checkpoint_interval_s):
                    self._save_last(task, phase, st, schedulers, best_state, False)
                    last_save = time.monotonic()
                if 0 < cfg.early_stopping_patience <= st["bad_epochs"]:
                    log.info(
                        "early stopping at epoch %d (%s did not improve for %d epochs)",
                        epoch,
                        monitor,
                        st["bad_epochs"],
                    )
                    result.stopped_early = True
                    break
        finally:
            progress.close()

        result.epochs, result.time_s = st["epoch"], st["elapsed"]
        result.best_value, result.best_epoch = st["best"], st["best_epoch"]
        self._finish_phase(task, phase, best_state, st, schedulers, result, save=True)
        return result

    def _stop_at_signal(self, task, phase, st, schedulers, best_state, epoch) -> Interrupted:
        """last.pt at the step reached when the signal (or a sweep's stop request) came, a log
        line saying where (epoch = epochs done, batch = batches done in the next, as the
        resume line says it), and the exception that ends the run."""
        self._save_last(task, phase, st, schedulers, best_state, False)
        signum = self.state.stop_signal or signal.SIGTERM
        if distributed.is_main():
            log.warning(
                "%s: saved last.pt in phase %r at epoch %d, batch %d, step %d",
                signal.Signals(signum).name,
                phase,
                st["epoch"],
                st["batch"],
                st["global_step"],
            )
        return Interrupted(signum, phase, epoch)

    def _run_epoch_hooks(self, epoch: int, logs: dict[str, float]) -> None:
        for hook in self.epoch_hooks:
            hook(epoch, logs)

    @staticmethod
    def _check_finite(losses: list, checked: int, epoch: int, step: int, phase: str) -> int:
        """Raise on the first non-finite loss in losses[checked:] (the last one is `step`)."""
        pending = torch.stack(losses[checked:]) if len(losses) > checked else None
        if pending is not None:
            bad = ~torch.isfinite(pending.float())
            if bad.any():
                i = int(bad.nonzero()[0, 0])
                raise NonFiniteLossError(
                    f"non-finite loss ({pending[i].item()}) at epoch {epoch}, step "
                    f"{step - (len(pending) - 1 - i)} (phase {phase}); lower optimizer.lr or "
                    "set trainer.grad_clip"
                )
        return len(losses)

    @staticmethod
    @torch.no_grad()
    def _check_weights(task: nn.Module, epoch: int, step: int, phase: str) -> None:
        """The epoch's last update can leave inf/NaN weights behind a finite loss: say so
        here, before validation or a diagnostic meets them (one device sync per epoch)."""
        params = [p for p in task.parameters() if p.is_floating_point()]
        if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            raise NonFiniteLossError(
                f"non-finite weights after epoch {epoch}, step {step} (phase {phase}): the "
                "run diverged; lower optimizer.lr or set trainer.grad_clip"
            )

    @torch.no_grad()
    def evaluate(self, task: Task, loader: Any) -> dict[str, float]:
        was_training = task.training
        task.eval()
        try:
            with self.autocast():
                return task.evaluate(loader)
        finally:
            task.train(was_training)

    # ------------------------------------------------------------------ checkpoints
    def _finish_phase(self, task, phase, best_state, st, schedulers, result, save: bool) -> None:
        if best_state is not None:
            task.load_state_dict(best_state)  # end the phase on the best weights
        if save:
            self._save_last(task, phase, st, schedulers, best_state, True, result.val)
            self.save_best(task, phase, st["best_epoch"], st["best"])
            distributed.barrier()  # rank 0's files are there for every rank's next step

    def _payload(self, task, phase, st, schedulers, best_state, complete, val=None, rngs=None) -> dict:
        payload = {
            "format": FORMAT_VERSION,
            "technique": self.state.technique,
            "config": self.state.config_yaml,
            "phase": phase,
            "phase_complete": complete,
            "phases_done": list(self.state.phases_done),
            "loop": dict(st),
            "task": task.state_dict(),
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in schedulers.items()},
            "best_state": best_state,
            "rng": capture_rng() if rngs is None else rngs[0],
            "val": dict(val or {}),
            "extra": self.state.extra,
        }
        if rngs is not None and len(rngs) > 1:
            payload["rng_ranks"] = rngs  # under DDP each rank resumes its own random stream
        return payload

    def _save_last(self, task, phase, st, schedulers, best_state, complete, val=None) -> None:
        rngs = distributed.gather(capture_rng())  # every rank takes part; rank 0 writes
        if distributed.is_main():
            save_atomic(
                self._payload(task, phase, st, schedulers, best_state, complete, val, rngs),
                self.ckpt_dir / "last.pt",
            )

    def _save_snapshot(self, task, phase, st, schedulers, best_state) -> None:
        path = self.ckpt_dir / f"{phase}_epoch{st['epoch']:04d}.pt"
        rngs = distributed.gather(capture_rng())
        if not distributed.is_main():
            return
        save_atomic(self._payload(task, phase, st, schedulers, best_state, False, rngs=rngs), path)
        snaps = sorted(self.ckpt_dir.glob(f"{phase}_epoch*.pt"))
        for old in snaps[: -self.cfg.keep]:
            old.unlink(missing_ok=True)

    def save_best(self, task: nn.Module, phase: str, epoch: int, value: float | None) -> None:
        """best.pt: just what load_run needs (weights, config, technique state). Rank 0 writes it."""
        if not distributed.is_main():
            return
        save_atomic(
            {
                "format": FORMAT_VERSION,
                "technique": self.state.technique,
                "config": self.state.config_yaml,
                "phase": phase,
                "epoch": epoch,
                "monitor_value": value,
                "task": task.state_dict(),
                "extra": self.state.extra,
            },
            self.ckpt_dir / "best.pt",
        )


def _clone_state(module: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


__all__ = ["FitResult", "Interrupted", "NonFiniteLossError", "RunState", "StopRun", "Trainer"]
