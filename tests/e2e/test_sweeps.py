"""pdl-run -m: job directories named by what varies, HPARAMS and a summary; Hydra's launchers
(joblib, submitit); the log axis of an lr sweep; a diverging job failing alone; the
statistics of a seed sweep per setting."""

from __future__ import annotations

import csv
import json
import math
import statistics

import pytest

from helpers import pdl_run

pytestmark = pytest.mark.e2e

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


def test_a_seed_sweep_is_summarised_per_setting(tmp_path):
    from scipy.stats import t

    sweep = tmp_path / "sweep"
    p = pdl_run(
        [
            "-m",
            "seed=0,1,2",
            "bn.enabled=true,false",
            "model=plain_deep",
            "trainer.max_epochs=3",
            "dataset.subset=300",
            "trainer.num_threads=1",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    with open(sweep / "summary_seeds.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(r["n"] == "3" for r in rows)
    jobs = [d for d in sweep.iterdir() if d.is_dir()]
    for r in rows:
        mine = [
            json.loads((d / "metrics.json").read_text())
            for d in jobs
            if f"bn.enabled={r['bn.enabled']}" in (d / ".hydra" / "overrides.yaml").read_text()
        ]
        assert len(mine) == 3
        for metric in ("test/acc", "val/loss"):
            values = [m[metric] for m in mine]
            assert float(r[f"{metric} mean"]) == statistics.fmean(values)
            assert math.isclose(
                float(r[f"{metric} std"]), statistics.stdev(values), rel_tol=1e-12, abs_tol=1e-15
            )
            # the 95 % Student-t half-width of the mean: t(0.975, n - 1) * s / sqrt(n)
            ci95 = float(t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))
            assert math.isclose(float(r[f"{metric} ci95"]), ci95, rel_tol=1e-12, abs_tol=1e-15)
    assert "Over seeds" in (sweep / "summary.md").read_text()


def test_multirun_makes_job_dirs_with_hparams_and_a_summary(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sweep = tmp_path / "sweep"
    p = pdl_run(
        [
            "-m",
            "optimizer.lr=0.01,0.1",
            "trainer.max_epochs=1",
            "bn.diagnostics=false",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert p.returncode == 0, p.stderr
    jobs = sorted(d for d in sweep.iterdir() if d.is_dir())
    assert [d.name.split("_")[0] for d in jobs] == ["0", "1"]
    # Named by what varies between the jobs; the shared overrides are in the summary.
    assert [d.name for d in jobs] == ["0_optimizer.lr=0.01", "1_optimizer.lr=0.1"]
    for d in jobs:
        assert (d / "metrics.json").is_file()
        acc = EventAccumulator(str(d))
        acc.Reload()
        assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")
    for name in ("summary.csv", "summary.md"):
        assert (sweep / name).is_file()
    assert list(sweep.glob("*.png"))


def test_diverging_job_fails_alone_in_a_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    p = pdl_run(
        [
            "-m",
            "optimizer=sgd",
            "optimizer.lr=0.05,1e9",
            "bn.enabled=false",
            "bn.diagnostics=false",
            "trainer.max_epochs=2",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert p.returncode != 0
    rows = (sweep / "summary.csv").read_text().splitlines()
    assert len(rows) == 3
    assert ",ok," in rows[1]
    assert "failed: non-finite loss" in rows[2] and "epoch 1, step" in rows[2]
    ok_job = next(d for d in sweep.iterdir() if d.name.startswith("0_"))
    assert json.loads((ok_job / "metrics.json").read_text())["test/acc"] > 0.2  # chance: 0.1
