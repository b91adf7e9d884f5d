"""The ``view`` task drawn: what the camera sees, what it does not, and the amodal targets.

``visibility_figure`` (Plotly, one 3D scene in the view frame: x_v right, y_v up, z_v toward
the camera, ``pointvl.data.view``)::

    grey        the full cloud's points the camera does not see (never in the input)
    light blue  the full cloud's points it sees
    dark blue   the input: the depth pixels back-projected, FPS-thinned
    green       the amodal GT box (the whole object)      orange dashed  the input's AABB
    blue dots   GT keypoints the camera sees              red crosses    occluded GT keypoints
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pointvl.geometry import box_from_points
from pointvl.viz.reprojection import GT_COLOR, KPT_COLOR, PRED_COLOR, PROJ_COLOR, box3d_edges


def visibility_figure(
    full_xyz: Any,
    full_visible: Any,
    cloud_xyz: Any,
    bbox3d: Any,
    kpts3d: Any,
    kpts3d_visible: Any,
    title: str = "",
):
    """full_xyz (N, 3) and full_visible (N,) bool: the whole cloud in the view frame and what
    the camera sees of it; cloud_xyz (N', 3): the input cloud; bbox3d (6,), kpts3d (M, 3),
    kpts3d_visible (M,): the amodal targets. Returns a go.Figure."""
    import plotly.graph_objects as go

    full, vis = np.asarray(full_xyz, np.float64), np.asarray(full_visible, bool)
    cloud = np.asarray(cloud_xyz, np.float64)[:, :3]
    kp, kv = np.asarray(kpts3d, np.float64).reshape(-1, 3), np.asarray(kpts3d_visible, bool)
    if full.shape != (len(vis), 3) or kp.shape != (len(kv), 3):
        raise ValueError(
            f"visibility_figure: expected full_xyz (N, 3) with full_visible (N,) and kpts3d "
            f"(M, 3) with kpts3d_visible (M,); got {full.shape}, {vis.shape}, {kp.shape}, "
            f"{kv.shape}"
        )
    gt, seen = box3d_edges(bbox3d), box3d_edges(box_from_points(cloud))

    def pts(x, name, **marker):
        return go.Scatter3d(x=x[:, 0], y=x[:, 1], z=x[:, 2], mode="markers", name=name,
                            marker=marker)  # fmt: skip

    def lines(e, name, **line):
        return go.Scatter3d(x=e[:, 0], y=e[:, 1], z=e[:, 2], mode="lines", name=name, line=line)

    fig = go.Figure([
        pts(full[~vis], f"occluded ({(~vis).sum()})", size=1.5, color="#bbbbbb"),
        pts(full[vis], f"visible ({vis.sum()})", size=1.5, color="#9ecae1"),
        pts(cloud, f"input: depth points ({len(cloud)})", size=2, color="#08519c"),
        lines(gt, "bbox3d (GT, amodal)", color=GT_COLOR, width=5),
        lines(seen, "AABB of the input", color=PROJ_COLOR, width=3, dash="dash"),
        pts(kp[kv], "kpts3d visible", size=5, color=KPT_COLOR),
        pts(kp[~kv], "kpts3d occluded", size=5, color=PRED_COLOR, symbol="x"),
    ])  # fmt: skip
    eye = {"up": {"x": 0, "y": 1, "z": 0}, "eye": {"x": 0.4, "y": 0.6, "z": 2.0}}
    fig.update_scenes(aspectmode="data", camera=eye)
    fig.update_layout(title={"text": title}, height=520, width=820,
                      margin={"l": 0, "r": 0, "t": 50, "b": 0}, legend={"font": {"size": 10}})  # fmt: skip
    return fig
