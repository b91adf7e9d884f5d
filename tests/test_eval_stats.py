"""Statistics over seeds: t-intervals, paired seed differences, slopes, verdicts with δ."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pointvl.eval.stats import (
    paired_seed_difference,
    slope_ci,
    slope_over_seeds,
    t_interval,
    verdict,
)


def test_t_interval_matches_scipy():
    v = [0.61, 0.55, 0.70, 0.58]
    ci = t_interval(v)
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
    assert ci["lo"] == pytest.approx(lo) and ci["hi"] == pytest.approx(hi) and ci["n"] == 4
    one = t_interval([0.5])
    assert one["mean"] == 0.5 and np.isnan(one["lo"]) and one["n"] == 1


def test_paired_seed_difference_uses_common_seeds_only():
    a = {0: 0.70, 1: 0.60, 2: 0.61, 3: 0.9}
    b = {0: 0.57, 1: 0.50, 2: 0.57}
    d = paired_seed_difference(a, b)
    assert d["seeds"] == [0, 1, 2] and d["per_seed"] == pytest.approx([0.13, 0.10, 0.04])
    assert d["mean"] == pytest.approx(0.09) and d["lo"] < 0.09 < d["hi"]
    # the example: over test samples [+0.047, +0.085]; over 3 seeds much wider
    assert d["hi"] - d["lo"] > 0.2


def test_slopes():
    x = np.arange(0, 110, 10)
    y = 0.5 + 0.002 * x + np.random.default_rng(0).normal(0, 0.005, x.size)
    fit = slope_ci(x, y)
    assert fit["lo"] < 0.002 < fit["hi"] and fit["lo"] > 0
    flat = slope_ci(x, np.full(x.size, 0.5) + np.random.default_rng(1).normal(0, 0.01, x.size))
    assert flat["lo"] < 0 < flat["hi"]
    seeds = slope_over_seeds([(x, y), (x, y + 0.01), (x, 0.5 + 0.001 * x)])
    assert seeds["n"] == 3 and seeds["slope"] == pytest.approx((2 * fit["slope"] + 0.001) / 3)


@pytest.mark.parametrize(
    "lo,hi,paper,delta,want",
    [
        (0.01, 0.07, 0.04, 0.02, "supported"),  # excludes 0 on the paper's side
        (-0.07, -0.01, 0.04, 0.02, "contradicted"),  # the other side
        (-0.01, 0.015, 0.04, 0.02, "contradicted"),  # inside ±δ: no effect of interest
        (-0.02, 0.06, 0.04, 0.02, "inconclusive"),  # contains 0, too wide
        (-0.004, 0.006, 0.005, 0.01, "supported"),  # tie claim (|0.005| < δ): equivalence
        (0.02, 0.05, 0.005, 0.01, "contradicted"),  # tie claim, outside ±δ
        (-0.005, 0.03, 0.005, 0.01, "inconclusive"),  # tie claim, crosses δ
        (float("nan"), float("nan"), 0.04, 0.02, "inconclusive"),
    ],
)
def test_verdicts(lo, hi, paper, delta, want):
    assert verdict(lo, hi, paper, delta)[0] == want
