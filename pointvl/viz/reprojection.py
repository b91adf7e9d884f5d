"""Reprojection views: the 3D labels beside the image they must agree with (Sec. 4.1, 4.6).

``reprojection_figure(samples, predictions=None)`` builds one interactive Plotly figure:

    left  (3D scene)   point cloud, 3D box, 3D keypoints, camera frustum
    right (image)      RGB with the 2D box, 2D keypoints and the projected 3D box edges
                       (Eqs. 11-12: the footprint that RPC compares with the 2D box)
    dropdown           one entry per sample

A sample is any mapping with ``points`` (N, 3 or 6), ``image`` (H, W, 3), ``K``, ``R``,
``t``, ``bbox2d``, ``bbox3d``, ``kpts2d``, ``kpts3d`` (numpy arrays, lists or CPU tensors;
a ``PointVLDataset`` item works as is) and optionally ``uid`` / ``category``. A prediction
is a mapping with any of the four geometric fields (continuous values: pixels, object
frame); it is drawn dashed in red. ``write_html`` saves offline HTML (plotly.js inlined);
``gallery_png`` draws a static matplotlib grid of the image panels.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pointvl.geometry import aabb_corners, project_points, reprojected_footprint
from pointvl.io import atomic_file
from pointvl.viz import as_numpy

GT_COLOR, PRED_COLOR, PROJ_COLOR, KPT_COLOR = "#2ca02c", "#d62728", "#ff7f0e", "#1f77b4"
# the 12 edges of an aabb_corners box: corners that differ in exactly one bit (x=1, y=2, z=4)
BOX_EDGES: tuple[tuple[int, int], ...] = tuple(
    (a, b) for a in range(8) for b in range(a + 1, 8) if (a ^ b) in (1, 2, 4)
)


_np = as_numpy


def _camera(sample: Mapping) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    K = _np(sample["K"]).astype(np.float64).reshape(3, 3)
    R = _np(sample["R"]).astype(np.float64).reshape(3, 3)
    t = _np(sample["t"]).astype(np.float64).reshape(3)
    return K, R, t


def _polyline(points: np.ndarray, edges: Sequence[tuple[int, int]]) -> np.ndarray:
    """Segments joined with NaN breaks (Plotly draws gaps at None / NaN)."""
    out = []
    for a, b in edges:
        out += [points[a], points[b], np.full(points.shape[1], np.nan)]
    return np.asarray(out, np.float64)


def box3d_edges(box3d: Any) -> np.ndarray:
    """(36, 3) polyline of the 12 box edges in the object frame."""
    return _polyline(aabb_corners(_np(box3d).astype(np.float64)), BOX_EDGES)


def projected_box_edges(box3d: Any, K, R, t) -> np.ndarray:
    """(36, 2) polyline of the 12 box edges projected into the image (Eq. 11)."""
    uv, _ = project_points(aabb_corners(_np(box3d).astype(np.float64)), K, R, t)
    return _polyline(uv, BOX_EDGES)


def box2d_outline(box2d: Any) -> np.ndarray:
    x1, y1, x2, y2 = _np(box2d).astype(np.float64)
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]])


def frustum_lines(K, R, t, width: int, height: int, depth: float = 0.4) -> np.ndarray:
    """Camera centre to the four image corners at ``depth``, plus the image rectangle."""
    corners = np.array([[0, 0, 1], [width, 0, 1], [width, height, 1], [0, height, 1]], float)
    Xc = (np.linalg.inv(K) @ corners.T).T * depth  # camera frame, z = depth
    X = (Xc - t) @ R  # object frame: R^T (Xc - t)
    C = -R.T @ t
    pts = np.concatenate([C[None], X])  # 0 = centre, 1..4 corners
    return _polyline(pts, [(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (2, 3), (3, 4), (4, 1)])


def _title(sample: Mapping, i: int) -> str:
    parts = [str(sample.get(k)) for k in ("uid", "category") if sample.get(k) is not None]
    return f"{i}: " + " | ".join(parts) if parts else f"sample {i}"


def png_data_uri(image: np.ndarray) -> str:
    """(H, W, 3) uint8 -> a PNG ``data:`` URI (a few KB, where a z-array is ~50 KB)."""
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def object_labels(
    samples: Sequence[Mapping],
    per_sample: Mapping[str, Sequence[float]] | None = None,
    metrics: Sequence[str] = ("iou2d", "iou3d", "rpc"),
) -> list[str]:
    """One label per sample: ``uid | category`` and, with ``per_sample`` metrics
    (``eval.metrics.per_sample_metrics``), e.g. ``IoU3D 0.712 | RPC 0.654``."""
    out = []
    for i, s in enumerate(samples):
        parts = [str(s.get(k)) for k in ("uid", "category") if s.get(k) is not None]
        if per_sample is not None:
            parts += [f"{m.upper().replace('IOU', 'IoU')} {float(per_sample[m][i]):.3f}"
                      for m in metrics if m in per_sample]  # fmt: skip
        out.append(" | ".join(parts) or f"sample {i}")
    return out


def _sample_traces(sample: Mapping, pred: Mapping | None, max_points: int) -> list:
    import plotly.graph_objects as go

    K, R, t = _camera(sample)
    image = _np(sample["image"]).astype(np.uint8)
    h, w = image.shape[:2]
    pts = _np(sample["points"]).astype(np.float32)[:, :3]
    if len(pts) > max_points:
        pts = pts[np.linspace(0, len(pts) - 1, max_points).astype(int)]
    b3, k3 = _np(sample["bbox3d"]), _np(sample["kpts3d"]).reshape(-1, 3)
    b2, k2 = _np(sample["bbox2d"]), _np(sample["kpts2d"]).reshape(-1, 2)
    e3, fr = box3d_edges(b3), frustum_lines(K, R, t, w, h)
    pe = projected_box_edges(b3, K, R, t)
    o2 = box2d_outline(b2)
    s3 = {"scene": "scene"}
    traces = [
        go.Scatter3d(x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], mode="markers", name="points",
                     marker={"size": 1.5, "color": pts[:, 1], "colorscale": "Viridis"}, **s3),
        go.Scatter3d(x=e3[:, 0], y=e3[:, 1], z=e3[:, 2], mode="lines", name="bbox3d (GT)",
                     line={"color": GT_COLOR, "width": 4}, **s3),
        go.Scatter3d(x=k3[:, 0], y=k3[:, 1], z=k3[:, 2], mode="markers", name="kpts3d (GT)",
                     marker={"size": 4, "color": KPT_COLOR}, **s3),
        go.Scatter3d(x=fr[:, 0], y=fr[:, 1], z=fr[:, 2], mode="lines", name="camera",
                     line={"color": "gray", "width": 2}, **s3),
        go.Image(source=png_data_uri(image), name="image", xaxis="x", yaxis="y"),
        go.Scatter(x=pe[:, 0], y=pe[:, 1], mode="lines", name="projected bbox3d (GT)",
                   line={"color": PROJ_COLOR, "width": 1.5}, xaxis="x", yaxis="y"),
        go.Scatter(x=o2[:, 0], y=o2[:, 1], mode="lines", name="bbox2d (GT)",
                   line={"color": GT_COLOR, "width": 2}, xaxis="x", yaxis="y"),
        go.Scatter(x=k2[:, 0], y=k2[:, 1], mode="markers", name="kpts2d (GT)",
                   marker={"size": 6, "color": KPT_COLOR}, xaxis="x", yaxis="y"),
    ]  # fmt: skip
    if pred:
        dash = {"color": PRED_COLOR, "width": 2, "dash": "dash"}
        if pred.get("bbox3d") is not None:
            p3 = _np(pred["bbox3d"])
            pe3, ppe = box3d_edges(p3), projected_box_edges(p3, K, R, t)
            traces += [
                go.Scatter3d(x=pe3[:, 0], y=pe3[:, 1], z=pe3[:, 2], mode="lines",
                             name="bbox3d (pred)", line=dash, **s3),
                go.Scatter(x=ppe[:, 0], y=ppe[:, 1], mode="lines", name="projected bbox3d (pred)",
                           line=dash, xaxis="x", yaxis="y"),
            ]  # fmt: skip
        if pred.get("kpts3d") is not None:
            pk3 = _np(pred["kpts3d"]).reshape(-1, 3)
            traces.append(go.Scatter3d(x=pk3[:, 0], y=pk3[:, 1], z=pk3[:, 2], mode="markers",
                                       name="kpts3d (pred)", marker={"size": 4, "color": PRED_COLOR,
                                       "symbol": "x"}, **s3))  # fmt: skip
        if pred.get("bbox2d") is not None:
            po = box2d_outline(pred["bbox2d"])
            traces.append(go.Scatter(x=po[:, 0], y=po[:, 1], mode="lines", name="bbox2d (pred)",
                                     line=dash, xaxis="x", yaxis="y"))  # fmt: skip
        if pred.get("kpts2d") is not None:
            pk2 = _np(pred["kpts2d"]).reshape(-1, 2)
            traces.append(go.Scatter(x=pk2[:, 0], y=pk2[:, 1], mode="markers", name="kpts2d (pred)",
                                     marker={"size": 7, "color": PRED_COLOR, "symbol": "x"},
                                     xaxis="x", yaxis="y"))  # fmt: skip
    return traces


def _check_samples(samples: Sequence[Mapping], predictions: Sequence | None) -> None:
    """``ValueError`` for no samples, or a prediction list of another length."""
    if len(samples) == 0:
        raise ValueError("reprojection_figure: no samples")
    if predictions is not None and len(predictions) != len(samples):
        raise ValueError(
            f"reprojection_figure: {len(predictions)} predictions for {len(samples)} samples"
        )


def _add_samples(fig, samples, predictions, max_points: int) -> list[tuple[int, int]]:
    """Add every sample's traces (3D ones left, 2D ones right; only sample 0 visible) and
    return each sample's [start, end) range of trace indices in ``fig.data``."""
    import plotly.graph_objects as go

    ranges: list[tuple[int, int]] = []
    for i, sample in enumerate(samples):
        pred = predictions[i] if predictions is not None else None
        start = len(fig.data)
        for tr in _sample_traces(sample, pred, max_points):
            tr.visible = i == 0
            if isinstance(tr, go.Scatter3d):
                fig.add_trace(tr, row=1, col=1)
            else:
                fig.add_trace(tr, row=1, col=2)
        ranges.append((start, len(fig.data)))
    return ranges


