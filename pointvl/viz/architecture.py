"""The policy's blocks drawn (Sec. 3.1): parameter counts, Point-BERT's FPS + KNN groups, and
one point token's Eq. (2) attention over the image (weights from
``GeometryGuidedCrossAttention(..., return_weights=True)``)."""

from __future__ import annotations

import numpy as np

from pointvl.viz import as_numpy
from pointvl.viz.dataset import UP


def param_counts(model) -> dict[str, int]:
    """Parameters per block of ``PointVLForConditionalGeneration.param_groups()`` + total."""
    counts = {name: sum(p.numel() for p in ps) for name, ps in model.param_groups().items()}
    counts["total"] = sum(p.numel() for p in model.parameters())
    counts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts


def grouping_figure(points: np.ndarray, neighborhood, centers, max_groups: int = 64):
    """Plotly 3D: Point-BERT's FPS centres (black) and their KNN groups (one colour each).

    ``neighborhood`` (G, K, >= 3) with xyz relative to the centre and ``centers`` (G, 3) from
    ``point_bert.group_points`` (one sample). Points in no drawn group are light grey; a point
    in several groups takes the colour of the last one drawn.
    """
    import plotly.express as px
    import plotly.graph_objects as go

    xyz = np.asarray(points)[:, :3]
    nb, ce = as_numpy(neighborhood)[..., :3], as_numpy(centers)  # (G, K, 3), (G, 3)
    members = nb + ce[:, None]  # (G, K, 3) back in the object frame
    palette = px.colors.qualitative.Dark24
    traces = [
        go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="markers", name="all points",
                     marker={"size": 1.5, "color": "#d0d0d0"})
    ]  # fmt: skip
    for g in range(min(len(ce), max_groups)):
        m = members[g]
        traces.append(go.Scatter3d(x=m[:, 0], y=m[:, 1], z=m[:, 2], mode="markers",
                                   marker={"size": 2.5, "color": palette[g % len(palette)]},
                                   showlegend=False, name=f"group {g}"))  # fmt: skip
    traces.append(
        go.Scatter3d(x=ce[:, 0], y=ce[:, 1], z=ce[:, 2], mode="markers", name="FPS centres",
                     marker={"size": 4, "color": "black"})
    )  # fmt: skip
    fig = go.Figure(traces)
    fig.update_scenes(aspectmode="data", camera=UP)
    fig.update_layout(
        title=f"{len(ce)} groups of {nb.shape[1]} points (FPS + KNN)",
        height=460, width=640, margin={"l": 0, "r": 0, "t": 40, "b": 0},
    )  # fmt: skip
    return fig


def attention_heatmap_figure(weights, image: np.ndarray, grid_hw: tuple[int, int], uv=None):
    """Matplotlib: one point token's attention over the image tokens (Eq. 2), per head and
    averaged, drawn over the image. ``weights`` (h, I) for one point token; ``grid_hw`` the
    merged token grid (Qwen2.5-VL: (H/28, W/28), tokens in raster order); ``uv`` (2,) the
    token's FPS centre projected into the image (white star), if given. The colour scale spans
    [min, max] of the weights (not [0, 1]), so near-uniform weights still show their pattern."""
    import matplotlib.pyplot as plt

    w = as_numpy(weights)  # (h, I)
    gh, gw = grid_hw
    maps = [w.mean(0)] + list(w)
    titles = ["mean over heads"] + [f"head {i}" for i in range(len(w))]
    fig, axes = plt.subplots(1, len(maps), figsize=(2.6 * len(maps), 2.9), squeeze=False)
    H, W = image.shape[:2]
    for ax, m, title in zip(axes[0], maps, titles):
        ax.imshow(image, extent=(0, W, H, 0))
        im = ax.imshow(m.reshape(gh, gw), extent=(0, W, H, 0), cmap="inferno", alpha=0.6,
                       vmin=float(w.min()), vmax=float(w.max()), interpolation="nearest")  # fmt: skip
        if uv is not None:
            ax.scatter([uv[0]], [uv[1]], marker="*", s=120, color="white", edgecolor="black")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.colorbar(im, ax=axes[0].tolist(), fraction=0.02, label="attention weight")
    return fig
