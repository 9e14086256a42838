"""Console entry points: pdl-run (Hydra), pdl-eval, pdl-report.

Nothing heavy is imported at module level: `pdl-run --help` and `pdl-run --cfg job` must
answer without loading torch.
"""

from __future__ import annotations

import gc

# Start-up (importing Hydra and OmegaConf, composing the config) allocates ~10^5 small
# objects and no garbage cycles worth collecting: the cyclic GC would run dozens of passes
# for nothing (~40 ms of a ~0.55 s `pdl-run --cfg job`). It is off while this module imports
# and while main() composes, and back on before a run does any work (_hydra_main).
_GC_WAS_ON = gc.isenabled()
gc.disable()

import json
import logging
import os
import re
import signal
import sys
import time

# When this launch began, for run/time_to_first_step_s (a caller may set it earlier).
os.environ.setdefault("PDL_T0", str(time.time()))
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from . import jobnames  # noqa: F401  (registers ${pdl.swept:}, the sweep job names)
from .pipes import quiet_closed_stdout

log = logging.getLogger("pdl_experiments")

CONFIG_MODULE = "pdl_experiments.configs"


def _use_libyaml() -> None:
    """Let OmegaConf read YAML with libyaml's C parser when PyYAML has it.

    OmegaConf builds its loader on the pure-Python yaml.SafeLoader; the config files of one
    run take ~30 ms to parse that way, a sixth of `pdl-run --cfg job`. This loader is
    OmegaConf's own in every other respect (the same implicit resolvers and constructors,
    the same duplicate-key check), with the scanning and parsing done in C; the composed
    configs are identical (checked byte for byte on `--cfg job` and `-c all` outputs).
    """
    import yaml

    if not getattr(yaml, "__with_libyaml__", False):
        return
    try:
        import omegaconf._utils as oc_utils

        base = oc_utils.get_yaml_loader()
        scalar_tag = yaml.resolver.BaseResolver.DEFAULT_SCALAR_TAG

        class OmegaConfCLoader(yaml.CSafeLoader):
            def construct_mapping(self, node, deep=False):
                keys = set()
                for key_node, _ in node.value:
                    if key_node.tag != scalar_tag:
                        continue
                    if key_node.value in keys:
                        raise yaml.constructor.ConstructorError(
                            "while constructing a mapping",
                            node.start_mark,
                            f"found duplicate key {key_node.value}",
                            key_node.start_mark,
                        )
                    keys.add(key_node.value)
                return super().construct_mapping(node, deep=deep)

        OmegaConfCLoader.yaml_implicit_resolvers = base.yaml_implicit_resolvers
        OmegaConfCLoader.yaml_constructors = dict(base.yaml_constructors)
        oc_utils.get_yaml_loader = lambda: OmegaConfCLoader
    except Exception:
        return


_use_libyaml()
STATUS_FILE = "status.json"
# A single run's exception, handed from the Hydra task to main() so it is reported as one
# line (raised inside the task, Hydra would print its own "Error executing job" first).
_run_error: list[BaseException] = []


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="config")
def _hydra_main(cfg: DictConfig) -> Any:
    gc.enable()
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from . import sweep
    from .distributed import is_main
    from .outputs import save_json as write_json
    from .run import run
    from .training import Interrupted, StopRun
    from .training.state import hand_on, requeue_signal

    def save_json(obj: Any, path: Path) -> None:
        if is_main():  # under DDP rank 0 alone writes (another rank's own Hydra dir is gone)
            write_json(obj, path)

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    sweep_dir = Path(HydraConfig.get().sweep.dir) if multirun else None
    if sweep_dir is not None and sweep.stop_requested(sweep_dir) is not None:
        sweep.skip_job(out_dir)  # the sweep was told to stop: this job never starts
        return {"status": "skipped"}
    try:
        metrics = run(cfg, out_dir, stop_file=sweep.stop_file(sweep_dir) if sweep_dir else None)
    except Interrupted as e:
        if sweep_dir is None:
            _run_error.append(e)
            return None
        requeued = e.signum == requeue_signal()  # SLURM's time limit: submitit requeues this job
        # One signal stops the whole sweep: no further job starts (see sweep.py).
        if is_main() and not requeued:
            sweep.request_stop(sweep_dir, e.signum)
        save_json(
            {"status": "interrupted", "phase": e.phase, "epoch": e.epoch, "signal": e.signame},
            out_dir / STATUS_FILE,
        )
        if requeued:
            if str(cfg.trainer.resume) != "auto":
                log.warning("the requeued job will start over: add trainer.resume=auto to continue it")
            hand_on(e.signum)  # submitit requeues the job and exits (rank 0; other ranks go on)
        return {"status": "interrupted"}
    except StopRun as e:  # ended early by an epoch hook: an Optuna trial pruned (hpo.py)
        if sweep_dir is None:
            _run_error.append(e)
            return None
        stopped = {"status": e.status, "phase": e.phase, "epoch": e.epoch, "reason": str(e)}
        save_json(stopped, out_dir / STATUS_FILE)
        return stopped
    except Exception as e:
        if not multirun:
            _run_error.append(e)
            return None
        # In a sweep one failed job must not stop the others: record it, let the sweep go
        # on; the sweep summary marks the job failed and pdl-run exits non-zero at the end.
        msg = one_line(e)
        log.error("job failed: %s", msg)
        save_json({"status": "failed", "error": msg}, out_dir / STATUS_FILE)
        return {"status": "failed", "error": msg}
    save_json({"status": "ok"}, out_dir / STATUS_FILE)
    return metrics