def _object_menu(ranges: list[tuple[int, int]], n: int, titles: list[str]) -> list[dict]:
    """The dropdown (top right) showing one sample's traces of ``n``; none for one sample."""
    buttons = []
    for i, (a, b) in enumerate(ranges):
        visible = [a <= j < b for j in range(n)]
        buttons.append({"label": titles[i], "method": "update",
                        "args": [{"visible": visible}, {"title.text": titles[i]}]})  # fmt: skip
    if len(ranges) <= 1:
        return []
    return [
        {
            "buttons": buttons,
            "direction": "down",
            "x": 1.0,
            "y": 1.0,
            "yanchor": "bottom",
            "xanchor": "right",
            "pad": {"b": 30},
            "showactive": True,
        }
    ]


def _lay_out(fig, image_hw: tuple[int, int], title: str, menus: list[dict]) -> None:
    """Image axes over the (H, W) image (y down), data-aspect scene, title and menu."""
    h, w = image_hw
    fig.update_xaxes(range=[0, w], row=1, col=2, constrain="domain")
    fig.update_yaxes(range=[h, 0], row=1, col=2, scaleanchor="x", constrain="domain")
    fig.update_scenes(aspectmode="data", camera={"up": {"x": 0, "y": 1, "z": 0}})
    # title on the left, the object menu on the right of the same top band: never overlapping
    fig.update_layout(
        title={"text": title, "x": 0.01, "xanchor": "left", "y": 0.98, "yanchor": "top",
               "font": {"size": 14}},
        updatemenus=menus,
        height=580, width=1150, margin={"l": 10, "r": 10, "t": 110, "b": 10},
        legend={"font": {"size": 9}},
    )  # fmt: skip


