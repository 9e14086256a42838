"""pdl-run processes that run: the fdr preset writing only its run directory, two runs started
together."""

from __future__ import annotations

import subprocess
import time

import matplotlib
import pytest

from helpers import ENV, PY, pdl_run, written_since

pytestmark = pytest.mark.e2e

# matplotlib's font cache stays where it is (it reads $XDG_CACHE_HOME once, on first use):
# not this project's file, and the tests point XDG_CACHE_HOME at an empty directory.
MPL_CACHE = matplotlib.get_cachedir()


def test_fdr_cli_gan_leaves_the_outputs_tree_and_cache_alone(tmp_path):
    """The real pdl-run: Hydra's files, the judge cache and the run's own files all in its dir."""
    env = {**ENV, "XDG_CACHE_HOME": str(tmp_path / "cache"), "MPLCONFIGDIR": MPL_CACHE}
    stamp = time.time() - 1e-3
    p = pdl_run(
        ["debug=fdr", "technique=gan", "trainer.progress=none", "logger=[tensorboard,mlflow]"],
        cwd=tmp_path,
        env=env,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    (run_dir,) = [d.parent for d in tmp_path.glob("outputs/runs/gan/*/*/metrics.json")]
    outside = [f for f in written_since(tmp_path, stamp) if run_dir not in f.parents]
    assert not outside, f"written outside the run dir: {outside}"
    assert list((run_dir / "judge_cache").glob("gan_judge-*.pt"))
    assert (run_dir / "mlflow.db").is_file()  # the MLflow store too, not outputs/mlflow.db


def test_two_runs_started_together_get_their_own_dirs(tmp_path):
    args = [PY, "-m", "pdl_experiments.cli", "trainer.max_epochs=1", "bn.diagnostics=false"]
    procs = [
        subprocess.Popen(
            args, cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=240) == 0, p.stderr.read()
    runs = sorted(tmp_path.glob("outputs/runs/bn/*/*"))
    assert len(runs) == 2 and runs[0] != runs[1]
    for r in runs:
        assert (r / "metrics.json").is_file() and len(list(r.glob("events.out.tfevents.*"))) == 1
