"""Why routing lowers gradient variance, Section 3.6, Eqs. (17)-(26). numpy float64.

For one field k and one sampled completion, the direct gradient on span S_k is A s_k, with
s_k = Σ_{t∈S_k} ∇_θ log π_θ(y_t | x, y_<t) the span score (Eq. 17). Broadcast GRPO uses
A_b = A_k + R_k (Eq. 18), routing uses A_k; so g_b = g_r + R_k s_k (Eqs. 19-20).

Span scores are model-specific, so the functions here take samples as input:
``s`` (n, D) score vectors, ``A`` (n,) routed field advantages, ``R`` (n,) residuals.
Expectations E[·] are sample means, or weighted means when ``weights`` (n,) (probabilities of
an enumerated support) is given — then they are exact.

Identity used throughout (any sample, any weights): V(g) = E‖g‖² − ‖E g‖², hence

    V(g_b) − V(g_r) = E[R²‖s‖²] + 2 E[A R ‖s‖²]  +  (‖E g_r‖² − ‖E g_b‖²)
                      \\_______ predicted (Eq. 26) _/   \\____ correction ____/

and E g_b = E g_r + E[R s], so the correction vanishes when Eq. (21) E[R s] = 0 holds.

``ToyCategoricalPolicy`` is a policy with one categorical head per field, small enough to
enumerate: exact scores (one-hot − softmax), exact expectations, and a ``coupling`` knob that
makes R_k negatively correlated with A_k so that Eq. (24) fails.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


def _check(A=None, R=None, s=None, weights=None):
    """Validate shapes: s (n, D), A/R/weights (n,). Returns float64 arrays."""
    s = np.asarray(s, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"s must be (n, D), got {s.shape}")
    n = s.shape[0]
    out = []
    for name, v in (("A", A), ("R", R), ("weights", weights)):
        if v is None:
            out.append(None)
            continue
        v = np.asarray(v, dtype=np.float64)
        if v.shape != (n,):
            raise ValueError(f"{name} must be (n,)=({n},), got {v.shape}")
        out.append(v)
    A, R, w = out
    if w is not None and (np.any(w < 0) or not np.isclose(w.sum(), 1.0)):
        raise ValueError("weights must be non-negative and sum to 1")
    return A, R, s, w


def _expect(x: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """E[x] over axis 0: sample mean, or the weighted mean under ``weights``."""
    if weights is None:
        return x.mean(axis=0)
    return np.tensordot(weights, x, axes=(0, 0))


# ----------------------------------------------------------------------------- Eqs. (19)-(20)


def broadcast_gradients(A, R, s) -> np.ndarray:
    """Eq. (19): g_b = A_b s_k = (A_k + R_k) s_k. (n,), (n,), (n, D) -> (n, D)."""
    A, R, s, _ = _check(A, R, s)
    # g_b = (A + R) s
    return (A + R)[:, None] * s  # (n, D)


def routed_gradients(A, s) -> np.ndarray:
    """Eq. (19): g_r = A_k s_k. (n,), (n, D) -> (n, D)."""
    A, _, s, _ = _check(A, None, s)
    # g_r = A s
    return A[:, None] * s  # (n, D)


def decomposition_residual(A, R, s) -> float:
    """Eq. (20): max |g_b − g_r − R s| (rounding only, ~1e-15 on O(1) inputs)."""
    A, R, s, _ = _check(A, R, s)
    # g_b − g_r − R s
    diff = broadcast_gradients(A, R, s) - routed_gradients(A, s) - R[:, None] * s  # (n, D)
    return float(np.abs(diff).max()) if diff.size else 0.0


# ----------------------------------------------------------------------------- Eqs. (21)-(26)


def fluctuation(g, weights=None) -> float:
    """Eq. (23): V(g) = E‖g − E g‖² (population form, ddof = 0). g (n, D)."""
    _, _, g, w = _check(None, None, g, weights)
    g_bar = _expect(g, w)  # (D,)
    # E‖g − ḡ‖²
    return float(_expect(((g - g_bar) ** 2).sum(axis=1), w))


def cross_term(R, s, weights=None) -> np.ndarray:
    """Eq. (21): E[R_k s_k], a (D,) vector; Eq. (22) E g_b = E g_r holds iff it is 0."""
    _, R, s, w = _check(None, R, s, weights)
    # E[R s]
    return _expect(R[:, None] * s, w)  # (D,)


def condition_24(A, R, s, weights=None) -> float:
    """Eq. (24): E[A_k R_k ‖s_k‖²]; when ≥ 0 (and Eq. 21 holds), V(g_b) ≥ V(g_r) (Eq. 25)."""
    A, R, s, w = _check(A, R, s, weights)
    # E[A R ‖s‖²]
    return float(_expect(A * R * (s**2).sum(axis=1), w))


@dataclass
class VarianceGap:
    """Terms of Eq. (26) on one sample (or one enumerated distribution)."""

    V_b: float
    """V(g_b), broadcast fluctuation (Eq. 23)."""
    V_r: float
    """V(g_r), routed fluctuation (Eq. 23)."""
    measured: float
    """V_b − V_r."""
    predicted: float
    """E[R²‖s‖²] + 2 E[A R ‖s‖²] (right-hand side of Eq. 26)."""
    correction: float
    """‖E g_r‖² − ‖E g_b‖²; 0 when E[R s] = 0 (Eq. 21). measured = predicted + correction."""
    cross_term_norm: float
    """‖E[R s]‖ (Eq. 21)."""
    condition_24: float
    """E[A R ‖s‖²] (Eq. 24)."""


def variance_gap_terms(A, R, s, weights=None) -> VarianceGap:
    """Eq. (26): V(g_b) = V(g_r) + E[R²‖s‖²] + 2 E[A R ‖s‖²], with its finite-sample correction.

    Exact identity on any sample: ``measured == predicted + correction`` (to rounding), where
    correction = ‖ḡ_r‖² − ‖ḡ_b‖² and ḡ_b = ḡ_r + E[R s]. Eq. (26) is the case E[R s] = 0;
    on a finite sample from a distribution satisfying Eq. (21) the correction is O(1/n).
    """
    A, R, s, w = _check(A, R, s, weights)
    g_b = broadcast_gradients(A, R, s)  # (n, D)
    g_r = routed_gradients(A, s)  # (n, D)
    V_b, V_r = fluctuation(g_b, w), fluctuation(g_r, w)
    sq = (s**2).sum(axis=1)  # (n,) ‖s‖²
    c24 = condition_24(A, R, s, w)
    # E[R² ‖s‖²] + 2 E[A R ‖s‖²]
    predicted = float(_expect(R**2 * sq, w)) + 2.0 * c24
    # ‖ḡ_r‖² − ‖ḡ_b‖²
    correction = float((_expect(g_r, w) ** 2).sum() - (_expect(g_b, w) ** 2).sum())
    return VarianceGap(
        V_b=V_b,
        V_r=V_r,
        measured=V_b - V_r,
        predicted=predicted,
        correction=correction,
        cross_term_norm=float(np.linalg.norm(cross_term(R, s, w))),
        condition_24=c24,
    )


# ----------------------------------------------------------------------------- sample efficiency

Sampler = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray, np.ndarray]]


def mse_vs_samples(
    sampler: Sampler,
    ns: Sequence[int],
    true_mean_b: np.ndarray,
    true_mean_r: np.ndarray,
    n_trials: int = 200,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Error of the mean-gradient estimator vs sample count: E‖(1/n) Σ g − E g‖².

    ``sampler(rng, m)`` returns m i.i.d. draws ``(A, R, s)`` with shapes (m,), (m,), (m, D);
    ``true_mean_b`` / ``true_mean_r`` (D,) are E g_b and E g_r (exact, e.g. from
    ``ToyCategoricalPolicy.exact_terms``). For each n in ``ns`` the squared error is averaged
    over ``n_trials`` independent batches; it equals V(g)/n in expectation. Deterministic given
    ``seed`` (one ``np.random.default_rng(seed)`` drives all draws).

    Returns ``{"n": (len(ns),), "mse_broadcast": ..., "mse_routed": ...}``.
    """
    rng = np.random.default_rng(seed)
    true_mean_b = np.asarray(true_mean_b, dtype=np.float64)
    true_mean_r = np.asarray(true_mean_r, dtype=np.float64)
    mse_b, mse_r = [], []
    for n in ns:
        A, R, s = sampler(rng, int(n) * n_trials)
        g_b = broadcast_gradients(A, R, s).reshape(n_trials, int(n), -1)  # (trials, n, D)
        g_r = routed_gradients(A, s).reshape(n_trials, int(n), -1)  # (trials, n, D)
        # ‖mean_n g − E g‖², averaged over trials
        mse_b.append(((g_b.mean(axis=1) - true_mean_b) ** 2).sum(axis=1).mean())
        mse_r.append(((g_r.mean(axis=1) - true_mean_r) ** 2).sum(axis=1).mean())
    return {
        "n": np.asarray(ns, dtype=np.int64),
        "mse_broadcast": np.asarray(mse_b),
        "mse_routed": np.asarray(mse_r),
    }


