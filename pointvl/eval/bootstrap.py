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
resampled index arrays to a user function. All randomness comes from
``numpy.random.default_rng(seed)``: a seed gives the same interval every time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "CI",
    "SeedSummary",
    "bootstrap_ci",
    "bootstrap_indices",
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


def bootstrap_indices(n: int, n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> np.ndarray:
    """``n_boot`` resamples of ``range(n)`` with replacement -> int array (n_boot, n)."""
    if n < 1:
        raise ValueError(f"bootstrap_indices: need at least one sample, got n={n}")
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(int(n_boot), n))  # (n_boot, N)


def _mean_over(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Mean of ``values[idx]`` along the last axis; NaN entries (undefined samples) skipped."""
    taken = values[idx]  # (n_boot, N)
    if np.isnan(values).any():
        with np.errstate(invalid="ignore", divide="ignore"):
            cnt = (~np.isnan(taken)).sum(-1)  # (n_boot,)
            return np.where(cnt > 0, np.nansum(taken, -1) / np.maximum(cnt, 1), np.nan)
    return taken.mean(-1)  # (n_boot,)


def _interval(stats: np.ndarray, alpha: float) -> tuple[float, float]:
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
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
    idx = bootstrap_indices(v.size, n_boot, seed)  # (n_boot, N)
    lo, hi = _interval(_mean_over(v, idx), alpha)
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
    point = float(stat(np.arange(n)))
    idx = bootstrap_indices(n, n_boot, seed)  # (n_boot, N)
    stats = np.array([float(stat(row)) for row in idx])  # (n_boot,)
    lo, hi = _interval(stats, alpha)
    return CI(point, lo, hi, n)


def paired_bootstrap(
    a: Any, b: Any, n_boot: int = DEFAULT_N_BOOT, alpha: float = 0.05, seed: int = 0
) -> CI:
    """mean(a) − mean(b) over the same N samples, with a paired percentile-bootstrap interval.

    a[i] and b[i] must score the *same* test sample i. Each resample draws one index set
    and applies it to both systems, so the interval reflects the per-sample differences.
    Samples where either value is NaN are dropped first.
    """
    _check(n_boot, alpha)
    a, b = _as_1d(a, "paired_bootstrap a"), _as_1d(b, "paired_bootstrap b")
    if a.shape != b.shape:
        raise ValueError(
            f"paired_bootstrap: a {a.shape} and b {b.shape} must score the same samples"
        )
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]  # (N',)
    if d.size == 0:
        return CI(float("nan"), float("nan"), float("nan"), 0)
    idx = bootstrap_indices(d.size, n_boot, seed)  # (n_boot, N')
    lo, hi = _interval(d[idx].mean(-1), alpha)
    return CI(float(d.mean()), lo, hi, int(d.size))


def seed_summary(per_seed: Sequence[float]) -> SeedSummary:
    """Mean ± sample standard deviation (ddof = 1) of one metric over training seeds."""
    v = np.asarray(per_seed, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(
            f"seed_summary: expected a non-empty 1-D list of per-seed values, got {v.shape}"
        )
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return SeedSummary(float(v.mean()), std, int(v.size))
