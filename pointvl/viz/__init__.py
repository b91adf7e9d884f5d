"""pointvl.viz: one module per thing shown.

html           ``Html`` and ``html_table`` (tables Jupyter renders and nbconvert keeps)
notebook       ``notebook_setup``: Plotly renderer, print options, known warnings
page           offline pages: the shared plotly.js and MathJax, notebook -> HTML export
partition      the token partition of a completion (Eqs. 6-7) and routed advantages (Eq. 10)
rewards        field rewards (Eq. 8), RPC drawn (Eqs. 11-13), λ's slider (Eq. 14)
dataset        mesh, cloud, camera, render and category figures (Sec. 4.1)
architecture   Point-BERT groups, parameter counts, Eq. 2's attention over the image
training       training logs, curves, launch commands and accelerate configs
tables         our results beside the paper's (Tables 1-5)
reprojection   the 3D labels beside the image they must agree with
advantages     per-token advantage heatmaps
figure3, routed_group, variance, view, credit_lab: one figure family each
"""

from __future__ import annotations

from typing import Any

import numpy as np


def as_numpy(x: Any) -> np.ndarray:
    """A tensor (any device), list or array as a numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def draw_box2d(ax, box, **kw) -> None:
    """A 2D box [x1, y1, x2, y2] (pixels) as an unfilled rectangle on a matplotlib axis."""
    from matplotlib.patches import Rectangle

    x1, y1, x2, y2 = (float(v) for v in box)
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, **kw))