def reprojection_figure(
    samples: Sequence[Mapping],
    predictions: Sequence[Mapping | None] | None = None,
    max_points: int = 2048,
    labels: Sequence[str] | None = None,
):
    """Interactive figure over ``samples`` (see module docstring); returns a go.Figure.
    ``labels``: the dropdown / title text of each sample (default ``uid | category``)."""
    from plotly.subplots import make_subplots

    _check_samples(samples, predictions)
    fig = make_subplots(
        rows=1, cols=2, specs=[[{"type": "scene"}, {"type": "xy"}]],
        column_widths=[0.5, 0.5], subplot_titles=("3D: cloud, box, keypoints, camera",
                                                  "image: 2D labels + projected 3D box"),
    )  # fmt: skip
    ranges = _add_samples(fig, samples, predictions, max_points)
    titles = list(labels) if labels is not None else [_title(s, i) for i, s in enumerate(samples)]
    menus = _object_menu(ranges, len(fig.data), titles)
    _lay_out(fig, _np(samples[0]["image"]).shape[:2], titles[0], menus)
    fig.layout.meta = {"sample_trace_ranges": ranges}
    return fig


def write_html(fig, path: str | os.PathLike) -> Path:
    """Offline HTML linking the shared plotly.js (``pointvl.viz.page.write_figure``)."""
    from pointvl.viz.page import write_figure

    return write_figure(fig, path, div_id="reprojection")


