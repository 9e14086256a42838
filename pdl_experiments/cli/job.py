"""One job of pdl-run (the Hydra task): the run, and the outcome it leaves for the sweep
around it in the job's `status.json` (ok, failed, interrupted, pruned, skipped)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from .messages import one_line

log = logging.getLogger("pdl_experiments")

STATUS_FILE = "status.json"


def run_job(cfg: DictConfig, errors: list[BaseException]) -> Any:
    """Run the job Hydra composed; a single run's exception goes to `errors` (main() reports
    it as one line), a sweep job's is recorded in its status.json and the sweep goes on."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from ..parallel.distributed import is_main
    from ..parallel.launch import external_launch
    from ..run import run
    from ..run.outputs import save_json as write_json
    from ..sweeps import hpo, stop
    from ..training import Interrupted, StopRun
    from ..training.state import hand_on, requeue_signal, requeued_by_slurm

    def save_json(obj: Any, path: Path) -> None:
        if is_main():  # under DDP rank 0 alone writes (another rank's own Hydra dir is gone)
            write_json(obj, path)

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    sweep_dir = Path(HydraConfig.get().sweep.dir) if multirun else None
    if sweep_dir is not None and stop.stop_requested(sweep_dir) is not None:
        stop.skip_job(out_dir)  # the sweep was told to stop: this job never starts
        return {"status": "skipped"}
    outside = external_launch()
    trial = hpo.epoch_hook() if outside is None or outside["rank"] == 0 else None  # an Optuna trial's
    try:
        metrics = run(
            cfg,
            out_dir,
            stop_file=stop.stop_file(sweep_dir) if sweep_dir else None,
            epoch_hooks=[trial] if trial is not None else (),
        )
    except Interrupted as e:
        if sweep_dir is None:
            errors.append(e)
            return None
        if requeued_by_slurm():  # its node went DOWN: SLURM runs it again, that attempt reports
            log.warning(
                "%s: SLURM requeued this job (its node went down); it %s when it runs again",
                e.signame,
                "resumes from last.pt"
                if str(cfg.trainer.resume) == "auto"
                else "starts over (no trainer.resume=auto)",
            )
            raise SystemExit(128 + e.signum) from None  # no outcome: submitit waits for the next attempt's
        requeued = e.signum == requeue_signal()  # SLURM's time limit: submitit requeues this job
        # One signal stops the whole sweep: no further job starts (see sweeps/stop.py).
        if is_main() and not requeued:
            stop.request_stop(sweep_dir, e.signum)
        save_json(
            {"status": "interrupted", "phase": e.phase, "epoch": e.epoch, "signal": e.signame},
            out_dir / STATUS_FILE,
        )
        if requeued:
            if str(cfg.trainer.resume) != "auto":
                log.warning("the requeued job will start over: add trainer.resume=auto to continue it")
            hand_on(e.signum)  # submitit requeues the job and exits (rank 0; other ranks go on)
        return {"status": "interrupted"}
    except StopRun as e:  # ended early by an epoch hook: an Optuna trial pruned (sweeps/hpo.py)
        if sweep_dir is None:
            errors.append(e)
            return None
        stopped = {"status": e.status, "phase": e.phase, "epoch": e.epoch, "reason": str(e)}
        save_json(stopped, out_dir / STATUS_FILE)
        return stopped
    except Exception as e:
        if not multirun:
            errors.append(e)
            return None
        # In a sweep one failed job must not stop the others: record it, let the sweep go
        # on; the sweep summary marks the job failed and pdl-run exits non-zero at the end.
        msg = one_line(e)
        log.error("job failed: %s", msg)
        save_json({"status": "failed", "error": msg}, out_dir / STATUS_FILE)
        return {"status": "failed", "error": msg}
    save_json({"status": "ok"}, out_dir / STATUS_FILE)
    return metrics
