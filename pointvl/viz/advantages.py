"""Per-token advantage heatmaps: rows are completions, columns are completion tokens.

One panel per advantage builder (broadcast GRPO, GRCA, GRCA+RPC). Hovering a cell in the
Plotly figure shows the token text, its field (Eqs. 6-7) and its advantage; the static PNG
draws the same panels with matplotlib and outlines the field spans.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pointvl.schema import GEOMETRIC_FIELDS

FIELD_NAMES = ("background",) + GEOMETRIC_FIELDS


def _hover(tokens: Sequence[Sequence[str]], field_ids: np.ndarray, adv: np.ndarray) -> list:
    B, T = adv.shape
    text = []
    for i in range(B):
        row = []
        for t in range(T):
            if t < len(tokens[i]):
                tok = tokens[i][t].replace("<", "&lt;").replace("\n", "\\n")
                row.append(
                    f"token {t}: '{tok}'<br>{FIELD_NAMES[field_ids[i, t]]}<br>A={adv[i, t]:+.3f}"
                )
            else:
                row.append("(padding)")
        text.append(row)
    return text


def advantage_figure(
    advantages: Mapping[str, np.ndarray],
    field_ids: np.ndarray,
    tokens: Sequence[Sequence[str]],
    row_labels: Sequence[str],
    title: str = "Per-token advantages",
):
    """Plotly figure with one heatmap per variant; advantages (B, T), NaN where padded."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(advantages)
    vmax = max(float(np.nanmax(np.abs(a))) for a in advantages.values()) or 1.0
    fig = make_subplots(rows=len(names), cols=1, subplot_titles=names, vertical_spacing=0.08)
    for r, name in enumerate(names, start=1):
        adv = np.asarray(advantages[name], dtype=float)  # (B, T)
        fig.add_trace(
            go.Heatmap(
                z=adv,
                y=list(row_labels),
                colorscale="RdBu",
                zmid=0.0,
                zmin=-vmax,
                zmax=vmax,
                text=_hover(tokens, field_ids, adv),
                hoverinfo="text",
                showscale=r == 1,
                colorbar={"title": "A_i,t"},
            ),
            row=r,
            col=1,
        )
        fig.update_yaxes(autorange="reversed", row=r, col=1)
    fig.update_xaxes(title_text="completion token t", row=len(names), col=1)
    fig.update_layout(title=title, height=320 * len(names), width=1200)
    return fig


def advantage_png(
    path,
    advantages: Mapping[str, np.ndarray],
    field_ids: np.ndarray,
    row_labels: Sequence[str],
    title: str = "Per-token advantages",
) -> None:
    """Static version: a panel per variant, field spans marked by coloured ticks below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    names = list(advantages)
    vmax = max(float(np.nanmax(np.abs(a))) for a in advantages.values()) or 1.0
    fig, axes = plt.subplots(
        len(names) + 1,
        1,
        figsize=(14, 2.2 * len(names) + 2.4),
        constrained_layout=True,
        gridspec_kw={"height_ratios": [3] * len(names) + [3]},
    )
    for ax, name in zip(axes[:-1], names):
        im = ax.imshow(
            np.asarray(advantages[name], float),
            aspect="auto",
            cmap="RdBu",
            vmin=-vmax,
            vmax=vmax,
            interpolation="nearest",
        )
        ax.set_title(name, fontsize=10, loc="left")
        ax.set_yticks(range(len(row_labels)), row_labels, fontsize=7)
        ax.set_xticks([])
    fig.colorbar(im, ax=axes[:-1], shrink=0.8, label="advantage $A_{i,t}$")
    colors = ["#dddddd", "#1b9e77", "#d95f02", "#7570b3", "#e7298a"]
    axes[-1].imshow(
        np.asarray(field_ids),
        aspect="auto",
        cmap=ListedColormap(colors),
        vmin=-0.5,
        vmax=len(colors) - 0.5,
        interpolation="nearest",
    )
    axes[-1].set_title(
        "token partition (Eqs. 6-7): "
        + ", ".join(
            f"{n}={c}" for n, c in zip(FIELD_NAMES, ["grey", "green", "orange", "purple", "pink"])
        ),
        fontsize=9,
        loc="left",
    )
    axes[-1].set_yticks(range(len(row_labels)), row_labels, fontsize=7)
    axes[-1].set_xlabel("completion token t")
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