def main() -> None:
    """pdl-run: errors become one line on stderr (HYDRA_FULL_ERROR=1 for the traceback)."""
    quiet_closed_stdout()  # `pdl-run --help | head -1` ends quietly (pipes.py)
    full = os.environ.get("HYDRA_FULL_ERROR") == "1"
    # Hydra re-raises when HYDRA_FULL_ERROR is set; we then print the one-line version.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    gc.disable()  # composing: see the top of this module; _hydra_main switches it back on
    try:
        _hydra_main()
        if _run_error:
            raise _run_error.pop()
    except KeyboardInterrupt:
        sys.stderr.write("pdl-run: interrupted\n")
        sys.exit(130)
    except SystemExit as e:
        from .report import SweepFailed
        from .sweep import SweepStopped

        if isinstance(e, SweepStopped):
            sys.stderr.write(
                f"pdl-run: sweep stopped by {signal.Signals(e.signum).name}; continue it with "
                "the same command plus trainer.resume=auto\n"
            )
            sys.exit(128 + e.signum)
        if not isinstance(e, SweepFailed):
            raise
        sys.stderr.write(f"pdl-run: error: {e.code}\n")
        sys.exit(1)
    except Exception as e:
        if full:
            raise
        code = 128 + e.signum if hasattr(e, "signum") else 1
        msg = one_line(e)
        if isinstance(e, OSError) and e.filename:
            # Hydra creates the run directory before any of our code runs.
            msg = (
                f"cannot write {e.filename} ({e.strerror}); run from a writable directory "
                "or set hydra.run.dir / hydra.sweep.dir"
            )
        sys.stderr.write(f"pdl-run: error: {msg}\n")
        sys.exit(code)
    finally:
        gc.enable()


_NOISE = re.compile(r"^\s*(full_key|reference_type|object_type|msg)\b.*$")


def one_line(e: BaseException) -> str:
    """Squash an exception (and its causes) into one readable line.

    Our own errors (DataError, ConfigError, CheckpointError, ...) already are one line:
    when one is in the chain, it alone is the message, whatever Hydra wrapped it in.
    """
    chain: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    ours = [x for x in chain if type(x).__module__.startswith("pdl_experiments") and not hasattr(x, "signum")]
    if ours:
        chain = [ours[-1]]
    parts: list[str] = []
    for x in chain:
        text = str(x).split("Config search path:")[0]
        lines = [ln.strip() for ln in text.splitlines()]
        lines = [
            ln
            for ln in lines
            if ln
            and not _NOISE.match(ln)
            and "$VALUE" not in ln
            and not ln.startswith("Set the environment variable HYDRA_FULL_ERROR")
        ]
        text = " ".join(lines).replace("\t", " ")
        text = re.sub(
            r"\s*Available options in '(\w+)':\s*(.*)",
            lambda m: f"; available options in '{m.group(1)}': " + ", ".join(m.group(2).split()),
            text,
        )
        if text and not any(text in p for p in parts):
            parts.append(text)
    msg = ": ".join(parts) or type(chain[0]).__name__
    return msg if len(msg) <= 400 else msg[:397] + "..."


def eval_main(argv: list[str] | None = None) -> None:
    """pdl-eval RUN_DIR [--checkpoint best.pt|last.pt]: test metrics of a saved run."""
    quiet_closed_stdout()  # a closed stdout pipe ends it quietly (pipes.py)
    import argparse

    p = argparse.ArgumentParser(prog="pdl-eval", description=eval_main.__doc__)
    p.add_argument("run_dir")
    p.add_argument("--checkpoint", default="best.pt")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="PREFIX",
        help="also allow the run's config to name classes under this module prefix "
        "(your own code, e.g. mypkg.models); repeatable; see README 'Sharing runs safely'",
    )
    args = p.parse_args(argv)
    try:
        from .loading import evaluate_run

        metrics = evaluate_run(args.run_dir, args.checkpoint, args.device, args.trust)
    except Exception as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sys.stderr.write(f"pdl-eval: error: {one_line(e)}\n")
        sys.exit(1)
    from .training.progress import summary_table

    summary_table(f"test metrics — {args.run_dir}", metrics)
    print(json.dumps(metrics, sort_keys=True))


def report_main(argv: list[str] | None = None) -> None:
    """pdl-report DIR...: summary table, CSV, Markdown and plot of sweeps or single runs."""
    quiet_closed_stdout()  # a closed stdout pipe ends it quietly (pipes.py)
    import argparse

    from . import report

    p = argparse.ArgumentParser(prog="pdl-report", description=report_main.__doc__)
    p.add_argument("dirs", nargs="+", help="sweep directories, run directories, or parents of runs")
    p.add_argument("--out", default=None, help="where to write summary.* (default: the first DIR)")
    p.add_argument("--metric", default=None, help="metric to plot (default: test/acc or the first found)")
    args = p.parse_args(argv)
    try:
        report.report(args.dirs, out_dir=args.out, metric=args.metric)
    except Exception as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sys.stderr.write(f"pdl-report: error: {one_line(e)}\n")
        sys.exit(1)


if _GC_WAS_ON:
    gc.enable()

if __name__ == "__main__":
    main()
