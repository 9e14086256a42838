"""One training loop for every technique.

A technique hands the trainer a `Task` (training/task.py): an nn.Module that owns its
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

from ..parallel import distributed
from . import speed
from .checkpoint import FORMAT_VERSION, capture_rng, restore_rng, save_atomic
from .progress import Progress
from .state import FitResult, Interrupted, LoopState, NonFiniteLossError, PhaseRun, RunState, StopRun

if TYPE_CHECKING:
    from .task import Task

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
        fit = self._begin(task, train_loader, val_loader, phase, max_epochs, monitor, mode, resume)
        if resume is not None and self._resume(fit, resume):
            self._finish_phase(fit, save=False)  # the phase had ended: its best weights, no training
        else:
            self._run_epochs(fit)
            self._finish_phase(fit, save=True)
        self.train_time_s += fit.result.time_s
        return fit.result

    # ------------------------------------------------------------------ the loop, step by step
    def _begin(self, task, train_loader, val_loader, phase, max_epochs, monitor, mode, ckpt) -> PhaseRun:
        """The task on its device with its optimizers and schedulers; the phase's loop state."""
        cfg = self.cfg
        if ckpt is not None:  # e.g. pruned shapes: before the optimizers take the parameters
            task.restore_architecture(ckpt["task"])
        task.to(self.device)
        speed.prepare(task, cfg)  # trainer.channels_last, trainer.compile (speed.py)
        self.optimizers = dict(task.configure_optimizers(self.make_optimizer))
        schedulers = {}
        if self.make_scheduler is not None:
            schedulers = {n: self.make_scheduler(o) for n, o in self.optimizers.items()}
        return PhaseRun(
            task=task,
            train_loader=train_loader,
            val_loader=val_loader,
            phase=phase,
            max_epochs=cfg.max_epochs if max_epochs is None else max_epochs,
            monitor=cfg.monitor if monitor is None else monitor,
            sign=1.0 if str(mode or cfg.mode) == "max" else -1.0,
            schedulers=schedulers,
            loop=LoopState(global_step=self.global_step),
            result=FitResult(phase=phase),
        )

    def _resume(self, fit: PhaseRun, ckpt: dict) -> bool:
        """Weights, optimizers, schedulers, loop and RNG from a checkpoint of this phase;
        True when the phase had already ended (its result is filled in)."""
        fit.task.load_state_dict(ckpt["task"])
        for n, o in self.optimizers.items():
            o.load_state_dict(ckpt["optimizers"][n])
        for n, s in fit.schedulers.items():
            s.load_state_dict(ckpt["schedulers"][n])
        fit.loop = LoopState.from_dict(ckpt["loop"])
        self.global_step = fit.loop.global_step
        fit.best_state = ckpt.get("best_state")
        restore_rng(distributed.own_rng(ckpt))
        st = fit.loop
        log.info(
            "resumed phase %r at epoch %d, batch %d, step %d", fit.phase, st.epoch, st.batch, st.global_step
        )
        if not ckpt.get("phase_complete"):
            return False
        fit.result.val = ckpt.get("val", {})
        return True

    def _run_epochs(self, fit: PhaseRun) -> None:
        """Epoch after epoch until max_epochs, early stopping, a stop request or a hook's StopRun."""
        # Under DDP the step goes through DistributedDataParallel, rebuilt every phase (a
        # pruned architecture is a new set of parameters); one process: the task's own step.
        fit.step = distributed.wrap_step(
            fit.task, self.optimizers, self.device, bool(getattr(self.cfg, "sync_bn", False))
        )
        fit.gen = getattr(fit.train_loader, "generator", None)
        bars = str(self.cfg.progress) if distributed.is_main() else "none"  # under DDP rank 0 shows it
        fit.progress = Progress(bars, fit.phase, fit.max_epochs, len(fit.train_loader))
        fit.last_save = time.monotonic()
        try:
            while fit.loop.epoch < fit.max_epochs:
                epoch = fit.loop.epoch + 1
                self.epoch = epoch
                logs = self._train_epoch(fit, epoch)
                logs = self._validate(fit, epoch, logs)
                if self._end_epoch(fit, epoch, logs):
                    break
        finally:
            fit.progress.close()

    def _train_epoch(self, fit: PhaseRun, epoch: int) -> dict[str, float]:
        """One pass over the training loader (from the batch a resume left off at); the
        epoch's train/ means, its time and throughput, the learning rates."""
        st, task, step = fit.loop, fit.task, fit.step
        assert step is not None  # set by _run_epochs
        if fit.gen is not None:
            # The epoch's order comes from the generator state at its start; saving that state
            # lets a resume replay the same order and skip the batches already done.
            if st.epoch_gen_state is None:
                st.epoch_gen_state = fit.gen.get_state()
            else:
                fit.gen.set_state(st.epoch_gen_state)
        fit.progress.start_epoch(epoch, st.batch)
        task.train()
        # Per-step outputs, detached, reduced once at the end of the epoch: a running sum
        # would cost a few tensor ops per step (~1% of a small CPU step).
        outs: dict[str, list[torch.Tensor]] = {}
        sizes: list[int] = []
        checked = 0  # losses up to this index are known to be finite
        t0 = time.perf_counter()
        for batch in fit.train_loader.iter_from(st.batch):
            with self.autocast():
                out = step(batch, self)
            loss = out["loss"]
            if not task.manual_optimization:
                self.optimize(loss)
            if self.first_step_at is None:
                self.first_step_at = time.time()
            st.batch += 1
            st.global_step += 1
            self.global_step = st.global_step
            if self.step_hooks:
                for step_hook in self.step_hooks:
                    step_hook(self.global_step, out)
            sizes.append(len(batch[1]))
            for k, v in out.items():
                outs.setdefault(k, []).append(v.detach() if torch.is_tensor(v) else torch.tensor(float(v)))
            if st.global_step % self._log_every == 0:
                checked = self._check_finite(outs["loss"], checked, epoch, st.global_step, fit.phase)
                if self.logger is not None:
                    self.logger.scalars({"train/loss_step": loss.item()}, st.global_step)
            fit.progress.advance_batch()
            if distributed.agree_stop(self.state):  # under DDP: any rank's request, at the same step
                st.elapsed += time.perf_counter() - t0
                raise self._stop_at_signal(fit, epoch)
        if "loss" in outs:
            self._check_finite(outs["loss"], checked, epoch, st.global_step, fit.phase)
        distributed.sync_buffers(task)  # under DDP: rank 0's BN statistics on every rank
        self._check_weights(task, epoch, st.global_step, fit.phase)
        train_time = time.perf_counter() - t0
        st.elapsed += train_time
        st.batch = 0
        st.epoch = epoch
        if fit.gen is not None:
            st.epoch_gen_state = fit.gen.get_state()  # where the next epoch starts
        for s in fit.schedulers.values():
            s.step()
        return self._train_logs(outs, sizes, train_time)

    def _train_logs(self, outs: dict[str, list[torch.Tensor]], sizes: list[int], train_time: float) -> dict:
        """An epoch's train/<key> means (weighted by batch size), time, throughput, learning rates."""
        seen = sum(sizes)
        weights = torch.tensor(sizes, dtype=torch.float32)  # batch sizes: a sample-weighted mean
        logs = {
            f"train/{k}": (torch.stack(v).float() @ weights.to(v[0].device)).item() / max(seen, 1)
            for k, v in outs.items()
        }
        logs["train/epoch_time_s"] = train_time
        logs["train/samples_per_s"] = distributed.all_sum(seen) / max(train_time, 1e-9)
        for n, o in self.optimizers.items():
            logs["lr" if n == "default" else f"lr/{n}"] = o.param_groups[0]["lr"]
        return logs

    def _validate(self, fit: PhaseRun, epoch: int, logs: dict[str, float]) -> dict[str, float]:
        """The epoch's val/ metrics and the task's own end-of-epoch scalars, logged."""
        if fit.val_loader is not None:
            fit.result.val = {f"val/{k}": v for k, v in self.evaluate(fit.task, fit.val_loader).items()}
            logs.update(fit.result.val)
        logs.update(fit.task.on_epoch_end(self, epoch) or {})
        logs = distributed.broadcast(logs)  # under DDP every rank decides on rank 0's numbers
        if self.logger is not None:
            self.logger.scalars(logs, fit.loop.global_step)
        return logs

    def _end_epoch(self, fit: PhaseRun, epoch: int, logs: dict[str, float]) -> bool:
        """Keep the best, run the epoch hooks, obey a stop, checkpoint; True to stop early."""
        st = fit.loop
        value = logs.get(fit.monitor)
        if value is not None and math.isfinite(value):
            if st.best is None or fit.sign * value > fit.sign * st.best:
                st.best, st.best_epoch, st.bad_epochs = value, epoch, 0
                fit.best_state = _clone_state(fit.task)
            else:
                st.bad_epochs += 1
        shown = {k: logs[k] for k in ("train/loss", fit.monitor) if k in logs}
        fit.progress.end_epoch(epoch, fit.max_epochs, "  ".join(f"{k}={v:.4f}" for k, v in shown.items()))
        try:
            # On rank 0 only under DDP; a StopRun reaches every rank.
            distributed.from_main(functools.partial(self._run_epoch_hooks, epoch, logs))
        except StopRun as e:
            self._save_last(fit, complete=False)
            e.phase, e.epoch = fit.phase, epoch
            raise
        if distributed.agree_stop(self.state):
            raise self._stop_at_signal(fit, epoch)
        if self.cfg.keep > 0:
            self._save_snapshot(fit)
        if distributed.broadcast(time.monotonic() - fit.last_save > self.cfg.checkpoint_interval_s):
            self._save_last(fit, complete=False)
            fit.last_save = time.monotonic()
        patience = self.cfg.early_stopping_patience
        if 0 < patience <= st.bad_epochs:
            log.info(
                "early stopping at epoch %d (%s did not improve for %d epochs)",
                epoch,
                fit.monitor,
                st.bad_epochs,
            )
            fit.result.stopped_early = True
            return True
        return False

    def _stop_at_signal(self, fit: PhaseRun, epoch: int) -> Interrupted:
        """last.pt at the step reached when the signal (or a sweep's stop request) came, a log
        line saying where (epoch = epochs done, batch = batches done in the next, as the
        resume line says it), and the exception that ends the run."""
        self._save_last(fit, complete=False)
        signum = self.state.stop_signal or signal.SIGTERM
        st = fit.loop
        if distributed.is_main():
            log.warning(
                "%s: saved last.pt in phase %r at epoch %d, batch %d, step %d",
                signal.Signals(signum).name,
                fit.phase,
                st.epoch,
                st.batch,
                st.global_step,
            )
        return Interrupted(signum, fit.phase, epoch)

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
                at = f"epoch {epoch}, step {step - (len(pending) - 1 - i)} (phase {phase})"
                raise NonFiniteLossError.diverged(f"loss ({pending[i].item()}) at {at}")
        return len(losses)

    @staticmethod
    @torch.no_grad()
    def _check_weights(task: nn.Module, epoch: int, step: int, phase: str) -> None:
        """The epoch's last update can leave inf/NaN weights behind a finite loss: say so
        here, before validation or a diagnostic meets them (one device sync per epoch)."""
        params = [p for p in task.parameters() if p.is_floating_point()]
        if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            raise NonFiniteLossError.diverged(f"weights after epoch {epoch}, step {step} (phase {phase})")

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
    def _finish_phase(self, fit: PhaseRun, *, save: bool) -> None:
        """The phase's result; the task back on its best weights; last.pt and best.pt."""
        st, result = fit.loop, fit.result
        result.epochs, result.time_s = st.epoch, st.elapsed
        result.best_value, result.best_epoch = st.best, st.best_epoch
        if fit.best_state is not None:
            fit.task.load_state_dict(fit.best_state)  # end the phase on the best weights
        if save:
            self._save_last(fit, complete=True, val=result.val)
            self.save_best(fit.task, fit.phase, st.best_epoch, st.best)
            distributed.barrier()  # rank 0's files are there for every rank's next step

    def _payload(
        self, fit: PhaseRun, *, complete: bool, val: dict | None = None, rngs: list | None = None
    ) -> dict:
        payload = {
            "format": FORMAT_VERSION,
            "technique": self.state.technique,
            "config": self.state.config_yaml,
            "phase": fit.phase,
            "phase_complete": complete,
            "phases_done": list(self.state.phases_done),
            "loop": fit.loop.to_dict(),
            "task": fit.task.state_dict(),
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in fit.schedulers.items()},
            "best_state": fit.best_state,
            "rng": capture_rng() if rngs is None else rngs[0],
            "val": dict(val or {}),
            "extra": self.state.extra,
        }
        if rngs is not None and len(rngs) > 1:
            payload["rng_ranks"] = rngs  # under DDP each rank resumes its own random stream
        return payload

    def _save_last(self, fit: PhaseRun, *, complete: bool, val: dict | None = None) -> None:
        rngs = distributed.gather(capture_rng())  # every rank takes part; rank 0 writes
        if distributed.is_main():
            save_atomic(self._payload(fit, complete=complete, val=val, rngs=rngs), self.ckpt_dir / "last.pt")

    def _save_snapshot(self, fit: PhaseRun) -> None:
        path = self.ckpt_dir / f"{fit.phase}_epoch{fit.loop.epoch:04d}.pt"
        rngs = distributed.gather(capture_rng())
        if not distributed.is_main():
            return
        save_atomic(self._payload(fit, complete=False, rngs=rngs), path)
        snaps = sorted(self.ckpt_dir.glob(f"{fit.phase}_epoch*.pt"))
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
