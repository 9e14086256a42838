"""Sweeps through Hydra's launchers, and pdl-report over runs made one at a time."""

from __future__ import annotations

import json

from helpers import pdl_run

FAST = ["trainer.max_epochs=1", "bn.diagnostics=false"]


def _jobs(sweep):
    return sorted(d for d in sweep.iterdir() if d.is_dir() and (d / ".hydra").is_dir())


def test_joblib_runs_jobs_at_once_in_distinct_dirs(tmp_path):
    sweep = tmp_path / "sweep"
    p = pdl_run(
        [
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "optimizer.lr=0.01,0.1",
            *FAST,
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert p.returncode == 0, p.stderr
    jobs = _jobs(sweep)
    # Named in the worker processes by what varies (the swept keys reach them from pdl-run).
    assert [j.name for j in jobs] == ["0_optimizer.lr=0.01", "1_optimizer.lr=0.1"]
    envs = [json.loads((j / "env.json").read_text()) for j in jobs]
    walls = [json.loads((j / "metrics.json").read_text())["run/wall_s"] for j in jobs]
    assert envs[0]["pid"] != envs[1]["pid"]  # two worker processes
    a, b = envs[0]["started_unix"], envs[1]["started_unix"]
    assert a < b + walls[1] and b < a + walls[0], "the two jobs' run times overlap"
    assert (sweep / "summary.csv").read_text().count(",ok,") == 2


def test_submitit_local_runs_a_two_job_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    p = pdl_run(
        ["-m", "hydra/launcher=submitit_local", "optimizer.lr=0.01,0.1", *FAST, f"hydra.sweep.dir={sweep}"],
        tmp_path,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr
    jobs = _jobs(sweep)
    assert [j.name for j in jobs] == ["0_optimizer.lr=0.01", "1_optimizer.lr=0.1"]
    assert all((j / "metrics.json").is_file() for j in jobs)
    assert (sweep / ".submitit").is_dir()
    assert (sweep / "summary.md").is_file()


def test_pdl_report_over_single_runs(tmp_path):
    from pdl_experiments.cli import report_main

    from helpers import run_small

    for lr in (0.002, 0.01):
        run_small(tmp_path / "runs", [f"optimizer.lr={lr}", *FAST], name=f"lr{lr}")
    report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "report")])
    csv = (tmp_path / "report" / "summary.csv").read_text().splitlines()
    assert len(csv) == 3 and "test/acc" in csv[0]
