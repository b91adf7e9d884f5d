"""Tests for pointvl.variance: the identities of Eqs. (19)-(26) and the exact categorical toy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pointvl.variance import (
    ToyCategoricalPolicy,
    broadcast_gradients,
    condition_24,
    cross_term,
    decomposition_residual,
    fluctuation,
    mse_vs_samples,
    routed_gradients,
    toy_categorical_policy,
    variance_gap_terms,
)


def random_sample(seed, n=50, D=7):
    rng = np.random.default_rng(seed)
    return rng.normal(size=n), 3 * rng.normal(size=n) + 1, rng.normal(size=(n, D))


def _identity_error(gap):
    scale = 1.0 + abs(gap.V_b) + abs(gap.V_r)
    return abs(gap.measured - gap.predicted - gap.correction) / scale


# ----------------------------------------------------------------------------- identities


def test_gradients_and_decomposition():
    A, R, s = random_sample(0)
    g_b, g_r = broadcast_gradients(A, R, s), routed_gradients(A, s)
    assert g_b.shape == g_r.shape == s.shape
    np.testing.assert_allclose(g_b[3], (A[3] + R[3]) * s[3])
    np.testing.assert_allclose(g_r[3], A[3] * s[3])
    assert decomposition_residual(A, R, s) < 1e-14


def test_fluctuation_is_total_population_variance():
    _, _, s = random_sample(1)
    assert fluctuation(s) == pytest.approx(np.var(s, axis=0, ddof=0).sum(), rel=1e-12)
    assert fluctuation(np.ones((5, 3))) == 0.0
    w = np.full(len(s), 1 / len(s))
    assert fluctuation(s, weights=w) == pytest.approx(fluctuation(s), rel=1e-12)


def test_cross_term_and_condition_24_against_loops():
    A, R, s = random_sample(2)
    n = len(A)
    np.testing.assert_allclose(cross_term(R, s), sum(R[i] * s[i] for i in range(n)) / n, atol=1e-14)
    c24 = sum(A[i] * R[i] * float(s[i] @ s[i]) for i in range(n)) / n
    assert condition_24(A, R, s) == pytest.approx(c24, rel=1e-12)


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 30),
    D=st.integers(1, 6),
    data=st.data(),
)
def test_gap_identity_holds_on_any_sample(n, D, data):
    """measured == predicted + correction exactly (to rounding), whatever A, R, s are."""
    fin = st.floats(-10, 10, allow_nan=False, allow_infinity=False)
    A = data.draw(arrays(np.float64, n, elements=fin))
    R = data.draw(arrays(np.float64, n, elements=fin))
    s = data.draw(arrays(np.float64, (n, D), elements=fin))
    gap = variance_gap_terms(A, R, s)
    assert _identity_error(gap) < 1e-10
    assert gap.measured == pytest.approx(gap.V_b - gap.V_r)


@pytest.mark.parametrize("seed", range(5))
def test_gap_identity_with_weights(seed):
    A, R, s = random_sample(seed, n=40)
    w = np.random.default_rng(seed + 100).random(40)
    gap = variance_gap_terms(A, R, s, weights=w / w.sum())
    assert _identity_error(gap) < 1e-10
    assert gap.correction != pytest.approx(
        0.0
    )  # R has mean 1 here: E[R s] != 0, correction matters


def test_correction_is_zero_when_cross_term_is_zero():
    # mirror the sample, (A, R, s) and (A, R, −s): E[R s] = 0 exactly (Eq. 21), E[A R ‖s‖²] unchanged
    A, R, s = random_sample(7, n=30)
    A2, R2, s2 = np.concatenate([A, A]), np.concatenate([R, R]), np.concatenate([s, -s])
    gap = variance_gap_terms(A2, R2, s2)
    assert gap.cross_term_norm < 1e-14
    assert abs(gap.correction) < 1e-12
    assert gap.measured == pytest.approx(gap.predicted, rel=1e-12)


def test_eq21_holds_but_eq24_fails_so_broadcast_variance_is_smaller():
    # mirrored sample (Eq. 21 holds exactly) with R = −1.5 A: g_b = −0.5 A s, so V_b = V_r / 4
    A, _, s = random_sample(8, n=30)
    A2, s2 = np.concatenate([A, A]), np.concatenate([s, -s])
    R2 = -1.5 * A2
    gap = variance_gap_terms(A2, R2, s2)
    assert gap.cross_term_norm < 1e-14
    assert gap.condition_24 < 0
    assert gap.V_b == pytest.approx(gap.V_r / 4, rel=1e-12)
    assert gap.measured == pytest.approx(gap.predicted, rel=1e-12)  # Eq. (26) still exact


def test_shape_errors():
    A, R, s = random_sample(0)
    with pytest.raises(ValueError, match=r"R must be \(n,\)=\(50,\)"):
        variance_gap_terms(A, R[:3], s)
    with pytest.raises(ValueError, match=r"s must be \(n, D\)"):
        broadcast_gradients(A, R, s[:, 0])
    with pytest.raises(ValueError, match="weights"):
        fluctuation(s, weights=np.ones(50))


# ----------------------------------------------------------------------------- exact toy


def test_toy_scores_are_exact_gradients_of_log_pi():
    toy = toy_categorical_policy(num_fields=3, num_actions=5, seed=1)
    actions = toy.sample(np.random.default_rng(0), 4)
    k, h = 1, 1e-6
    for i in range(4):
        num = np.zeros(5)
        for c in range(5):
            for sign in (1, -1):
                logits = toy.logits.copy()
                logits[k, c] += sign * h
                p = ToyCategoricalPolicy(logits, toy.rewards).probs
                num[c] += sign * np.log(np.prod(p[np.arange(3), actions[i]])) / (2 * h)
        np.testing.assert_allclose(toy.scores(actions[i : i + 1], k)[0], num, atol=1e-7)


def test_toy_support_and_sampler():
    toy = toy_categorical_policy(num_fields=2, num_actions=3, seed=2)
    actions, probs = toy.support()
    assert actions.shape == (9, 2) and probs.sum() == pytest.approx(1.0)
    # E[s] = 0 exactly over the support (score identity)
    s = toy.scores(actions, 0)
    np.testing.assert_allclose(probs @ s, 0.0, atol=1e-15)
    draws = toy.sample(np.random.default_rng(0), 40000)
    freq = np.bincount(draws[:, 1], minlength=3) / 40000
    np.testing.assert_allclose(freq, toy.probs[1], atol=0.01)


@pytest.mark.parametrize("k", range(4))
def test_exact_toy_eq24_holds_and_broadcast_variance_is_larger(k):
    toy = toy_categorical_policy(coupling=0.0, seed=3)
    gap, mean_b, mean_r = toy.exact_terms(k)
    assert gap.cross_term_norm < 1e-14  # Eq. (21)
    np.testing.assert_allclose(mean_b, mean_r, atol=1e-14)  # Eq. (22)
    assert abs(gap.condition_24) < 1e-14  # Eq. (24) with equality: R_k independent of a_k
    assert gap.measured == pytest.approx(gap.predicted, rel=1e-10)  # Eq. (26)
    assert gap.V_b > gap.V_r > 0  # Eq. (25)


def test_sampled_toy_predicted_matches_measured_statistically():
    toy = toy_categorical_policy(coupling=0.0, seed=3)
    exact, _, _ = toy.exact_terms(0)
    A, R, s = toy.sampler(0)(np.random.default_rng(11), 20000)
    gap = variance_gap_terms(A, R, s)
    assert _identity_error(gap) < 1e-10
    assert abs(gap.correction) < 0.01 * gap.measured  # O(1/n) under Eq. (21)
    assert gap.predicted == pytest.approx(gap.measured, rel=0.02)
    assert gap.measured == pytest.approx(exact.measured, rel=0.05)


def test_negative_correlation_breaks_eq24_and_the_ordering():
    toy = toy_categorical_policy(coupling=0.9, seed=3)
    gap, mean_b, mean_r = toy.exact_terms(0)
    assert gap.condition_24 < 0  # Eq. (24) fails: R_k = −0.9 A_k + 0.1 · others
    assert gap.V_b < gap.V_r  # broadcast variance is NOT larger
    assert _identity_error(gap) < 1e-10  # the exact identity still holds
    np.testing.assert_allclose(mean_b, 0.1 * mean_r, atol=1e-14)  # and Eq. (22) fails too


def test_mse_vs_samples_is_deterministic_and_scales_as_variance_over_n():
    toy = toy_categorical_policy(coupling=0.0, seed=3)
    gap, mean_b, mean_r = toy.exact_terms(2)
    ns = [4, 16, 64]
    out = mse_vs_samples(toy.sampler(2), ns, mean_b, mean_r, n_trials=400, seed=5)
    again = mse_vs_samples(toy.sampler(2), ns, mean_b, mean_r, n_trials=400, seed=5)
    for key in ("n", "mse_broadcast", "mse_routed"):
        np.testing.assert_array_equal(out[key], again[key])
    n = out["n"].astype(float)
    # E‖ḡ_n − E g‖² = V(g) / n
    np.testing.assert_allclose(out["mse_broadcast"] * n, gap.V_b, rtol=0.2)
    np.testing.assert_allclose(out["mse_routed"] * n, gap.V_r, rtol=0.2)
    assert (out["mse_broadcast"] > out["mse_routed"]).all()
    other = mse_vs_samples(toy.sampler(2), ns, mean_b, mean_r, n_trials=400, seed=6)
    assert not np.array_equal(other["mse_routed"], out["mse_routed"])
