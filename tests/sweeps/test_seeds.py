"""Seed statistics of a real sweep: one row per setting, n, means equal to the jobs' own."""

from __future__ import annotations

import csv
import json
import math
import statistics

from helpers import pdl_run


def test_a_seed_sweep_is_summarised_per_setting(tmp_path):
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
            assert float(r[f"{metric} ci95"]) >= 0
    assert "Over seeds" in (sweep / "summary.md").read_text()