# ----------------------------------------------------------------------------- exact toy


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class ToyCategoricalPolicy:
    """π(a) = Π_k softmax(θ_k)[a_k]: one categorical head per field, F heads of C actions.

    Field k's "span" is the single action a_k; its score with respect to θ_k is
    ∇_{θ_k} log π(a) = onehot(a_k) − softmax(θ_k) (Eq. 17; the other heads' coordinates of the
    full gradient are zero, so D = C without changing any norm).

    [reconstruction, toy only] Advantages use the exact baseline instead of group
    standardization: A_j = r_j(a_j) − E r_j. The background advantage is
    A_bg = −coupling · Σ_j A_j, so the broadcast advantage is A_b = Σ_j A_j + A_bg and the
    residual of field k is R_k = A_b − A_k (Eq. 18). With ``coupling = 0`` R_k is independent
    of a_k, so E[R_k s_k] = 0 (Eq. 21) and E[A_k R_k ‖s_k‖²] = 0 ≥ 0 (Eq. 24): V(g_b) ≥ V(g_r).
    With ``coupling`` in (0, 2) R_k is negatively correlated with A_k, Eq. (24) fails and
    g_b = (1 − coupling)(A_k + others) s_k can have the *smaller* fluctuation.
    """

    logits: np.ndarray
    """(F, C) logits θ_k of each head."""
    rewards: np.ndarray
    """(F, C) reward r_k(c) of field k when head k picks action c."""
    coupling: float = 0.0
    """Background advantage A_bg = −coupling · Σ_j A_j (0: independent background)."""

    def __post_init__(self):
        self.logits = np.asarray(self.logits, dtype=np.float64)
        self.rewards = np.asarray(self.rewards, dtype=np.float64)
        if self.logits.ndim != 2 or self.rewards.shape != self.logits.shape:
            raise ValueError(
                f"logits and rewards must both be (F, C), got {self.logits.shape} and {self.rewards.shape}"
            )

    @property
    def probs(self) -> np.ndarray:
        """(F, C) softmax(θ_k) per head."""
        return _softmax(self.logits)

    @property
    def expected_rewards(self) -> np.ndarray:
        """(F,) E r_k under the policy (the toy's exact baseline)."""
        return (self.probs * self.rewards).sum(axis=1)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, F) integer actions, head by head."""
        p = self.probs  # (F, C)
        cdf = np.cumsum(p, axis=1)  # (F, C)
        u = rng.random((n, p.shape[0]))  # (n, F)
        a = (u[:, :, None] > cdf[None, :, :]).sum(axis=2)  # (n, F)
        return np.minimum(a, p.shape[1] - 1)

    def support(self) -> tuple[np.ndarray, np.ndarray]:
        """Every joint action (C^F, F) and its probability (C^F,)."""
        F, C = self.logits.shape
        actions = np.array(list(itertools.product(range(C), repeat=F)), dtype=np.int64)  # (C^F, F)
        p = self.probs  # (F, C)
        probs = np.prod(p[np.arange(F)[None, :], actions], axis=1)  # (C^F,)
        return actions, probs

    def scores(self, actions: np.ndarray, k: int) -> np.ndarray:
        """Eq. (17) for field k: s_k = onehot(a_k) − softmax(θ_k), (n, C)."""
        C = self.logits.shape[1]
        # ∇_{θ_k} log softmax(θ_k)[a_k] = e_{a_k} − softmax(θ_k)
        return np.eye(C)[actions[:, k]] - self.probs[k][None, :]  # (n, C)

    def field_advantages(self, actions: np.ndarray) -> np.ndarray:
        """A_j = r_j(a_j) − E r_j, (n, F)."""
        F = self.logits.shape[0]
        r = self.rewards[np.arange(F)[None, :], actions]  # (n, F)
        return r - self.expected_rewards[None, :]  # (n, F)

    def span_terms(self, actions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(A_k (n,), R_k (n,), s_k (n, C)) for field k on the given actions."""
        adv = self.field_advantages(actions)  # (n, F)
        # A_bg = −coupling Σ_j A_j
        a_bg = -self.coupling * adv.sum(axis=1)  # (n,)
        # A_b = Σ_j A_j + A_bg
        a_b = adv.sum(axis=1) + a_bg  # (n,)
        # R_k = A_b − A_k  (Eq. 18)
        return adv[:, k], a_b - adv[:, k], self.scores(actions, k)

    def sampler(self, k: int) -> Sampler:
        """A ``mse_vs_samples`` sampler of (A_k, R_k, s_k)."""
        return lambda rng, m: self.span_terms(self.sample(rng, m), k)

    def exact_terms(self, k: int) -> tuple[VarianceGap, np.ndarray, np.ndarray]:
        """Exact Eq. (26) terms for field k by enumeration, plus E g_b and E g_r (D,)."""
        actions, probs = self.support()
        A, R, s = self.span_terms(actions, k)
        gap = variance_gap_terms(A, R, s, weights=probs)
        mean_b = _expect(broadcast_gradients(A, R, s), probs)  # (D,)
        mean_r = _expect(routed_gradients(A, s), probs)  # (D,)
        return gap, mean_b, mean_r


def toy_categorical_policy(
    num_fields: int = 4, num_actions: int = 4, coupling: float = 0.0, seed: int = 0
) -> ToyCategoricalPolicy:
    """A random ``ToyCategoricalPolicy``: logits ~ N(0, 1), rewards ~ U[0, 1) (seeded)."""
    rng = np.random.default_rng(seed)
    return ToyCategoricalPolicy(
        logits=rng.normal(size=(num_fields, num_actions)),
        rewards=rng.random((num_fields, num_actions)),
        coupling=coupling,
    )
