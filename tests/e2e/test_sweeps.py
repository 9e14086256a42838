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


# The plot of a sweep over a numeric axis spanning 10x or more is drawn on a log scale.
def test_log_scale_rule():
    from pdl_experiments.sweeps.summary import log_scale

    assert log_scale([0.001, 0.01, 0.1])
    assert log_scale([1, 10])
    assert not log_scale([1, 2, 5])
    assert not log_scale([0, 1, 100])  # 0 has no place on a log axis
    assert not log_scale([])


def test_lr_sweep_plot_has_a_log_x_axis(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from pdl_experiments.sweeps import summary as report

    sweep = tmp_path / "sweep"
    p = pdl_run(
        [
            "-m",
            "optimizer.lr=0.001,0.01,0.1",
            "trainer.max_epochs=1",
            "bn.diagnostics=false",
            "trainer.progress=none",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert list(sweep.glob("test_acc_vs_optimizer.lr.png"))
    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (figures.append(fig), close(fig)))
    report.report([sweep], out_dir=tmp_path / "again")
    (fig,) = [f for f in figures if f is not None and f.axes[0].get_xlabel() == "optimizer.lr"][:1]
    assert fig.axes[0].get_xscale() == "log"


def test_summary_prints_error_messages_with_brackets_as_text(tmp_path):
    """A failed job's message is data: "[/x]" in it is not rich markup (it once broke the summary)."""
    import io
    import json

    from rich.console import Console

    from pdl_experiments.sweeps.summary import report

    error = "model.channels=[0] must be positive [/bold] (allowed: [1, ...])"
    for i, status in enumerate([{"status": "failed", "error": error}, {"status": "done"}]):
        job = tmp_path / f"{i}_model.channels=[{i}]"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "config.yaml").write_text("seed: 0\n")
        (job / ".hydra" / "overrides.yaml").write_text(f"- model.channels=[{i}]\n")
        (job / "status.json").write_text(json.dumps(status))
        if i:
            (job / "metrics.json").write_text(json.dumps({"val/acc": 0.5, "test/acc": 0.5}))
    out = io.StringIO()
    rows = report([tmp_path], console=Console(file=out, width=300))
    assert [r["status"] for r in rows] == ["failed: " + error, "ok"]
    printed = out.getvalue()
    assert "[/bold]" in printed and "[0]" in printed
