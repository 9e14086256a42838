"""A preset's claim judged on paired seeds (pdl_experiments/sweeps/claims.py), its figure,
and what pdl-report says of it (a real sweep with a failed job: tests/e2e/test_claims.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from pdl_experiments.sweeps import claims
from pdl_experiments.sweeps.claim_figure import draw
from pdl_experiments.sweeps.summary import collect, find_runs

CLAIM = {
    "says": "A beats B",
    "published": "Someone 2020: 1 %",
    "chance": {"test/acc": 0.1},
    "compare": [{"label": "acc A - B", "metric": "test/acc", "better": {"m": "a"}, "than": {"m": "b"}}],
    "figure": {"x": "lr", "y": "test/acc", "series": "m"},
}


def fake_sweep(
    root: Path, values: dict[tuple[str, str, int], float | str], claim: dict = CLAIM
) -> list[dict]:
    """Job directories as a sweep leaves them: overrides, config (with the claim), status, metrics.
    `values[(m, lr, seed)]`: test/acc, or "failed" / "diverged"."""
    for i, ((m, lr, seed), v) in enumerate(values.items()):
        job = root / f"{i}_m={m},lr={lr},seed={seed}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"m={m}", f"lr={lr}", f"seed={seed}"]))
        (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "claim": claim}))
        if v == "failed":
            (job / "status.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
            continue
        if v == "diverged":
            (job / "status.json").write_text(json.dumps({"status": "ok"}))
            (job / "metrics.json").write_text(json.dumps({"run/diverged": 1, "test/acc": 0.0}))
            continue
        (job / "status.json").write_text(json.dumps({"status": "ok"}))
        (job / "metrics.json").write_text(json.dumps({"test/acc": v}))
    return collect(find_runs([root]))


def grid(a: list[float], b: list[float], lr: str = "0.1") -> dict:
    return {**{("a", lr, s): v for s, v in enumerate(a)}, **{("b", lr, s): v for s, v in enumerate(b)}}


def test_a_paired_difference_beyond_its_interval_holds(tmp_path):
    rows = fake_sweep(tmp_path, grid([0.9, 0.8, 0.95, 0.7, 0.85], [0.6, 0.5, 0.66, 0.41, 0.55]))
    v = claims.judge(CLAIM, rows)
    (r,) = v.results
    d = [0.3, 0.3, 0.29, 0.29, 0.3]  # per seed: a - b
    mean = sum(d) / 5
    half = 2.7764451 * math.sqrt(sum((x - mean) ** 2 for x in d) / 4) / math.sqrt(5)  # t(0.975, 4)
    assert v.status == claims.HOLDS and r.n == 5
    assert r.mean == pytest.approx(mean) and r.half == pytest.approx(half, rel=1e-6)


def test_pairing_sees_an_effect_the_spread_between_seeds_hides(tmp_path):
    """Seeds differ by far more than the effect: unpaired intervals overlap, paired ones do not."""
    a = [0.50, 0.90, 0.60, 0.80, 0.70]
    rows = fake_sweep(tmp_path, grid(a, [x - 0.02 for x in a]))
    assert claims.judge(CLAIM, rows).status == claims.HOLDS


def test_an_interval_that_covers_zero_does_not_hold_and_says_the_numbers(tmp_path):
    rows = fake_sweep(tmp_path, grid([0.9, 0.8, 0.7], [0.85, 0.82, 0.72]))
    v = claims.judge(CLAIM, rows)
    assert v.status == claims.DOES_NOT_HOLD
    assert "does not hold here" in v.headline() and "[" in v.results[0].line()


def test_a_failed_job_makes_the_claim_incomplete_naming_it(tmp_path):
    values = grid([0.9, 0.8, 0.95], [0.6, 0.5, 0.66])
    values[("b", "0.1", 1)] = "failed"
    v = claims.judge(CLAIM, fake_sweep(tmp_path, values))
    assert v.status == claims.INCOMPLETE
    assert "m=b,lr=0.1,seed=1" in v.headline() and "failed" in v.headline()


def test_a_diverged_job_counts_as_chance_not_dropped(tmp_path):
    values = grid([0.9, 0.8, 0.95], [0.6, 0.5, 0.66])
    values[("b", "0.1", 2)] = "diverged"
    (r,) = claims.judge(CLAIM, fake_sweep(tmp_path, values)).results
    assert r.n == 3 and r.mean == pytest.approx(((0.9 - 0.6) + (0.8 - 0.5) + (0.95 - 0.1)) / 3)


def test_each_value_of_an_axis_the_comparison_leaves_open_is_judged_alone(tmp_path):
    values = {
        **grid([0.9, 0.8, 0.95], [0.6, 0.5, 0.66], "0.1"),
        **grid([0.5, 0.6, 0.7], [0.6, 0.5, 0.66], "1.0"),
    }
    v = claims.judge(CLAIM, fake_sweep(tmp_path, values))
    assert [r.label for r in v.results] == ["acc A - B at lr=0.1", "acc A - B at lr=1.0"]
    assert [r.verdict for r in v.results] == [claims.HOLDS, claims.DOES_NOT_HOLD]
    at = {**CLAIM, "compare": [{**CLAIM["compare"][0], "at": {"lr": [0.1]}}]}
    assert claims.judge(at, fake_sweep(tmp_path / "at", values)).status == claims.HOLDS


def test_an_equivalence_and_a_difference_of_differences(tmp_path):
    values = {
        **grid([0.9, 0.8, 0.95, 0.7], [0.6, 0.5, 0.66, 0.4], "0.1"),
        **grid([0.8, 0.7, 0.86, 0.6], [0.5, 0.4, 0.56, 0.3], "1.0"),
    }
    rows = fake_sweep(tmp_path, values)
    same_gap = {
        "terms": [
            [1, {"m": "a", "lr": 0.1}],
            [-1, {"m": "b", "lr": 0.1}],
            [-1, {"m": "a", "lr": 1.0}],
            [1, {"m": "b", "lr": 1.0}],
        ],
        "metric": "test/acc",
        "within": 0.02,
    }
    v = claims.judge({"compare": [same_gap]}, rows)
    assert v.status == claims.HOLDS and abs(v.results[0].mean) < 0.011
    v = claims.judge({"compare": [{**same_gap, "within": 0.001}]}, rows)
    assert v.status == claims.DOES_NOT_HOLD


def test_the_figure_is_a_png_with_a_line_per_series(tmp_path):
    values = {
        **grid([0.9, 0.8, 0.95], [0.6, 0.5, 0.66], "0.1"),
        **grid([0.5, 0.6, 0.7], [0.6, 0.5, 0.66], "1.0"),
    }
    png = draw(CLAIM, fake_sweep(tmp_path / "s", values), tmp_path / "claim.png")
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert (
        draw(
            {**CLAIM, "figure": {"x": "lr", "y": "no/such"}},
            collect(find_runs([tmp_path / "s"])),
            tmp_path / "x.png",
        )
        is None
    )


def test_a_figure_of_several_metrics_draws_a_line_per_metric(tmp_path):
    from pdl_experiments.figures import pyplot
    from pdl_experiments.sweeps.claim_figure import _panel

    rows = fake_sweep(tmp_path / "s", grid([0.9, 0.8, 0.95], [0.6, 0.5, 0.66]))
    for r in rows:  # a second metric beside test/acc
        r["metrics"]["val/acc"] = r["metrics"]["test/acc"] - 0.1
    fig, ax = pyplot().subplots()
    spec = {"x": "m", "y": ["test/acc", "val/acc", "no/such"], "log_y": True}
    assert _panel(ax, spec, rows, {}) == 4  # 2 metrics x 2 settings; the absent one draws nothing
    assert ax.get_legend_handles_labels()[1] == ["test/acc", "val/acc"]
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]


def test_pdl_report_writes_the_claim_with_its_verdict_figure_and_paper(tmp_path):
    from pdl_experiments.cli import report_main

    fake_sweep(tmp_path, grid([0.9, 0.8, 0.95], [0.6, 0.5, 0.66]))
    report_main([str(tmp_path)])
    text = (tmp_path / "claim.md").read_text()
    assert "A beats B" in text and "**holds**" in text and "![the claim's figure](claim.png)" in text
    assert "Someone 2020" in text and (tmp_path / "claim.png").is_file()
