"""sweeps/seeds.py: statistics over seeds (mean, sample std, the 95 % Student-t half-width).
A real seed sweep summarised per setting: e2e/test_sweeps.py."""

from __future__ import annotations

import math

import pytest


def test_summarise_gives_the_exact_mean_std_and_ci95_of_a_known_sample():
    from scipy.stats import t

    from pdl_experiments.sweeps.seeds import summarise

    mean, std, ci95 = summarise([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert std == pytest.approx(math.sqrt(5 / 3), rel=1e-12)  # sample std: 1.290994
    # t(0.975, 3) * s / sqrt(4) = 3.182446 * 1.290994 / 2
    assert ci95 == pytest.approx(float(t.ppf(0.975, 3)) * math.sqrt(5 / 3) / 2, rel=1e-12)
    assert ci95 == pytest.approx(2.05426, abs=1e-5)
    one = summarise([0.7])
    assert one[0] == 0.7 and math.isnan(one[1]) and math.isnan(one[2])  # one seed: no spread