def prediction_values(completion: str, quant_bins: int, num_keypoints: int | None) -> dict:
    """A completion -> the continuous geometric fields ``reprojection_figure`` draws (pixels,
    object frame); a field that failed to parse is None (and is not drawn)."""
    from pointvl.schema import GEOMETRIC_FIELDS, parse_output, to_continuous

    parsed = parse_output(completion, num_keypoints=num_keypoints)
    ok = {f: (parsed.values[f] if parsed.errors.get(f) is None else None) for f in GEOMETRIC_FIELDS}
    return to_continuous(ok, quant_bins)


def gallery_png(
    samples: Sequence[Mapping],
    path: str | os.PathLike,
    predictions: Sequence[Mapping | None] | None = None,
    cols: int = 4,
    dpi: int = 110,
) -> Path:
    """Static grid: each image with its 2D box, 2D keypoints and projected 3D box."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(samples)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.15 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, sample in enumerate(samples):
        ax = axes.flat[i]
        K, R, t = _camera(sample)
        image = _np(sample["image"]).astype(np.uint8)
        ax.imshow(image, extent=(0, image.shape[1], image.shape[0], 0), interpolation="nearest")
        pe = projected_box_edges(sample["bbox3d"], K, R, t)
        ax.plot(pe[:, 0], pe[:, 1], color=PROJ_COLOR, lw=0.8)
        o2 = box2d_outline(sample["bbox2d"])
        ax.plot(o2[:, 0], o2[:, 1], color=GT_COLOR, lw=1.2)
        k2 = _np(sample["kpts2d"]).reshape(-1, 2)
        ax.scatter(k2[:, 0], k2[:, 1], s=6, color=KPT_COLOR, zorder=3)
        pred = predictions[i] if predictions is not None else None
        if pred and pred.get("bbox2d") is not None:
            po = box2d_outline(pred["bbox2d"])
            ax.plot(po[:, 0], po[:, 1], color=PRED_COLOR, lw=1.2, ls="--")
        if pred and pred.get("bbox3d") is not None:
            ppe = projected_box_edges(pred["bbox3d"], K, R, t)
            ax.plot(ppe[:, 0], ppe[:, 1], color=PRED_COLOR, lw=0.8, ls="--")
        foot, ok = reprojected_footprint(_np(sample["bbox3d"]), K, R, t)
        ax.set_title(_title(sample, i), fontsize=7)
        ax.set_xlim(0, image.shape[1])
        ax.set_ylim(image.shape[0], 0)
    fig.tight_layout()
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path


def write_dataset_figures(data_dir: str | os.PathLike, figures_dir: str | os.PathLike, n: int):
    """Reprojection HTML (offline) and a PNG gallery of the first ``n`` test samples (train
    when the test split is empty) -> [html path, png path] (nothing when ``n`` is 0)."""
    from pointvl.data.dataset import PointVLDataset, read_manifest

    if n <= 0:
        return []
    split = "test" if read_manifest(data_dir)["splits"]["test"]["count"] else "train"
    ds = PointVLDataset(data_dir, split, qa_mode="first")
    samples = [ds[i] for i in range(min(n, len(ds)))]
    if not samples:
        return []
    figures_dir = Path(figures_dir)
    html = write_html(reprojection_figure(samples), figures_dir / "dataset_reprojection.html")
    png = gallery_png(samples, figures_dir / "dataset_gallery.png")
    return [str(html), str(png)]


# ----------------------------------------------------------------------------- every object

_EXPLORER_JS = """
(function () {
  var figs = %(figs)s, labels = %(labels)s, template = %(template)s;
  var id = "%(id)s", gd = document.getElementById(id), q = document.getElementById(id + "-q");
  var pos = document.getElementById(id + "-pos"), i = 0;
  function show(k) {
    i = (k + figs.length) %% figs.length;
    var layout = Object.assign({template: template}, figs[i].layout);
    Plotly.react(gd, figs[i].data, layout, {responsive: true});
    pos.textContent = (i + 1) + " / " + figs.length; q.value = labels[i];
  }
  function find() {
    var v = q.value.trim().toLowerCase(), k = labels.indexOf(q.value);
    if (k < 0) { k = labels.findIndex(function (l) { return l.toLowerCase().indexOf(v) >= 0; }); }
    if (k >= 0) { show(k); }
  }
  q.addEventListener("change", find);
  q.addEventListener("keydown", function (e) { if (e.key === "Enter") { find(); } });
  document.getElementById(id + "-prev").onclick = function () { show(i - 1); };
  document.getElementById(id + "-next").onclick = function () { show(i + 1); };
  show(0);
})();
"""


def explorer_html(
    samples: Sequence[Mapping],
    predictions: Sequence[Mapping | None] | None = None,
    labels: Sequence[str] | None = None,
    max_points: int = 512,
    div_id: str = "explorer",
) -> str:
    """The reprojection view of *every* sample, one at a time: a search box (type any part of
    a label: uid, category, a metric; the list suggests matches), previous / next buttons and
    one figure redrawn per object. Each object's traces are stored once as JSON (~15 KB at
    512 points: the image is a PNG), so hundreds of objects fit one page. An HTML fragment
    that needs ``Plotly`` on the page (``pointvl.viz.page.plotly_script``)."""
    import html
    import json

    import plotly.io as pio

    labels = list(labels) if labels is not None else [_title(s, i) for i, s in enumerate(samples)]
    if len(labels) != len(samples):
        raise ValueError(f"explorer_html: {len(labels)} labels for {len(samples)} samples")
    figs, template = [], None
    for i, s in enumerate(samples):
        pred = [predictions[i]] if predictions is not None else None
        fig = json.loads(pio.to_json(reprojection_figure([s], pred, max_points, [labels[i]])))
        template = fig["layout"].pop("template", template)
        fig["layout"].pop("meta", None)
        figs.append(fig)
    options = "".join(f'<option value="{html.escape(lab)}">' for lab in labels)
    script = _EXPLORER_JS % {"figs": json.dumps(figs, separators=(",", ":")),
                             "labels": json.dumps(labels), "template": json.dumps(template),
                             "id": div_id}  # fmt: skip
    return (
        f'<div style="font:13px sans-serif;margin:4px 0">'
        f'<button id="{div_id}-prev">&#9664;</button> <span id="{div_id}-pos"></span> '
        f'<button id="{div_id}-next">&#9654;</button> '
        f'<input id="{div_id}-q" list="{div_id}-list" size="70" '
        f'placeholder="search: uid, category or metric, then Enter">'
        f'<datalist id="{div_id}-list">{options}</datalist></div>'
        f'<div id="{div_id}" class="plotly-graph-div" style="width:1150px;height:580px"></div>'
        f"<script>{script}</script>"
    )


class ReprojectionView:
    """The reprojection view as a notebook output: Plotly's MIME type (a dropdown figure,
    drawn by JupyterLab) plus the searchable ``explorer_html`` as the HTML fallback (what an
    exported page shows, with its shared plotly.js)."""

    def __init__(self, samples, predictions=None, labels=None, max_points: int = 512,
                 div_id: str = "explorer"):  # fmt: skip
        self.args = (samples, predictions, labels, max_points)
        self.div_id = div_id

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        import json

        import plotly.io as pio

        samples, predictions, labels, max_points = self.args
        fig = reprojection_figure(samples, predictions, max_points, labels)
        return {
            "application/vnd.plotly.v1+json": json.loads(pio.to_json(fig)),
            "text/html": explorer_html(samples, predictions, labels, max_points, self.div_id),
            "text/plain": f"<reprojection view of {len(samples)} objects>",
        }


def write_explorer(samples, path: str | os.PathLike, predictions=None, labels=None,
                   title: str = "", max_points: int = 512) -> Path:  # fmt: skip
    """``explorer_html`` as a full offline page (shared plotly.js, ``pointvl.viz.page``)."""
    import html

    from pointvl.io import atomic_write_text
    from pointvl.viz.page import ensure_assets, plotly_script, static_dir

    path = Path(path)
    ensure_assets(static_dir(path))
    body = explorer_html(samples, predictions, labels, max_points)
    page = (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}'
            f"</title>{plotly_script(path)}</head><body><h3 style=\"font-family:sans-serif\">"
            f"{html.escape(title)}</h3>{body}</body></html>\n")  # fmt: skip
    return atomic_write_text(path, page)
