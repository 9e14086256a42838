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
    assert v.headline() == "does not hold, 0 of 1 comparisons hold, seeds 0-2"
    (r,) = v.results  # a - b per seed: +5, -2, -2 points; t(0.975, 2) 4.30 * s 4.04 / sqrt(3)
    assert r.measured() == "+0.3 [−9.7, +10.4] points"
    assert r.needed() == "> 0 points" and r.outcome() == "does not hold"


def test_a_failed_job_makes_the_claim_incomplete_naming_it(tmp_path):
    values = grid([0.9, 0.8, 0.95], [0.6, 0.5, 0.66])
    values[("b", "0.1", 1)] = "failed"
    v = claims.judge(CLAIM, fake_sweep(tmp_path, values))
    assert v.status == claims.INCOMPLETE and v.headline().startswith("incomplete, 0 of 1")
    assert "m=b,lr=0.1,seed=1" in v.results[0].outcome() and "failed" in v.results[0].outcome()


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
    assert [(r.label, r.where()) for r in v.results] == [("acc A - B", "lr = 0.1"), ("acc A - B", "lr = 1.0")]
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
    assert f"**{tmp_path.name} — holds, 1 of 1 comparisons, seeds 0-2**" in text
    assert "A beats B" in text and "](claim.png)" in text
    assert "| acc A - B | — | +29.7 [+28.2, +31.1] points | > 0 points | holds |" in text
    assert "Someone 2020" in text and (tmp_path / "claim.png").is_file()


def test_an_upper_bound_holds_when_the_interval_lies_wholly_below_it(tmp_path):
    """`below: X`: "stays under 90 %" said as such; the same verdict as the negated term it
    replaces (minus acc above -0.9)."""
    rows = fake_sweep(tmp_path, grid([0.9, 0.8, 0.95], [0.6, 0.5, 0.66]))
    level = {"label": "B never trains", "metric": "test/acc", "terms": [[1, {"m": "b"}]], "below": 0.8}
    negated = {"label": "old", "metric": "test/acc", "terms": [[-1, {"m": "b"}]], "margin": -0.8}
    new, old = claims.judge({"compare": [level, negated]}, rows).results
    assert new.verdict == old.verdict == claims.HOLDS
    assert (new.mean, new.half) == pytest.approx((-old.mean, old.half))
    assert new.measured() == "58.7 [38.6, 78.7] %" and new.needed() == "< 80 %"
    assert claims.judge({"compare": [{**level, "below": 0.75}]}, rows).status == claims.DOES_NOT_HOLD
    with pytest.raises(ValueError, match="one of margin, below, within"):
        claims.judge({"compare": [{**level, "margin": 0.1}]}, rows)


def test_numbers_read_in_points_with_a_true_minus_and_other_metrics_in_their_units():
    r = claims.Result("x", bound=claims.Bound("above", -0.01), fraction=True, n=5, mean=0.0025, half=0.0069)
    assert r.measured() == "+0.2 [\u22120.4, +0.9] points" and r.needed() == "> \u22121 point"
    r = claims.Result("fid", bound=claims.Bound("above", 0.0), n=5, mean=85.31, half=25.2)
    assert r.measured() == "+85.3 [+60.1, +111]" and r.needed() == "> 0"
    r = claims.Result("eq", bound=claims.Bound("within", 0.01), fraction=True, n=8, mean=-0.002, half=0.004)
    assert r.measured() == "\u22120.2 [\u22120.6, +0.2] points" and r.needed() == "within \u00b11 point"
    assert claims.seed_span(["0", "1", "2", "3", "4"]) == "seeds 0-4"
    assert claims.seed_span(["1000", "1001", "7"]) == "seeds 7, 1000, 1001"


def test_the_dataset_a_sweep_ran_on_comes_from_its_own_config(tmp_path):
    rows = fake_sweep(tmp_path, grid([0.9, 0.8, 0.95], [0.6, 0.5, 0.66]))
    assert claims.dataset_of(rows) == ""  # neither a dataset choice nor a composed dataset
    job = Path(rows[0]["run"])
    (job / ".hydra" / "config.yaml").write_text(
        yaml.safe_dump({"dataset": {"_target_": "pdl_experiments.data.sequences.load_reverse"}})
    )
    assert claims.dataset_of(rows) == "reverse"
    (job / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"runtime": {"choices": {"dataset": "mnist5k", "experiment": "x"}}}})
    )
    assert claims.dataset_of(rows) == "mnist5k" and claims.preset_of(rows) == "x"
    assert claims.judge(CLAIM, rows).headline().startswith("holds on mnist5k, 1 of 1 comparisons")
