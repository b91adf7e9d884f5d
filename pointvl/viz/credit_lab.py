"""Figures of the credit-assignment lab (``pointvl.train.lab``): learning curves with 95%
bands over seeds, samples to threshold, and the gradient-variance decomposition."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

ARM_LABELS = {
    "grpo": "GRPO (broadcast)",
    "gdpo": "GDPO (normalize-then-sum, broadcast)",
    "grca": "GRCA (routed, A_bg = Â_seq)",
    "grca_bg0": "GRCA (routed, A_bg = 0)",
}
ARM_COLORS = {"grpo": "#4c72b0", "gdpo": "#8172b2", "grca": "#dd8452", "grca_bg0": "#55a868"}


def curve_band(runs: Sequence[Mapping], arm: str, field: int | None = None):
    """(samples (E,), mean (E,), lo (E,), hi (E,)): the held-out reward of ``arm`` over seeds
    (mean over fields, or one field), with a 95% t-interval band."""
    from scipy import stats

    mine = [r for r in runs if r["arm"] == arm]
    x = np.asarray(mine[0]["samples"], dtype=float)
    acc = np.array([r["accuracy"] for r in mine], dtype=float)  # (S, E, F)
    y = acc.mean(-1) if field is None else acc[..., field]  # (S, E)
    m = y.mean(0)
    h = stats.t.ppf(0.975, len(y) - 1) * y.std(0, ddof=1) / np.sqrt(len(y)) if len(y) > 1 else 0
    return x, m, m - h, m + h


def lab_figure(runs: Sequence[Mapping], summary: Mapping, variance: Mapping, path):
    """One PNG: (a) mean held-out reward vs samples, (b) each field, (c) samples to threshold,
    (d) gradient variance of routed vs broadcast advantages per field."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(summary["arms"])
    fields = list(variance["fields"])
    fig, ax = plt.subplots(1, 4, figsize=(20, 4.6), gridspec_kw={"width_ratios": [1.3, 1.3, 1, 1]})
    for arm in arms:
        x, m, lo, hi = curve_band(runs, arm)
        ax[0].plot(x, m, color=ARM_COLORS[arm], label=ARM_LABELS[arm])
        ax[0].fill_between(x, lo, hi, color=ARM_COLORS[arm], alpha=0.2)
    ax[0].axhline(summary["threshold"], color="k", lw=0.8, ls="--", label="threshold")
    ax[0].set(xlabel="RL samples (completions)", ylabel="held-out reward (mean of fields)",
              title=f"(a) learning curves, 95% band over {summary['arms'][arms[0]]['seeds']} seeds")  # fmt: skip
    ax[0].legend(fontsize=8, loc="lower right")
    for k, name in enumerate(fields):
        for arm in ("grpo", "grca"):
            if arm in arms:
                x, m, lo, hi = curve_band(runs, arm, k)
                ls = ["-", "--", ":", "-."][k % 4]
                ax[1].plot(x, m, color=ARM_COLORS[arm], ls=ls, label=f"{arm} · {name}")
    ax[1].set(xlabel="RL samples", ylabel="held-out reward of the field",
              title="(b) per field, GRPO vs GRCA")  # fmt: skip
    ax[1].legend(fontsize=7, ncol=2, loc="lower right")
    st = [summary["arms"][a]["samples_to_threshold"] for a in arms]
    means = [s["mean"] for s in st]
    err = np.array([[s["mean"] - s["ci_lo"] for s in st], [s["ci_hi"] - s["mean"] for s in st]])
    ax[2].bar(range(len(arms)), means, yerr=err, color=[ARM_COLORS[a] for a in arms], capsize=4)
    ax[2].set_xticks(range(len(arms)), arms, rotation=20)
    for i, s in enumerate(st):
        ax[2].text(i, means[i], f"{means[i]:.0f}\n({s['censored']} cens.)", ha="center",
                   va="bottom", fontsize=8)  # fmt: skip
    ax[2].set(ylabel=f"samples to reach {summary['threshold']:.2f}", title="(c) samples to threshold, 95% CI")  # fmt: skip
    vb = [variance["fields"][f]["V_b"] for f in fields]
    vr = [variance["fields"][f]["V_r"] for f in fields]
    pred = [variance["fields"][f]["V_r"] + variance["fields"][f]["predicted"] for f in fields]
    xs = np.arange(len(fields))
    ax[3].bar(xs - 0.27, vr, 0.27, label="V(g_r) routed (measured)", color=ARM_COLORS["grca"])
    ax[3].bar(xs, vb, 0.27, label="V(g_b) broadcast (measured)", color=ARM_COLORS["grpo"])
    ax[3].bar(xs + 0.27, pred, 0.27, label="V(g_r) + Eq. 26 terms", color="#999999")
    ax[3].set_xticks(xs, fields)
    ax[3].set(ylabel="gradient variance (sum over parameters)",
              title=f"(d) Sec. 3.6 on the real network (n = {variance['n']})")  # fmt: skip
    ax[3].legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
