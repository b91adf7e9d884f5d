"""Bootstrap intervals: nominal coverage, determinism, pairing, NaN handling, seed spread."""

from __future__ import annotations

import numpy as np
import pytest

from pointvl.eval.bootstrap import (
    bootstrap_ci,
    bootstrap_stat,
    paired_bootstrap,
    seed_summary,
)


def test_ci_covers_true_mean_at_roughly_nominal_rate():
    rng = np.random.default_rng(0)
    reps, hits = 300, 0
    for r in range(reps):
        x = rng.exponential(1.0, 60)  # skewed; true mean 1
        ci = bootstrap_ci(x, n_boot=400, seed=r)
        hits += ci.lo <= 1.0 <= ci.hi
    cover = hits / reps
    # percentile bootstrap under-covers slightly on a skewed n = 60; 0.95 nominal
    assert 0.88 <= cover <= 0.98, cover


def test_ci_deterministic_for_a_seed_and_varies_with_it():
    x = np.random.default_rng(1).normal(size=100)
    assert bootstrap_ci(x, seed=5) == bootstrap_ci(x, seed=5)
    assert bootstrap_ci(x, seed=5).lo != bootstrap_ci(x, seed=6).lo
    assert bootstrap_ci(x, seed=5).mean == pytest.approx(x.mean())


def test_paired_bootstrap_cancels_shared_difficulty():
    rng = np.random.default_rng(2)
    difficulty = rng.uniform(0, 1, 200)
    a = difficulty + 0.04 + rng.normal(0, 0.01, 200)
    b = difficulty
    d = paired_bootstrap(a, b, seed=0)
    assert d.mean == pytest.approx(np.mean(a - b))
    assert 0.0 < d.lo < 0.04 < d.hi  # resolved: CI excludes 0
    ua = bootstrap_ci(a, seed=0)
    assert (d.hi - d.lo) < 0.2 * (ua.hi - ua.lo)  # pairing is much tighter
    exact = paired_bootstrap(b + 0.1, b, seed=0)
    assert exact.lo == pytest.approx(0.1) and exact.hi == pytest.approx(0.1)
    with pytest.raises(ValueError, match="same samples"):
        paired_bootstrap(a, b[:10])


def test_nan_samples_are_left_out():
    x = np.array([1.0, np.nan, 3.0, np.nan])
    ci = bootstrap_ci(x, seed=0, n_boot=200)
    assert ci.mean == 2.0 and ci.n == 2 and 1.0 <= ci.lo <= ci.hi <= 3.0
    empty = bootstrap_ci([np.nan, np.nan])
    assert empty.n == 0 and np.isnan(empty.mean)


def test_bootstrap_stat_matches_mean_version():
    x = np.random.default_rng(3).normal(size=50)
    a = bootstrap_stat(lambda idx: x[idx].mean(), 50, n_boot=300, seed=9)
    b = bootstrap_ci(x, n_boot=300, seed=9)
    assert a.mean == pytest.approx(b.mean)
    assert a.lo == pytest.approx(b.lo) and a.hi == pytest.approx(b.hi)


def test_seed_summary():
    s = seed_summary([0.1, 0.2, 0.4])
    assert s.mean == pytest.approx(0.7 / 3) and s.n_seeds == 3
    assert s.std == pytest.approx(np.std([0.1, 0.2, 0.4], ddof=1))
    assert seed_summary([0.5]).std == 0.0
    with pytest.raises(ValueError):
        seed_summary([])


def test_intervals_are_scipy_percentile_bootstrap_and_the_explicit_draws():
    """bootstrap_ci / paired_bootstrap = scipy.stats.bootstrap (percentile) = the hand-written
    spec: rng.integers(0, N, (n_boot, N)) resamples, linear-interpolated 2.5 / 97.5 % quantiles."""
    from scipy import stats

    rng = np.random.default_rng(7)
    a, b = rng.random(300), rng.random(300)
    res = stats.bootstrap((a,), np.mean, n_resamples=500, method="percentile",
                          rng=np.random.default_rng(3))  # fmt: skip
    ci = bootstrap_ci(a, 500, 0.05, seed=3)
    assert (ci.lo, ci.hi) == tuple(res.confidence_interval)
    idx = np.random.default_rng(3).integers(0, 300, size=(500, 300))  # (n_boot, N)
    lo, hi = np.quantile(a[idx].mean(-1), [0.025, 0.975])
    assert (ci.lo, ci.hi) == (lo, hi) and ci.mean == a.mean()
    d = paired_bootstrap(a, b, 500, 0.1, seed=3)
    lo, hi = np.quantile((a - b)[idx].mean(-1), [0.05, 0.95])
    assert (d.lo, d.hi) == (lo, hi)
    one = bootstrap_ci([0.25], 10)  # one sample: every resample is that sample
    assert tuple(one) == (0.25, 0.25, 0.25, 1)
