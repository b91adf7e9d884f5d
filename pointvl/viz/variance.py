"""Figures and small experiments for the variance notebook (Section 3.6, Eqs. 17-26).

All the math is in ``pointvl.variance``; this module sweeps it and draws it:

- ``gap_html``: the terms of Eq. (26) side by side for several cases;
- ``coupling_sweep`` / ``coupling_figure``: V(g_b) and V(g_r) of the exact categorical toy as the
  background is made to cancel field k's advantage (``coupling``), where Eq. (24) turns negative;
- ``eq24_counterexample``: a sample on which Eq. (21) holds *exactly* but Eq. (24) fails;
- ``samples_needed`` / ``mse_figure``: error of the mean-gradient estimate vs sample count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from pointvl.variance import VarianceGap, toy_categorical_policy
from pointvl.viz.html import Html, html_table

GAP_COLUMNS = (
    "V(g_b)",
    "V(g_r)",
    "measured V_b − V_r",
    "E[R²‖s‖²] + 2E[AR‖s‖²]",
    "correction",
    "‖E[R s]‖ (Eq. 21)",
    "E[AR‖s‖²] (Eq. 24)",
)


def gap_html(gaps: Mapping[str, VarianceGap]) -> Html:
    """One row per named ``VarianceGap``: measured vs predicted gap (Eq. 26) and conditions."""

    def num(x: float) -> str:
        return f"{x:+.3e}" if x != 0 and abs(x) < 1e-3 else f"{x:+.4f}"

    rows = [
        [name, *(num(v) for v in (g.V_b, g.V_r, g.measured, g.predicted, g.correction)),
         num(g.cross_term_norm), num(g.condition_24)]
        for name, g in gaps.items()
    ]  # fmt: skip
    return html_table(rows, ["case", *GAP_COLUMNS])


def coupling_sweep(
    couplings: Sequence[float], k: int = 0, seed: int = 3, num_fields: int = 4, num_actions: int = 4
) -> dict[str, np.ndarray]:
    """Exact Eq. (26) terms of field k for ``toy_categorical_policy(coupling=c)`` per c.

    Same logits and rewards for every c (same ``seed``); only the background changes,
    A_bg = −c Σ_j A_j. Returns arrays keyed like ``VarianceGap``'s fields plus ``coupling``
    and ``mean_gap`` = ‖E g_b − E g_r‖ (Eq. 22 holds iff it is 0).
    """
    keys = ("V_b", "V_r", "measured", "predicted", "correction", "cross_term_norm", "condition_24")
    out: dict[str, list] = {key: [] for key in (*keys, "mean_gap")}
    for c in couplings:
        toy = toy_categorical_policy(num_fields, num_actions, coupling=float(c), seed=seed)
        gap, mean_b, mean_r = toy.exact_terms(k)
        for key in keys:
            out[key].append(getattr(gap, key))
        out["mean_gap"].append(float(np.linalg.norm(mean_b - mean_r)))
    res = {key: np.asarray(v, dtype=np.float64) for key, v in out.items()}
    res["coupling"] = np.asarray(couplings, dtype=np.float64)
    return res


def coupling_figure(sweep: Mapping[str, np.ndarray]):
    """Left: V(g_b), V(g_r) vs coupling. Right: Eq. (24)'s E[A R ‖s‖²] and ‖E[R s]‖."""
    import matplotlib.pyplot as plt

    c = sweep["coupling"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(c, sweep["V_b"], "o-", label="V(g_b) broadcast")
    a.plot(c, sweep["V_r"], "s-", label="V(g_r) routed")
    a.set_xlabel("coupling (A_bg = −c Σ_j A_j)")
    a.set_ylabel("fluctuation (Eq. 23)")
    a.legend()
    b.plot(c, sweep["condition_24"], "o-", label="E[A R ‖s‖²] (Eq. 24)")
    b.plot(c, sweep["cross_term_norm"], "s-", label="‖E[R s]‖ (Eq. 21)")
    b.axhline(0, color="0.5", lw=0.8)
    b.set_xlabel("coupling")
    b.legend()
    fig.tight_layout()
    return fig


def eq24_counterexample(n: int = 30, dim: int = 7, ratio: float = -1.5, seed: int = 8):
    """A sample (A, R, s) of 2n rows on which Eq. (21) holds exactly and Eq. (24) fails.

    Mirror every draw, (A, s) and (A, −s), so E[R s] = 0 to rounding; set R = ratio · A with
    ratio < 0, so E[A R ‖s‖²] = ratio E[A²‖s‖²] < 0. Then g_b = (1 + ratio) A s: with
    ratio = −1.5, V(g_b) = V(g_r) / 4, broadcast is *less* noisy. Shapes (2n,), (2n,), (2n, D).
    """
    rng = np.random.default_rng(seed)
    A, s = rng.normal(size=n), rng.normal(size=(n, dim))
    A2, s2 = np.concatenate([A, A]), np.concatenate([s, -s])  # (2n,), (2n, D)
    return A2, ratio * A2, s2


def samples_needed(variance: float, target_mse: float) -> int:
    """Smallest n with V/n ≤ target: E‖(1/n) Σ g − E g‖² = V(g)/n for i.i.d. draws."""
    if target_mse <= 0:
        raise ValueError(f"target_mse must be > 0, got {target_mse}")
    return max(1, math.ceil(variance / target_mse))


def mse_figure(out: Mapping[str, np.ndarray], V_b: float, V_r: float, target_mse: float):
    """Measured ``mse_vs_samples`` (markers) against V/n (lines), log-log, with the sample
    counts each estimator needs to reach ``target_mse`` marked on the x-axis."""
    import matplotlib.pyplot as plt

    n = out["n"].astype(float)
    n_max = max(n.max(), samples_needed(max(V_b, V_r), target_mse)) * 1.3
    grid = np.geomspace(n.min(), n_max, 50)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.loglog(n, out["mse_broadcast"], "o", color="tab:red", label="broadcast (measured)")
    ax.loglog(n, out["mse_routed"], "s", color="tab:blue", label="routed (measured)")
    ax.loglog(grid, V_b / grid, "-", color="tab:red", alpha=0.5, label="V(g_b)/n")
    ax.loglog(grid, V_r / grid, "-", color="tab:blue", alpha=0.5, label="V(g_r)/n")
    ax.axhline(target_mse, color="0.4", ls=":", lw=1)
    for V, color in ((V_b, "tab:red"), (V_r, "tab:blue")):
        ax.axvline(samples_needed(V, target_mse), color=color, ls=":", lw=1)
    ax.set_xlabel("samples n")
    ax.set_ylabel("E‖ḡ_n − E g‖²")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
