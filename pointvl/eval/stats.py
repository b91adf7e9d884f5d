"""Statistics over seeds and over training: the intervals our claims rest on.

- ``t_interval``: mean and Student-t 95% interval over independent values (one per seed).
- ``paired_seed_difference``: system A − system B over the seeds both have, as a t-interval
  of the per-seed differences of the test-set means. This is the interval that includes
  seed variance (RL seed, sampling, data order); with 3-5 seeds a hierarchical bootstrap
  has too few top-level units to resample, while the t-interval is exact under normality
  of the per-seed differences and honest about its width (t_{0.975, 2} = 4.30).
- ``slope_ci``: least-squares slope of a validation curve (value vs step) with a t-interval
  (residuals treated as independent: an approximation for one run, since successive
  evaluations share the policy's trajectory); ``slope_over_seeds``: the t-interval of the
  per-seed slopes, which does not need that approximation.
- ``verdict``: supported / contradicted / inconclusive for a paper difference, given the
  smallest effect of interest δ; a paper difference with |d| < δ is a tie claim, tested by
  equivalence (the CI inside ±δ).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats


def t_interval(values: Sequence[float], level: float = 0.95) -> dict:
    """{"mean", "lo", "hi", "n"}: Student-t interval of the mean (NaN bounds for n < 2)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    m = float(v.mean())
    if v.size < 2:
        return {"mean": m, "lo": float("nan"), "hi": float("nan"), "n": 1}
    h = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return {"mean": m, "lo": m - h, "hi": m + h, "n": int(v.size)}


def paired_seed_difference(a: Mapping[int, float], b: Mapping[int, float]) -> dict:
    """A − B over the seeds both systems have: t-interval of the per-seed differences.

    ``a``, ``b``: {seed: test-set mean of the metric}. Returns the interval plus ``seeds``
    and ``per_seed`` differences. With one common seed the bounds are NaN (one-seed
    comparison: no seed variance can be estimated)."""
    common = sorted(set(a) & set(b))
    diffs = [float(a[s]) - float(b[s]) for s in common]
    out = t_interval(diffs)
    out["seeds"] = common
    out["per_seed"] = diffs
    return out


def slope_ci(x: Sequence[float], y: Sequence[float], level: float = 0.95) -> dict:
    """OLS slope of y on x with a t-interval; {"slope", "lo", "hi", "n"}."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3 or np.ptp(x) == 0:
        return {"slope": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": int(x.size)}
    res = stats.linregress(x, y)
    h = float(stats.t.ppf(0.5 + level / 2, x.size - 2) * res.stderr)
    return {"slope": float(res.slope), "lo": res.slope - h, "hi": res.slope + h, "n": int(x.size)}


def slope_over_seeds(curves: Sequence[tuple[Sequence[float], Sequence[float]]]) -> dict:
    """t-interval of the per-seed OLS slopes of several (x, y) curves."""
    slopes = [slope_ci(x, y)["slope"] for x, y in curves]
    out = t_interval(slopes)
    return {"slope": out["mean"], "lo": out["lo"], "hi": out["hi"], "n": out["n"]}


VERDICTS = ("supported", "contradicted", "inconclusive")


def verdict(lo: float, hi: float, paper_diff: float, delta: float) -> tuple[str, str]:
    """(verdict, reason) for our difference's interval [lo, hi] vs the paper's difference.

    |paper_diff| >= δ (a directional claim): supported when the interval excludes 0 on the
    paper's side, contradicted when it excludes 0 on the other side or lies inside ±δ (we
    can rule out an effect of interest), else inconclusive.
    |paper_diff| < δ (a tie claim): supported when the interval lies inside ±δ
    (equivalence), contradicted when it excludes ±δ entirely on one side, else inconclusive.
    """
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive", "no interval (one seed, or no data)"
    sign = np.sign(paper_diff)
    if abs(paper_diff) >= delta:
        if (sign > 0 and lo > 0) or (sign < 0 and hi < 0):
            return "supported", "the interval excludes 0 in the paper's direction"
        if (sign > 0 and hi < 0) or (sign < 0 and lo > 0):
            return "contradicted", "the interval excludes 0 in the other direction"
        if -delta < lo and hi < delta:
            return (
                "contradicted",
                f"the interval lies inside ±δ = ±{delta:g}: no effect of interest",
            )
        return "inconclusive", "the interval contains 0"
    if -delta < lo and hi < delta:
        return "supported", f"equivalent: the interval lies inside ±δ = ±{delta:g}"
    if lo >= delta or hi <= -delta:
        return "contradicted", f"the interval lies outside ±δ = ±{delta:g}"
    return "inconclusive", f"the interval crosses ±δ = ±{delta:g}"
