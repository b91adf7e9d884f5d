"""RL curves on the validation split: sampled reward of each field vs step, one line per arm
(mean over seeds, 95% t-band), with the keypoint metrics that KPA can hide (PCK, spread)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

PANELS = (
    ("reward/bbox2d", "IoU2D reward"),
    ("reward/bbox3d", "IoU3D reward"),
    ("reward/kpts2d", "keypoint reward 2D"),
    ("reward/kpts3d", "keypoint reward 3D"),
    ("reward/rpc", "RPC"),
    ("pck3d", "PCK-3D@0.1 (stricter)"),
    ("spread3d", "keypoint spread 3D (1 = GT-like)"),
    ("spans/parse_fail_frac", "parse failures (sampled)"),
)


def _band(curves: Sequence[tuple[Sequence, Sequence]]):
    """Curves of several seeds on common steps -> (steps, mean, lo, hi)."""
    from scipy import stats

    n = min(len(c[0]) for c in curves)
    x = np.asarray(curves[0][0][:n], dtype=float)
    y = np.array([c[1][:n] for c in curves], dtype=float)  # (S, E)
    m = np.nanmean(y, 0)
    if len(y) < 2:
        return x, m, m, m
    h = stats.t.ppf(0.975, len(y) - 1) * np.nanstd(y, 0, ddof=1) / np.sqrt(len(y))
    return x, m, m - h, m + h


def validation_figure(
    arms: Mapping[str, Sequence[Path]], labels: Mapping[str, str], path: str | Path
) -> Path | None:
    """One PNG, a panel per metric: validation value vs RL step for each arm's runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pointvl.eval.results import validation_curves

    data = {a: {k: validation_curves(logs, k) for k, _ in PANELS} for a, logs in arms.items()}
    data = {a: d for a, d in data.items() if any(d.values())}
    if not data:
        return None
    fig, axes = plt.subplots(2, 4, figsize=(18, 7.5), constrained_layout=True)
    for ax, (key, title) in zip(axes.ravel(), PANELS):
        for i, (arm, d) in enumerate(data.items()):
            if not d[key]:
                continue
            x, m, lo, hi = _band(d[key])
            n = len(d[key])
            ax.plot(x, m, color=f"C{i}", label=f"{labels.get(arm, arm)} ({n} seed{'s' * (n > 1)})")
            ax.fill_between(x, lo, hi, color=f"C{i}", alpha=0.15)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("RL step")
        ax.set_ylabel(title.split(" (")[0])
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Validation prompts (held out from train), sampled at the RL temperature: "
                 "mean over seeds, 95% t-band (ours)")  # fmt: skip
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
