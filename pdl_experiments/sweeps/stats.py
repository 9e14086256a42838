"""The statistics behind every table over seeds, every claim and every error bar, in one place.

A setting's seeds give a mean and the 95 % Student-t interval of that mean: the sweep
summary (sweeps/seeds.py), the claim figures (sweeps/claim_figure.py) and the report's
tables use it on a metric's values. A claim (sweeps/claims.py) uses it on the per-seed
paired differences, which is the paired t test: its interval lying wholly above a margin is
the one-sided test of "difference > margin" at the 2.5 % level, wholly inside (-d, d) the two
one-sided tests of an equivalence. The distribution comes from scipy.stats.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """The mean of `n` values with its 95 % t interval (mean - half, mean + half), where
    half = t.ppf(0.975, n - 1) * std / sqrt(n): the one place the project computes it.

    `std` (sample standard deviation) and `half` are nan for fewer than two values: one value
    says nothing about the spread.
    """

    n: int
    mean: float
    std: float
    half: float

    @property
    def lo(self) -> float:
        return self.mean - self.half

    @property
    def hi(self) -> float:
        return self.mean + self.half


def interval(values: Sequence[float]) -> Interval:
    """The mean of `values` and its 95 % Student-t interval (n - 1 degrees of freedom)."""
    n = len(values)
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan)
    mean = statistics.fmean(values)
    if n < 2:
        return Interval(n, mean, math.nan, math.nan)
    std = statistics.stdev(values)
    if std == 0:  # every seed gave the same number (e.g. all diverged to chance): no spread
        return Interval(n, mean, 0.0, 0.0)
    from scipy import stats  # ~0.3 s to import: only when a table is made

    lo, hi = stats.t.interval(CONFIDENCE, n - 1, loc=mean, scale=std / math.sqrt(n))
    return Interval(n, mean, std, float(hi - lo) / 2)


def paired(differences: Sequence[float]) -> Interval:
    """The paired comparison of two settings over the same seeds: the paired t test on the
    per-seed differences (`scipy.stats.ttest_1samp` on them is `ttest_rel` on the two
    settings) and its 95 % interval of the mean difference."""
    i = interval(differences)
    if i.n < 2 or i.std == 0:
        return i
    import warnings

    from scipy import stats

    with warnings.catch_warnings():  # nearly equal differences: scipy warns, the interval holds
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = stats.ttest_1samp(differences, 0.0).confidence_interval(CONFIDENCE)
    return Interval(i.n, i.mean, i.std, float(ci.high - ci.low) / 2)
