"""Console entry points: pdl-run (Hydra), pdl-eval, pdl-report.

What a job does is in job.py; errors become one line (messages.py); a closed stdout pipe
ends quietly (pipes.py); OmegaConf reads YAML with libyaml (yaml_loader.py). Nothing heavy
is imported at module level: `pdl-run --help` and `pdl-run --cfg job` must answer without
loading torch.
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
import os
import signal
import sys
import time

# When this launch began, for run/time_to_first_step_s (a caller may set it earlier).
os.environ.setdefault("PDL_T0", str(time.time()))
from typing import Any

import hydra
from omegaconf import DictConfig

from ..sweeps import jobnames  # noqa: F401  (registers ${pdl.swept:}, the sweep job names)
from .messages import one_line
from .pipes import quiet_closed_stdout
from .yaml_loader import use_libyaml

CONFIG_MODULE = "pdl_experiments.configs"


use_libyaml()
# A single run's exception, handed from the Hydra task to main() so it is reported as one
# line (raised inside the task, Hydra would print its own "Error executing job" first).
_run_error: list[BaseException] = []


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="config")
def _hydra_main(cfg: DictConfig) -> Any:
    gc.enable()
    from .job import run_job

    return run_job(cfg, _run_error)


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
        from ..sweeps.stop import SweepStopped
        from ..sweeps.summary import SweepFailed

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
        "(your own code, e.g. mypkg.models); repeatable; see docs/outputs.md 'Sharing runs safely'",
    )
    args = p.parse_args(argv)
    try:
        from .. import techniques  # noqa: F401  (fills the registry the run's technique is read from)
        from ..loading import evaluate_run

        metrics = evaluate_run(args.run_dir, args.checkpoint, args.device, args.trust)
    except Exception as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sys.stderr.write(f"pdl-eval: error: {one_line(e)}\n")
        sys.exit(1)
    from ..training.progress import summary_table

    summary_table(f"test metrics — {args.run_dir}", metrics)
    print(json.dumps(metrics, sort_keys=True))


def report_main(argv: list[str] | None = None) -> None:
    """pdl-report DIR...: summary table, CSV, Markdown and plot of sweeps or single runs."""
    quiet_closed_stdout()  # a closed stdout pipe ends it quietly (pipes.py)
    import argparse

    from ..sweeps import summary as report

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
