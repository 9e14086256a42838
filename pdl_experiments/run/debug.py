"""Debugging tools for a run, switched on by trainer options (the `debug` presets,
configs/debug/, set them): the overfit check (`trainer.overfit_batches`) and the profiler
(`trainer.profiler`). The batch limits themselves are loaders (data/__init__.py:
`limit_batches`, `first_batches`) the run context applies; these tools only watch the
training steps, through the trainer's `step_hooks`, and name no technique.

The run context owns one `DebugTools` (`ctx.debug`); run/flow.py asks it for its metrics at the
end of the run and closes it whatever happens.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from pathlib import Path
from typing import Any

import torch

from ..parallel.distributed import is_main

log = logging.getLogger("pdl_experiments")

OVERFIT_TARGET = 0.05  # a training loss below this on the fixed batches: the model can learn
TRACE_FILE = "profile_trace.json"  # in the run dir: Perfetto (ui.perfetto.dev) or chrome://tracing
# torch.profiler's schedule: skip a step (lazy initialisation), warm up for two, record five.
PROFILE_WAIT, PROFILE_WARMUP, PROFILE_ACTIVE = 1, 2, 5
PROFILE_ROWS = 15


class OverfitCheck:
    """Per phase, the mean training loss over the last pass over the fixed batches, and the
    step at which it first went below OVERFIT_TARGET."""

    def __init__(self, n_batches: int):
        self.n_batches = n_batches
        self.phases: dict[str, dict[str, Any]] = {}
        self._current: dict[str, Any] | None = None

    def start_phase(self, phase: str, batches_per_epoch: int) -> None:
        window = max(1, batches_per_epoch)  # one pass over the fixed batches
        self._current = self.phases.setdefault(
            phase, {"losses": deque(maxlen=window), "steps": 0, "reached": None}
        )

    def __call__(self, step: int, out: dict[str, Any]) -> None:
        cur = self._current
        if cur is None or "loss" not in out:
            return
        losses = cur["losses"]
        loss = out["loss"]
        losses.append(float(loss.detach() if torch.is_tensor(loss) else loss))
        cur["steps"] += 1
        if cur["reached"] is None and len(losses) == losses.maxlen and _mean(losses) < OVERFIT_TARGET:
            cur["reached"] = cur["steps"]

    def metrics(self) -> dict[str, float]:
        """debug/overfit_* of the run's first trained phase (the model a recipe starts from);
        debug/overfit_final_loss/<phase> for each later one."""
        trained = [(name, p) for name, p in self.phases.items() if p["steps"] > 0]
        out: dict[str, float] = {}
        for i, (name, p) in enumerate(trained):
            final = _mean(p["losses"])
            ok = final < OVERFIT_TARGET
            if ok:
                verdict = f"below {OVERFIT_TARGET} from step {p['reached']}: the model can learn"
            else:
                verdict = (
                    f"NOT below {OVERFIT_TARGET}: train longer (trainer.max_epochs), raise "
                    "optimizer.lr, or look for a bug (labels, loss, frozen weights)"
                )
            log.info(
                "overfit check, phase %s (%d batches): training loss %.4g after %d steps, %s",
                name,
                self.n_batches,
                final,
                p["steps"],
                verdict,
            )
            if i == 0:
                out["debug/overfit_final_loss"] = final
                out["debug/overfit_ok"] = float(ok)
                # Steps until the loss went below the target (all the phase's steps if never).
                out["debug/overfit_steps"] = float(p["reached"] if ok and p["reached"] else p["steps"])
            else:
                out[f"debug/overfit_final_loss/{name}"] = final
        if not trained:
            log.warning("overfit check: no training step ran, nothing to report")
        return out


def _mean(values: Any) -> float:
    return sum(values) / max(len(values), 1)


class StepProfiler:
    """torch.profiler over the run's first training steps: after PROFILE_WAIT + PROFILE_WARMUP
    steps, PROFILE_ACTIVE are recorded; then the Chrome trace goes to <run dir>/TRACE_FILE and
    the top operators by self time (CPU, and CUDA on a GPU) to the log and to TensorBoard's
    TEXT tab (debug/profile)."""

    def __init__(self, run_dir: Path, logger: Any, device: torch.device):
        from torch.profiler import ProfilerActivity, profile, schedule

        self.path = Path(run_dir) / TRACE_FILE
        self.logger = logger
        self.cuda = device.type == "cuda"
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        self.table = ""
        self.events = 0
        self._steps = 0
        self._prof = profile(
            activities=activities,
            schedule=schedule(wait=PROFILE_WAIT, warmup=PROFILE_WARMUP, active=PROFILE_ACTIVE, repeat=1),
            on_trace_ready=self._ready,
        )
        self._prof.start()
        self._running = True

    def __call__(self, step: int, out: dict[str, Any]) -> None:
        if self._running:
            self._steps += 1
            self._prof.step()
            if self.table:  # the schedule's one cycle is over
                self.close()

    def _ready(self, prof: Any) -> None:
        prof.export_chrome_trace(str(self.path))
        trace = json.loads(self.path.read_text())  # {"traceEvents": [...], ...} (or a bare list)
        self.events = len(trace["traceEvents"] if isinstance(trace, dict) else trace)
        averages = prof.key_averages()
        tables = [
            "top operators by self CPU time\n"
            + averages.table(sort_by="self_cpu_time_total", row_limit=PROFILE_ROWS)
        ]
        if self.cuda:
            tables.append(
                "top operators by self CUDA time\n"
                + averages.table(sort_by="self_device_time_total", row_limit=PROFILE_ROWS)
            )
        self.table = "\n\n".join(tables)
        log.info(
            "profiler: %d training steps recorded, trace %s (open it in ui.perfetto.dev or "
            "chrome://tracing)\n%s",
            PROFILE_ACTIVE,
            self.path,
            self.table,
        )
        if self.logger is not None:
            self.logger.text("debug/profile", "\n\n".join(f"```\n{t}\n```" for t in tables))

    def close(self) -> None:
        """Stop profiling (a run shorter than the schedule still gets what was recorded)."""
        if not self._running:
            return
        self._running = False
        self._prof.stop()  # inside the recording steps: the trace of those is written
        if not self.table:
            log.warning(
                "profiler: the run trained %d steps, too few to record any (%d skipped and %d of "
                "warm-up come first): no %s",
                self._steps,
                PROFILE_WAIT,
                PROFILE_WARMUP,
                TRACE_FILE,
            )

    def metrics(self) -> dict[str, float]:
        """debug/profile_events: the events in the trace file (what Perfetto will show)."""
        return {"debug/profile_events": float(self.events)} if self.table else {}


class DebugTools:
    """The debug tools the run's trainer options switch on, hooked into its trainer."""

    def __init__(self, cfg: Any, run_dir: Path, trainer: Any, logger: Any, device: torch.device):
        self.overfit = OverfitCheck(int(cfg.trainer.overfit_batches)) if cfg.trainer.overfit_batches else None
        # Under DDP rank 0's steps are profiled (the others run the same ones).
        self.profiler = StepProfiler(run_dir, logger, device) if cfg.trainer.profiler and is_main() else None
        for tool in (self.profiler, self.overfit):
            if tool is not None:
                trainer.step_hooks.append(tool)

    def start_phase(self, phase: str, train_loader: Any) -> None:
        if self.overfit is not None:
            self.overfit.start_phase(phase, len(train_loader))

    def metrics(self) -> dict[str, float]:
        """debug/* metrics for metrics.json (and the summary), with their log lines."""
        out: dict[str, float] = {}
        if self.profiler is not None:
            self.profiler.close()
            out.update(self.profiler.metrics())
        if self.overfit is not None:
            out.update(self.overfit.metrics())
        return out

    def close(self) -> None:
        if self.profiler is not None:
            self.profiler.close()
