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
# the token partition strip's colour per region (PNG and HTML alike)
FIELD_COLORS = ("#dddddd", "#1b9e77", "#d95f02", "#7570b3", "#e7298a")
COLOR_NAMES = ("grey", "green", "orange", "purple", "pink")


def _hover(tokens: Sequence[Sequence[str]], field_ids: np.ndarray, adv: np.ndarray | None):
    B, T = field_ids.shape
    text = []
    for i in range(B):
        row = []
        for t in range(T):
            if t < len(tokens[i]):
                tok = tokens[i][t].replace("<", "&lt;").replace("\n", "\\n")
                cell = f"token {t}: '{tok}'<br>{FIELD_NAMES[field_ids[i, t]]}"
                row.append(cell + (f"<br>A={adv[i, t]:+.3f}" if adv is not None else ""))
            else:
                row.append("(padding)")
        text.append(row)
    return text


def _gaps(z: np.ndarray, lengths: Sequence[int]) -> list[list[float | None]]:
    """(B, T) -> rows with None past each completion's end: Plotly leaves those cells empty
    (a NaN in a binary array would be drawn as a colour)."""
    return [[None if t >= n or not np.isfinite(v) else float(v) for t, v in enumerate(row)]
            for row, n in zip(z, lengths)]  # fmt: skip


def _discrete_scale(colors: Sequence[str]) -> list:
    k = len(colors)
    return [s for j, c in enumerate(colors) for s in ([j / k, c], [(j + 1) / k, c])]


def advantage_figure(
    advantages: Mapping[str, np.ndarray],
    field_ids: np.ndarray,
    tokens: Sequence[Sequence[str]],
    row_labels: Sequence[str],
    title: str = "Per-token advantages",
):
    """Plotly figure with one heatmap per variant, advantages (B, T) with NaN where padded,
    and below them the token partition strip (Eqs. 6-7) as the PNG has it. Padding is left
    empty (white), never drawn as an advantage."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(advantages)
    lengths = [len(t) for t in tokens]
    ids = np.asarray(field_ids)  # (B, T)
    vmax = max(float(np.nanmax(np.abs(a))) for a in advantages.values()) or 1.0
    titles = [*names, "token partition (Eqs. 6-7): " + ", ".join(
        f"{n} = {c}" for n, c in zip(FIELD_NAMES, COLOR_NAMES))]  # fmt: skip
    fig = make_subplots(rows=len(names) + 1, cols=1, subplot_titles=titles,
                        vertical_spacing=0.06, shared_xaxes=True)  # fmt: skip
    for r, name in enumerate(names, start=1):
        adv = np.asarray(advantages[name], dtype=float)  # (B, T)
        fig.add_trace(
            go.Heatmap(z=_gaps(adv, lengths), y=list(row_labels), colorscale="RdBu", zmid=0.0,
                       zmin=-vmax, zmax=vmax, text=_hover(tokens, ids, adv), hoverinfo="text",
                       hoverongaps=False, showscale=r == 1, colorbar={"title": "A_i,t", "len": 0.6}),
            row=r, col=1,
        )  # fmt: skip
    fig.add_trace(
        go.Heatmap(z=_gaps(ids.astype(float), lengths), y=list(row_labels),
                   colorscale=_discrete_scale(FIELD_COLORS), zmin=-0.5,
                   zmax=len(FIELD_COLORS) - 0.5, showscale=False, hoverongaps=False,
                   text=_hover(tokens, ids, None), hoverinfo="text"),
        row=len(names) + 1, col=1,
    )  # fmt: skip
    for r in range(1, len(names) + 2):
        fig.update_yaxes(autorange="reversed", row=r, col=1, tickfont={"size": 9})
    fig.update_xaxes(title_text="completion token t", row=len(names) + 1, col=1)
    fig.update_layout(title=title, height=300 * (len(names) + 1), width=1200,
                      plot_bgcolor="white")  # fmt: skip
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
    colors = list(FIELD_COLORS)
    pad = np.isnan(np.asarray(advantages[names[0]], float))  # (B, T) True past a row's end
    axes[-1].imshow(
        np.ma.masked_where(pad, np.asarray(field_ids)),  # padding left white, not background
        aspect="auto",
        cmap=ListedColormap(colors),
        vmin=-0.5,
        vmax=len(colors) - 0.5,
        interpolation="nearest",
    )
    axes[-1].set_title(
        "token partition (Eqs. 6-7): "
        + ", ".join(f"{n}={c}" for n, c in zip(FIELD_NAMES, COLOR_NAMES)),
        fontsize=9,
        loc="left",
    )
    axes[-1].set_yticks(range(len(row_labels)), row_labels, fontsize=7)
    axes[-1].set_xlabel("completion token t")
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
