"""sweeps/stats.py: the one place the 95 % t interval comes from, checked against the
textbook formula with the t table's quantiles, and against the numbers the summary, the claims
and the figures gave before they shared it (the code of 503b494, run on the same values)."""

from __future__ import annotations

import math

import pytest

from pdl_experiments.sweeps import claims, seeds, stats
from pdl_experiments.sweeps.claim_figure import _panel

A = [0.91, 0.83, 0.95, 0.72, 0.88]
B = [0.61, 0.49, 0.67, 0.40, 0.57]
C = [0.12, 0.08, 0.10, 0.31, 0.09]
# t(0.975, df) from a printed t table (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.2)
T975 = {2: 4.302653, 3: 3.182446, 4: 2.776445, 9: 2.262157}


def textbook(values: list[float]) -> tuple[float, float, float]:
    n = len(values)
    mean = sum(values) / n
    s = math.sqrt(sum((x - mean) ** 2 for x in values) / (n - 1))
    return mean, s, T975[n - 1] * s / math.sqrt(n)


@pytest.mark.parametrize("values", [A, B, C, [1.0, 2.0, 3.0, 4.0], [0.2, 0.9, 0.4], list(range(10))])
def test_the_interval_is_the_textbook_t_interval(values):
    mean, s, half = textbook([float(v) for v in values])
    i = stats.interval(values)
    assert i.n == len(values) and i.mean == pytest.approx(mean, rel=1e-12)
    assert i.std == pytest.approx(s, rel=1e-12)
    assert i.half == pytest.approx(half, rel=1e-6)  # the table's 7 figures
    assert (i.lo, i.hi) == pytest.approx((mean - half, mean + half), rel=1e-6)


def test_one_value_has_no_interval_and_equal_values_a_zero_one():
    one = stats.interval([0.7])
    assert one.mean == 0.7 and math.isnan(one.std) and math.isnan(one.half)
    same = stats.interval([0.5, 0.5, 0.5])
    assert (same.mean, same.std, same.half) == (0.5, 0.0, 0.0)
    d = [0.3, 0.1, 0.2]  # the paired t test's interval is the one-sample interval of the differences
    assert stats.paired(d).half == pytest.approx(stats.interval(d).half, rel=1e-12)
    assert stats.paired([0.1, 0.1, 0.1]).half == 0.0 and math.isnan(stats.paired([0.1]).half)


# What 503b494's seeds.summarise, claims.judge and claim_figure._half gave on these values
# (each then had its own t.ppf(0.975, n - 1) * std / sqrt(n)).
BEFORE_SUMMARISE = [
    (0.858, 0.08871302046486751, 0.11015176368313974),
    (0.548, 0.10545141061171254, 0.13093522011636582),
    (0.13999999999999999, 0.09617692030835673, 0.11941941940499902),
]
BEFORE_JUDGE = [  # n, mean, half, verdict
    (5, 0.30999999999999994, 0.027764451051977942, "holds"),
    (5, -0.13999999999999999, 0.11941941940499902, "does not hold"),
    (5, 0.16999999999999998, 0.11844719628746707, "does not hold"),
]


def test_the_summary_gives_the_numbers_it_gave_before():
    for values, before in zip((A, B, C), BEFORE_SUMMARISE, strict=True):
        assert seeds.summarise(values) == pytest.approx(before, abs=1e-12)


def rows() -> list[dict]:
    return [
        {
            "overrides": {"m": m, "seed": str(s)},
            "status": "ok",
            "metrics": {"test/acc": v},
            "run": f"/x/{m}{s}",
        }
        for m, vals in (("a", A), ("b", B), ("c", C))
        for s, v in enumerate(vals)
    ]


def test_the_claims_give_the_numbers_and_verdicts_they_gave_before():
    specs = [
        {"label": "a - b", "metric": "test/acc", "better": {"m": "a"}, "than": {"m": "b"}, "margin": 0.25},
        {
            "label": "minus c (the old form, above -0.2)",
            "metric": "test/acc",
            "terms": [[-1, {"m": "c"}]],
            "margin": -0.2,
        },
        {
            "label": "a - b - c",
            "metric": "test/acc",
            "terms": [[1, {"m": "a"}], [-1, {"m": "b"}], [-1, {"m": "c"}]],
            "within": 0.2,
        },
    ]
    got = [(r.n, r.mean, r.half, r.verdict) for r in claims.judge({"compare": specs}, rows()).results]
    for g, before in zip(got, BEFORE_JUDGE, strict=True):
        assert g[0] == before[0] and g[3] == before[3]
        assert g[1:3] == pytest.approx(before[1:3], abs=1e-12)
    # The negated single term rewritten as an upper bound: the same interval, mirrored, the
    # same verdict (c's interval [2.06 %, 25.9 %] is not wholly below 20 %).
    below = {"label": "c", "metric": "test/acc", "terms": [[1, {"m": "c"}]], "below": 0.2}
    (r,) = claims.judge({"compare": [below]}, rows()).results
    assert (r.mean, r.half) == pytest.approx((-BEFORE_JUDGE[1][1], BEFORE_JUDGE[1][2]), abs=1e-12)
    assert r.verdict == "does not hold"
    assert claims.judge({"compare": [{**below, "below": 0.3}]}, rows()).status == claims.HOLDS


def test_the_figure_draws_the_error_bars_it_drew_before():
    from pdl_experiments.figures import pyplot

    fig, ax = pyplot().subplots()
    assert _panel(ax, {"x": "m", "y": "test/acc"}, rows(), {}) == 3
    (bars,) = ax.containers  # one errorbar series: (line, caplines, barlinecols)
    segments = bars.lines[2][0].get_segments()
    halves = [(seg[1][1] - seg[0][1]) / 2 for seg in segments]
    assert halves == pytest.approx([b[2] for b in BEFORE_SUMMARISE], abs=1e-12)
    pyplot().close(fig)
