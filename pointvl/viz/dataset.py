"""The benchmark's making drawn (Sec. 4.1): mesh and cloud, camera views, render, histogram."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pointvl.viz import draw_box2d

UP = {"up": {"x": 0, "y": 1, "z": 0}, "eye": {"x": 1.2, "y": 0.8, "z": 1.6}}
"""Plotly 3D camera for the object frame: y up, looking at the front (+z) from above-right."""


def mesh_cloud_figure(mesh, points: np.ndarray, kpt_idx: np.ndarray | None = None):
    """Plotly: left, the procedural mesh coloured by part; right, the Poisson-disk cloud
    (N, 6) with its FPS keypoints (``kpt_idx``) in red. Object frame: y up, +z front."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    v, f = mesh.vertices, mesh.triangles
    fig = make_subplots(
        rows=1, cols=2, specs=[[{"type": "scene"}, {"type": "scene"}]],
        subplot_titles=(f"mesh: {len(f)} triangles, {len(mesh.part_names)} parts",
                        f"cloud: {len(points)} Poisson-disk points + keypoints"),
    )  # fmt: skip
    fig.add_trace(
        go.Mesh3d(x=v[:, 0], y=v[:, 1], z=v[:, 2], i=f[:, 0], j=f[:, 1], k=f[:, 2],
                  intensity=np.asarray(mesh.part_ids, float), intensitymode="cell",
                  colorscale="Turbo", showscale=False, name="mesh"), row=1, col=1,
    )  # fmt: skip
    xyz = np.asarray(points)[:, :3]
    fig.add_trace(
        go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="markers", name="points",
                     marker={"size": 1.5, "color": xyz[:, 1], "colorscale": "Viridis"}),
        row=1, col=2,
    )  # fmt: skip
    if kpt_idx is not None:
        k = xyz[np.asarray(kpt_idx)]
        fig.add_trace(
            go.Scatter3d(x=k[:, 0], y=k[:, 1], z=k[:, 2], mode="markers", name="FPS keypoints",
                         marker={"size": 5, "color": "red"}), row=1, col=2,
        )  # fmt: skip
    fig.update_scenes(aspectmode="data", camera=UP)
    fig.update_layout(height=420, width=950, margin={"l": 0, "r": 0, "t": 40, "b": 0})
    return fig


def camera_views_figure(views: Mapping[str, Sequence]):
    """Matplotlib polar plot: sampled (azimuth, elevation) per category, one colour each.

    ``views`` maps a category to a list of ``cameras.Camera``. Azimuth 0 = the object's
    front (+z), 90 = its left side (+x); the radius is the elevation in degrees.
    """
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(5.2, 5.2))
    ax = fig.add_subplot(projection="polar")
    for cat, cams in views.items():
        az = np.radians([c.azimuth_deg for c in cams])
        el = [c.elevation_deg for c in cams]
        ax.scatter(az, el, s=10, label=cat, alpha=0.7)
    ax.set_theta_zero_location("N")
    ax.set_rlim(0, 50)
    ax.set_title("camera azimuth (angle) and elevation (radius, deg)", fontsize=9)
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(-0.15, -0.12))
    fig.tight_layout()
    return fig


def render_figure(render, bbox2d=None, kpts2d=None, kpts_projected=None):
    """Matplotlib: RGB | mask with the 2D box | z-depth, of one ``render.RenderOutput``.

    On the mask: ``bbox2d`` (green), ``kpts2d`` after the snapping rule (blue) and, if given,
    the raw projections of the 3D keypoints (orange x): a snapped keypoint is where they
    differ. Image axes: x right, y down (OpenCV).
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.6))
    h, w = render.mask.shape
    ext = (0, w, h, 0)
    axes[0].imshow(render.rgb, extent=ext, interpolation="nearest")
    axes[0].set_title("rgb (Lambert shading)", fontsize=9)
    axes[1].imshow(render.mask, extent=ext, cmap="gray", interpolation="nearest")
    if bbox2d is not None:
        draw_box2d(axes[1], bbox2d, color="tab:green", lw=1.5)
    if kpts_projected is not None:
        kp = np.asarray(kpts_projected).reshape(-1, 2)
        axes[1].scatter(kp[:, 0], kp[:, 1], marker="x", s=30, color="tab:orange", label="projected")
    if kpts2d is not None:
        k2 = np.asarray(kpts2d).reshape(-1, 2)
        axes[1].scatter(k2[:, 0], k2[:, 1], s=10, color="tab:blue", label="kpts2d")
    axes[1].set_title("mask, bbox2d, kpts2d", fontsize=9)
    depth = np.where(render.mask, render.depth, np.nan)
    im = axes[2].imshow(depth, extent=ext, cmap="magma_r", interpolation="nearest")
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    axes[2].set_title("z-depth (object units)", fontsize=9)
    if kpts2d is not None or kpts_projected is not None:
        axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def category_histogram_figure(histograms: Mapping[str, Mapping[str, int]], title: str):
    """Plotly grouped bars: instances per category, one bar series per split."""
    import plotly.graph_objects as go

    cats = sorted({c for h in histograms.values() for c in h})
    bars = [
        go.Bar(x=cats, y=[int(h.get(c, 0)) for c in cats], name=split)
        for split, h in histograms.items()
    ]
    fig = go.Figure(bars)
    fig.update_layout(
        barmode="group", title=title, yaxis={"title": "instances"}, height=380, width=900
    )
    return fig
