"""Field rewards (Eq. 8), their group standardization (Eq. 9), RPC drawn (Eqs. 11-13) and the
RPC weight λ on the background advantage (Eq. 14), on a ``pointvl.demo.DemoGroup``."""

from __future__ import annotations

from collections.abc import Sequence

from pointvl.schema import GEOMETRIC_FIELDS
from pointvl.viz import draw_box2d
from pointvl.viz.html import Html, html_table


def _labels(group) -> list[str]:
    return [f"{i}: {c}" for i, c in enumerate(group.cases)]


def rewards_html(group) -> Html:
    """Per completion: the four field rewards (Eq. 8), r_rpc (Eq. 13), format and r_seq."""
    s = group.scores
    rows = [
        [label, *s["per_field_rewards"][i], s["rpc"][i], s["format"][i], s["seq"][i]]
        for i, label in enumerate(_labels(group))
    ]
    return html_table(rows, ["completion", *GEOMETRIC_FIELDS, "rpc", "format", "seq"])


def field_advantages_html(group) -> Html:
    """Eq. (9) on the group: Â_{i,k} per field, plus Â_seq and Â_rpc."""
    from pointvl.credit import standardize_in_groups

    G = group.num_generations
    fa = standardize_in_groups(group.scores["per_field_rewards"], G).numpy()  # (B, F)
    seq = standardize_in_groups(group.scores["seq"], G).numpy()  # (B,)
    rpc = standardize_in_groups(group.scores["rpc"], G).numpy()  # (B,)
    rows = [[label, *fa[i], seq[i], rpc[i]] for i, label in enumerate(_labels(group))]
    return html_table(rows, ["completion", *(f"Â {n}" for n in GEOMETRIC_FIELDS), "Â seq", "Â rpc"])


def rpc_figure(group, rows: Sequence[int] = (0, 2, 6), image_size: int = 224):
    """Eqs. (11-13) drawn: for each chosen completion, the 8 projected corners of its predicted
    3D box (wireframe), their footprint B_proj (dashed), its predicted 2D box B̂_2d (solid) and
    the ground-truth 2D box (grey). The title gives r_rpc = IoU(B_proj, B̂_2d). Image axes:
    x right, y down (OpenCV). Returns a matplotlib figure.
    """
    import matplotlib.pyplot as plt

    from pointvl.geometry import aabb_corners, project_points, reprojected_footprint
    from pointvl.schema import dequantize_3d
    from pointvl.viz.reprojection import BOX_EDGES

    K, R, t = group.target["K"], group.target["R"], group.target["t"]
    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 4.2), squeeze=False)
    for ax, i in zip(axes[0], rows):
        p = group.parsed[i]
        draw_box2d(ax, group.target["bbox2d"], color="0.6", lw=3, label="ground-truth 2D box")
        if p.values["bbox3d"] is not None:
            box3d = dequantize_3d(p.values["bbox3d"], group.quant_bins)  # (6,)
            uv, _ = project_points(aabb_corners(box3d), K, R, t)  # (8, 2)
            for a, b in BOX_EDGES:
                ax.plot(uv[[a, b], 0], uv[[a, b], 1], color="tab:blue", lw=1)
            ax.scatter(uv[:, 0], uv[:, 1], s=12, color="tab:blue", label="projected corners u_j")
            foot, _ = reprojected_footprint(box3d, K, R, t)
            draw_box2d(ax, foot, color="tab:blue", ls="--", lw=1.5, label="B_proj (Eq. 12)")
        if p.values["bbox2d"] is not None:
            draw_box2d(ax, p.values["bbox2d"], color="tab:red", lw=1.5, label="predicted 2D box")
        ax.set_xlim(0, image_size)
        ax.set_ylim(image_size, 0)
        ax.set_aspect("equal")
        ax.set_title(f"{i}: {group.cases[i]}\nr_rpc = {group.scores['rpc'][i]:.3f}", fontsize=9)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def lambda_slider_figure(group, lams: Sequence[float]):
    """Eq. (14) as a Plotly slider: A_bg(λ) = (1 − λ) Â_seq + λ Â_rpc per completion.

    Bars: the background advantage of each completion at the slider's λ; markers: the two
    ends, Â_seq (λ = 0, GRCA) and Â_rpc (λ = 1). Field-span advantages do not move with λ.
    The slider sits below the completion labels (its own margin), never on them.
    """
    import plotly.graph_objects as go

    from pointvl.credit import background_advantages, rpc_shaped_background

    G, labels = group.num_generations, _labels(group)
    bg = background_advantages(group.scores["seq"], G)  # (B,)
    rpc = group.scores["rpc"]
    per_lam = [rpc_shaped_background(bg, rpc, G, float(lam)).numpy() for lam in lams]
    a_rpc = rpc_shaped_background(bg, rpc, G, 1.0).numpy()  # (B,)
    fig = go.Figure([
        go.Bar(x=labels, y=per_lam[0].tolist(), name="A_bg(λ)", marker_color="#4c72b0"),
        go.Scatter(x=labels, y=bg.numpy().tolist(), mode="markers", name="Â_seq (λ=0)",
                   marker={"symbol": "line-ew-open", "size": 18, "color": "black"}),
        go.Scatter(x=labels, y=a_rpc.tolist(), mode="markers", name="Â_rpc (λ=1)",
                   marker={"symbol": "diamond-open", "size": 10, "color": "#dd8452"}),
    ])  # fmt: skip
    steps = [
        {"method": "restyle", "label": f"{lam:g}", "args": [{"y": [v.tolist()]}, [0]]}
        for lam, v in zip(lams, per_lam)
    ]
    fig.update_layout(
        # plot area 600 - 80 - 230 = 290 px; the tilted labels take ~110 px below it
        sliders=[{"active": 0, "steps": steps, "currentvalue": {"prefix": "λ = "},
                  "y": -0.42, "yanchor": "top", "len": 0.9, "x": 0.05}],
        xaxis={"tickangle": -30, "automargin": False},
        yaxis={"title": "background advantage A_bg", "range": [-2.6, 2.6], "zeroline": True},
        title="Eq. (14): RPC shapes the background advantage only",
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"},
        height=600, width=900, margin={"b": 230, "t": 80},
    )  # fmt: skip
    return fig
