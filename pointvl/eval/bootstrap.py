"""Uncertainty of a test-set metric: percentile bootstrap, paired bootstrap, spread over seeds.

Every number our tables print comes with one of these:

- ``bootstrap_ci``: the 95% percentile-bootstrap interval over *test samples* of one
  system's metric (resample the N samples with replacement ``n_boot`` times, take the
  2.5% and 97.5% quantiles of the resampled statistic). The point estimate is the
  statistic on the full set, not the bootstrap mean.
- ``paired_bootstrap``: the same for the *difference* between two systems scored on the same
  samples; both systems use the same resampled indices, so sample difficulty cancels
  ("GRCA − GRPO on KPA-3D: +0.04 [0.01, 0.07]").
- ``seed_summary``: mean ± sample std (ddof = 1) of a metric over training seeds.

A corpus-level statistic (BLEU) is bootstrapped with ``bootstrap_stat``, which hands the
resampled index arrays to a user function.

The resampling and the percentile interval are ``scipy.stats.bootstrap`` (``method=
"percentile"``, ``rng=numpy.random.default_rng(seed)``): a seed gives the same interval every
time. Our wrappers add two rules scipy does not have: NaN marks a sample on which a metric is
undefined (left out of every mean, and ``n`` counts the defined ones), and a resample whose
statistic is undefined is left out of the quantiles. (Before, the same draws and quantiles
were written by hand: ``rng.integers(0, N, (n_boot, N))`` and linear-interpolated quantiles,
which is exactly what scipy does, so every interval is unchanged, to the last bit; tested.)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy import stats

__all__ = [
    "CI",
    "SeedSummary",
    "bootstrap_ci",
    "bootstrap_stat",
    "paired_bootstrap",
    "seed_summary",
]

DEFAULT_N_BOOT = 1000


class CI(NamedTuple):
    """A point estimate with a (lo, hi) percentile-bootstrap interval; ``n`` samples used."""

    mean: float
    lo: float
    hi: float
    n: int


class SeedSummary(NamedTuple):
    """Mean and sample std (ddof = 1; 0.0 for a single seed) over ``n_seeds`` runs."""

    mean: float
    std: float
    n_seeds: int


def _as_1d(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of per-sample values (N,), got {arr.shape}")
    return arr


def _check(n_boot: int, alpha: float) -> None:
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot={n_boot!r}: expected an integer >= 1")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha={alpha!r}: expected 0 < alpha < 1 (0.05 for a 95% interval)")


def _nan_mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean along ``axis`` with NaN entries (undefined samples) skipped; NaN if all are."""
    cnt = (~np.isnan(x)).sum(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, np.nansum(x, axis) / np.maximum(cnt, 1), np.nan)


def _distribution(data: tuple, statistic, n_boot: int, seed: int, **kw) -> np.ndarray:
    """The ``n_boot`` resampled statistics (scipy's bootstrap distribution); one sample: the
    statistic itself (scipy needs two; every resample of one sample is that sample)."""
    if len(data[0]) < 2:
        return np.full(int(n_boot), float(statistic(*data, axis=-1)) if kw.get("vectorized", True)
                       else float(statistic(*data)))  # fmt: skip
    with warnings.catch_warnings():  # NaN statistics are ours to handle (_interval drops them)
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap(data, statistic, n_resamples=int(n_boot), method="percentile",
                              rng=np.random.default_rng(seed), **kw)  # fmt: skip
    return np.asarray(res.bootstrap_distribution, dtype=np.float64).reshape(-1)  # (n_boot,)


def _interval(resampled: np.ndarray, alpha: float) -> tuple[float, float]:
    """Percentile interval of the finite resampled statistics (scipy's percentile method)."""
    finite = resampled[np.isfinite(resampled)]
    if finite.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_ci(
    values: Any, n_boot: int = DEFAULT_N_BOOT, alpha: float = 0.05, seed: int = 0
) -> CI:
    """Mean of per-sample ``values`` (N,) with a (1 − alpha) percentile-bootstrap interval.

    NaN marks a sample on which the metric is undefined (e.g. the keypoint spread of an
    unparsable answer): it is left out of every mean, and ``n`` counts the defined ones.
    All-NaN input gives NaN everywhere and ``n = 0``.
    """
    _check(n_boot, alpha)
    v = _as_1d(values, "bootstrap_ci")
    n_valid = int(np.isfinite(v).sum())
    if n_valid == 0:
        return CI(float("nan"), float("nan"), float("nan"), 0)
    lo, hi = _interval(_distribution((v,), _nan_mean, n_boot, seed, vectorized=True), alpha)
    return CI(float(np.nanmean(v)), lo, hi, n_valid)


def bootstrap_stat(
    stat: Callable[[np.ndarray], float],
    n: int,
    n_boot: int = DEFAULT_N_BOOT,
    alpha: float = 0.05,
    seed: int = 0,
) -> CI:
    """A statistic that is not a mean of per-sample values (corpus BLEU) with its interval.

    ``stat(idx)`` gets an int array of sample indices (the full set ``arange(n)`` for the
    point estimate, then each bootstrap resample) and returns a float.
    """
    _check(n_boot, alpha)
    if n < 1:
        raise ValueError(f"bootstrap_stat: need at least one sample, got n={n}")
    point = float(stat(np.arange(n)))
    dist = _distribution((np.arange(n),), lambda idx: float(stat(idx)), n_boot, seed,
                         vectorized=False)  # fmt: skip
    lo, hi = _interval(dist, alpha)
    return CI(point, lo, hi, n)


def paired_bootstrap(
    a: Any, b: Any, n_boot: int = DEFAULT_N_BOOT, alpha: float = 0.05, seed: int = 0
) -> CI:
    """mean(a) − mean(b) over the same N samples, with a paired percentile-bootstrap interval.

    a[i] and b[i] must score the *same* test sample i. Each resample draws one index set
    and applies it to both systems (``paired=True``), so the interval reflects the
    per-sample differences. Samples where either value is NaN are dropped first.
    """
    _check(n_boot, alpha)
    a, b = _as_1d(a, "paired_bootstrap a"), _as_1d(b, "paired_bootstrap b")
    if a.shape != b.shape:
        raise ValueError(
            f"paired_bootstrap: a {a.shape} and b {b.shape} must score the same samples"
        )
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]  # (N',)
    if a.size == 0:
        return CI(float("nan"), float("nan"), float("nan"), 0)

    def mean_diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return (x - y).mean(axis)

    dist = _distribution((a, b), mean_diff, n_boot, seed, vectorized=True, paired=True)
    lo, hi = _interval(dist, alpha)
    return CI(float((a - b).mean()), lo, hi, int(a.size))


def seed_summary(per_seed: Sequence[float]) -> SeedSummary:
    """Mean ± sample standard deviation (ddof = 1) of one metric over training seeds."""
    v = np.asarray(per_seed, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(
            f"seed_summary: expected a non-empty 1-D list of per-seed values, got {v.shape}"
        )
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return SeedSummary(float(v.mean()), std, int(v.size))
