"""Figure 3 of the paper (Sec. 4.6) redrawn on our own test samples: one structured output.

    +-------------------------------------+-------------------------------------+
    | (a) QA: question, answer and        | (b) 3D grounding: point cloud,      |
    |     description, ours vs GT         |     bbox3d + kpts3d, ours vs GT     |
    +-------------------------------------+-------------------------------------+
    | (c) 2D grounding: image,            | (d) RPC (Eqs. 11-13): the 8 corners |
    |     bbox2d + kpts2d, ours vs GT     |     of *our* bbox3d -> K[R|t] ->    |
    |                                     |     footprint B_proj vs our B̂_2d   |
    +-------------------------------------+-------------------------------------+

Ground truth is drawn solid green / blue, ours (the model's greedy completion) dashed red.
The completion is parsed with ``schema.parse_output`` (tolerant) and de-quantized as
``pointvl.eval.metrics`` does (``schema.dequantize_3d`` for bbox3d / kpts3d, pixels as
written for 2D). A field that failed to parse is not drawn; its panel says so in text.

Panel (d) prints ``rewards.rpc_reward`` itself, so the number shown is the reward RL used.
Departure from the paper's Figure 3: the paper shows the JSON beside each panel; we show
the written values of the drawn field under panels (b) and (c), shortened.

A sample is a ``PointVLDataset`` item (or any mapping with the same keys: ``points``,
``image``, ``K``, ``R``, ``t``, the four geometric fields, ``question``, ``answer``,
``description``, optionally ``uid`` / ``category``).
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pointvl.geometry import aabb_corners, project_points, reprojected_footprint
from pointvl.rewards import answer_reward, description_reward, rpc_reward
from pointvl.schema import FIELDS, GEOMETRIC_FIELDS, ParsedOutput, dequantize_3d, parse_output
from pointvl.viz.reprojection import (
    BOX_EDGES,
    GT_COLOR,
    KPT_COLOR,
    PRED_COLOR,
    PROJ_COLOR,
    box2d_outline,
)

OURS = "ours"
PANEL_TITLES = {
    "qa": "(a) QA with attributes and description",
    "3d": "(b) 3D grounding: point cloud, bbox3d, kpts3d",
    "2d": "(c) 2D grounding: image, bbox2d, kpts2d",
    "rpc": "(d) RPC: our 3D box projected vs our 2D box (Eqs. 11-13)",
}


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


# ----------------------------------------------------------------------------- parsing
@dataclass
class PredictionView:
    """One completion, parsed: continuous values where a field parsed, errors elsewhere."""

    parsed: ParsedOutput
    """``schema.parse_output`` of the completion (values as written: pixels, bins)."""
    values: dict[str, Any] = field(default_factory=dict)
    """Field -> str (semantic) or float64 array (2D pixels, 3D object frame); None if failed."""

    def error(self, name: str) -> str | None:
        """The parse error code of ``name`` (None when the field is usable)."""
        return self.parsed.errors.get(name)

    def failure(self, name: str) -> str | None:
        """``"ours: bbox3d failed to parse (malformed)"``, or None when the field is usable."""
        err = self.error(name)
        return None if err is None else f"{OURS}: {name} failed to parse ({err})"

    def written(self, name: str) -> str:
        """The field's value as written in the completion, as compact JSON (or its error)."""
        if self.error(name) is not None:
            return f"{name}: <{self.error(name)}>"
        value = self.parsed.values[name]
        if name in GEOMETRIC_FIELDS:  # ints as written stay ints; floats keep 2 decimals
            exact = np.all(value == np.round(value))
            value = (value.astype(np.int64) if exact else np.round(value, 2)).tolist()
        return f"{name}: {json.dumps(value, separators=(',', ':'))}"


def view_prediction(text: str, quant_bins: int, num_keypoints: int | None) -> PredictionView:
    """Parse a completion (never raises) and de-quantize the 3D fields (as eval.metrics)."""
    parsed = parse_output(text, num_keypoints=num_keypoints)
    values: dict[str, Any] = {}
    for name in FIELDS:
        v = parsed.values.get(name) if parsed.errors.get(name) is None else None
        if v is not None and name in GEOMETRIC_FIELDS:
            v = np.asarray(v, dtype=np.float64)
            # x = -0.5 + (b + 0.5) / Q for bbox3d / kpts3d; 2D values are pixels as written
            v = dequantize_3d(v, quant_bins) if name.endswith("3d") else v
        values[name] = v
    return PredictionView(parsed=parsed, values=values)


def prediction_dict(view: PredictionView) -> dict[str, np.ndarray]:
    """The usable geometric fields, continuous (what ``reprojection_figure`` draws dashed)."""
    return {k: view.values[k] for k in GEOMETRIC_FIELDS if view.values.get(k) is not None}


# ----------------------------------------------------------------------------- RPC steps
@dataclass
class RPCSteps:
    """Eqs. (11-13) for one completion, step by step, for drawing panel (d)."""

    rpc: float
    """r_rpc = ``rewards.rpc_reward`` (the value RL used)."""
    reason: str | None = None
    """Why r_rpc is 0 without an IoU (a field failed, inverted box, corner behind camera)."""
    corners_uv: np.ndarray | None = None
    """(8, 2) projected corners of our bbox3d, ``aabb_corners`` order (Eq. 11)."""
    footprint: np.ndarray | None = None
    """(4,) B_proj = [min u_x, min u_y, max u_x, max u_y] of the corners (Eq. 12)."""
    box2d: np.ndarray | None = None
    """(4,) our predicted B̂_2d, pixels."""
    inter: float = 0.0
    """|B_proj ∩ B̂_2d| in px²."""
    union: float = 0.0
    """|B_proj ∪ B̂_2d| in px²."""


def _area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))


def rpc_steps(view: PredictionView, sample: Mapping, quant_bins: int) -> RPCSteps:
    """Eqs. (11-13) on our prediction under the GT camera; ``rpc`` is ``rpc_reward`` itself."""
    rpc = float(rpc_reward(view.parsed, sample, quant_bins))
    failed = [view.failure(k) for k in ("bbox3d", "bbox2d") if view.failure(k)]
    if failed:
        return RPCSteps(rpc=rpc, reason="; ".join(failed))
    box3d, box2d = view.values["bbox3d"], view.values["bbox2d"]  # (6,), (4,)
    K, R, t = (_np(sample[k]).astype(np.float64) for k in ("K", "R", "t"))
    K, R, t = K.reshape(3, 3), R.reshape(3, 3), t.reshape(3)
    # ũ_j = K (R X_j + t), u_j = ũ_j,xy / ũ_j,z for the 8 corners X_j
    uv, ok = project_points(aabb_corners(box3d), K, R, t)  # (8, 2), (8,)
    # B_proj = [min_j u_jx, min_j u_jy, max_j u_jx, max_j u_jy]
    foot, valid = reprojected_footprint(box3d, K, R, t)  # (4,), ()
    steps = RPCSteps(rpc=rpc, corners_uv=uv, footprint=foot, box2d=box2d)
    if np.any(box3d[3:] < box3d[:3]):
        steps.reason = f"{OURS}: bbox3d is inverted (max < min on some axis)"
    elif not bool(valid):
        steps.reason = f"{OURS}: {int((~ok).sum())} corner(s) of bbox3d at / behind the camera"
    lo, hi = np.maximum(foot[:2], box2d[:2]), np.minimum(foot[2:], box2d[2:])  # (2,), (2,)
    steps.inter = float(np.prod(np.clip(hi - lo, 0.0, None)))
    steps.union = _area(foot) + _area(box2d) - steps.inter
    return steps


# ----------------------------------------------------------------------------- panels
def _wrap(text: str, width: int = 62) -> str:
    return "\n".join(textwrap.wrap(str(text), width)) or "—"


def _status_box(ax, lines: list[str], y: float = 0.02) -> None:
    """Failures / notes in a box at the bottom-left of a panel (axes coordinates)."""
    if lines:
        text = getattr(ax, "text2D", ax.text)  # 3D axes place axes-coordinate text with text2D
        text(0.01, y, "\n".join(lines), transform=ax.transAxes, fontsize=8.5, va="bottom",
                ha="left", color="#8b0000", zorder=10,
                bbox={"boxstyle": "round", "fc": "#fff3f3", "ec": "#8b0000", "alpha": 0.92})  # fmt: skip


def qa_text(sample: Mapping, view: PredictionView) -> list[str]:
    """Panel (a) as lines: question, answer and description, ours vs GT, with their rewards."""
    ans, desc = view.values.get("answer"), view.values.get("description")
    acc = answer_reward(ans, sample.get("answer"))
    f1 = description_reward(desc, sample.get("description"))
    ours_ans = view.failure("answer") or f"{OURS}: {ans}"
    ours_desc = view.failure("description") or _wrap(f"{OURS}: {desc}")
    qa_type = f" [{sample['qa_type']}]" if sample.get("qa_type") else ""
    failed = [f"{f} ({view.error(f)})" for f in FIELDS if view.error(f) is not None]
    return [
        f"Question{qa_type}:",
        _wrap(sample.get("question", "")),
        "",
        f"Answer   GT: {sample.get('answer')}",
        f"         {ours_ans}   ({'correct' if acc == 1.0 else 'wrong'}, exact match {acc:.0f})",
        "",
        "Description (attributes + geometry)",
        _wrap(f"GT: {sample.get('description')}"),
        ours_desc,
        f"(unigram F1 = {f1:.2f})",
        "",
        "Parse: all six fields OK" if not failed else "Parse failed: " + ", ".join(failed),
    ]


def json_excerpt(completion: str, width: int = 92, max_lines: int = 14) -> str:
    """Our completion as written (its JSON), wrapped and cut to ``max_lines`` lines."""
    lines = textwrap.wrap(completion.strip(), width) or ["<empty completion>"]
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [f"... ({len(completion)} characters in all)"]
    return "\n".join(lines)


def panel_qa(ax, sample: Mapping, view: PredictionView, completion: str) -> str:
    """Panel (a): question, answers, descriptions, then our JSON. Returns the QA text drawn."""
    ax.axis("off")
    text = "\n".join(qa_text(sample, view))
    ax.text(0.0, 1.0, text, transform=ax.transAxes, va="top", ha="left", fontsize=9.5,
            linespacing=1.35)  # fmt: skip
    ax.text(0.0, 0.0, f"{OURS}, as written (JSON):\n" + json_excerpt(completion),
            transform=ax.transAxes, va="bottom", ha="left", fontsize=7.2, family="monospace",
            bbox={"boxstyle": "round", "fc": "#f5f5f5", "ec": "0.6"})  # fmt: skip
    ax.set_title(PANEL_TITLES["qa"], loc="left", fontsize=11)
    return text


def _box3d_lines(ax, box3d: np.ndarray, **style) -> None:
    c = aabb_corners(box3d)  # (8, 3)
    for k, (a, b) in enumerate(BOX_EDGES):
        ax.plot(*zip(c[a], c[b]), **(style if k == 0 else {**style, "label": None}))


def _camera_view(sample: Mapping) -> tuple[float, float]:
    """(elev, azim) in degrees that put matplotlib's eye at the camera centre C = -Rᵀt.

    With ``vertical_axis="y"`` matplotlib rolls (x, y, z) -> (z, x, y); its eye sits at
    (cos e cos a, cos e sin a, sin e) in the rolled frame.
    """
    R, t = _np(sample["R"]).reshape(3, 3), _np(sample["t"]).reshape(3)
    C = -R.T @ t  # (3,) camera centre, object frame
    d = C / np.linalg.norm(C)
    return float(np.degrees(np.arcsin(d[1]))), float(np.degrees(np.arctan2(d[0], d[2])))


def panel_3d(ax, sample: Mapping, view: PredictionView, max_points: int = 1500) -> list[str]:
    """Panel (b): cloud, GT (solid) and our (dashed) 3D box + keypoints. Returns notes."""
    pts = _np(sample["points"]).astype(np.float64)[:, :3]  # (N, 3)
    if len(pts) > max_points:
        pts = pts[np.linspace(0, len(pts) - 1, max_points).astype(int)]
    ax.scatter(*pts.T, s=1.5, c=pts[:, 1], cmap="Greys", alpha=0.35, depthshade=False,
               label="point cloud")  # fmt: skip
    _box3d_lines(ax, _np(sample["bbox3d"]), color=GT_COLOR, lw=1.6, label="GT bbox3d")
    k3 = _np(sample["kpts3d"]).reshape(-1, 3)
    ax.scatter(*k3.T, s=16, color=KPT_COLOR, depthshade=False, label="GT kpts3d")
    if view.values.get("bbox3d") is not None:
        _box3d_lines(ax, view.values["bbox3d"], color=PRED_COLOR, lw=1.6, ls="--",
                     label=f"{OURS}: bbox3d")  # fmt: skip
    if view.values.get("kpts3d") is not None:
        ax.scatter(*view.values["kpts3d"].T, s=26, marker="x", color=PRED_COLOR,
                   depthshade=False, label=f"{OURS}: kpts3d")  # fmt: skip
    ax.set(xlim=(-0.5, 0.5), ylim=(-0.5, 0.5), zlim=(-0.5, 0.5), xlabel="x", ylabel="y (up)",
           zlabel="z")  # fmt: skip
    ax.set_box_aspect((1, 1, 1))
    elev, azim = _camera_view(sample)
    ax.view_init(elev=elev, azim=azim, vertical_axis="y")
    ax.tick_params(labelsize=7)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.85)
    ax.set_title(PANEL_TITLES["3d"] + "\n(seen from the image's camera; object frame)",
                 loc="left", fontsize=11)  # fmt: skip
    notes = [n for n in (view.failure("bbox3d"), view.failure("kpts3d")) if n]
    written = [] if view.error("bbox3d") else [view.written("bbox3d") + "  (bins)"]
    _status_box(ax, notes + written)
    return notes


def _image(ax, sample: Mapping, alpha: float = 1.0) -> tuple[int, int]:
    image = _np(sample["image"]).astype(np.uint8)
    h, w = image.shape[:2]
    ax.imshow(image, extent=(0, w, h, 0), interpolation="nearest", alpha=alpha)
    return h, w


def panel_2d(ax, sample: Mapping, view: PredictionView) -> list[str]:
    """Panel (c): the image, GT (solid) and our (dashed) 2D box + keypoints. Returns notes."""
    h, w = _image(ax, sample)
    o = box2d_outline(sample["bbox2d"])  # (5, 2)
    ax.plot(o[:, 0], o[:, 1], color=GT_COLOR, lw=2, label="GT bbox2d")
    k2 = _np(sample["kpts2d"]).reshape(-1, 2)
    ax.scatter(k2[:, 0], k2[:, 1], s=18, color=KPT_COLOR, zorder=3, label="GT kpts2d")
    if view.values.get("bbox2d") is not None:
        p = box2d_outline(view.values["bbox2d"])
        ax.plot(p[:, 0], p[:, 1], color=PRED_COLOR, lw=2, ls="--", label=f"{OURS}: bbox2d")
    if view.values.get("kpts2d") is not None:
        pk = view.values["kpts2d"]
        ax.scatter(pk[:, 0], pk[:, 1], s=30, marker="x", color=PRED_COLOR, zorder=4,
                   label=f"{OURS}: kpts2d")  # fmt: skip
    ax.set(xlim=(0, w), ylim=(h, 0), xlabel="u (px)", ylabel="v (px)")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.85)
    ax.set_title(PANEL_TITLES["2d"], loc="left", fontsize=11)
    notes = [n for n in (view.failure("bbox2d"), view.failure("kpts2d")) if n]
    written = [] if view.error("bbox2d") else [view.written("bbox2d") + "  (px)"]
    _status_box(ax, notes + written)
    return notes


def _rect(ax, box: np.ndarray, **style) -> None:
    o = box2d_outline(box)  # (5, 2)
    ax.plot(o[:, 0], o[:, 1], **style)


def _rpc_limits(sample: Mapping, steps: RPCSteps) -> tuple[float, float, float, float]:
    """x/y limits holding the image, the corners and both boxes (a footprint may overflow)."""
    h, w = _np(sample["image"]).shape[:2]
    xs, ys = [0.0, float(w)], [0.0, float(h)]
    for box in (steps.footprint, steps.box2d):
        if box is not None and np.all(np.isfinite(box)):
            xs += [box[0], box[2]]
            ys += [box[1], box[3]]
    pad = 0.04 * max(xs[-1] - xs[0], ys[-1] - ys[0], 1.0)
    return min(xs) - pad, max(xs) + pad, max(ys) + pad, min(ys) - pad


def rpc_text(steps: RPCSteps) -> str:
    """The printed computation; its last line is ``RPC = <rewards.rpc_reward>`` (4 decimals)."""
    lines = []
    if steps.footprint is not None:
        fmt = ", ".join
        lines.append("B_proj = [" + fmt(f"{v:.1f}" for v in steps.footprint) + "]")
        lines.append("B̂_2d  = [" + fmt(f"{v:.0f}" for v in steps.box2d) + "]")
        lines.append(f"|∩| = {steps.inter:.0f} px²,  |∪| = {steps.union:.0f} px²")
    if steps.reason:
        lines.append(steps.reason)
    lines.append(f"RPC = IoU(B_proj, B̂_2d) = {steps.rpc:.4f}")
    return "\n".join(lines)


def panel_rpc(ax, sample: Mapping, steps: RPCSteps) -> str:
    """Panel (d): corners of our 3D box projected, their footprint, our 2D box, IoU = RPC."""
    _image(ax, sample, alpha=0.35)
    if steps.corners_uv is not None:
        uv = steps.corners_uv  # (8, 2)
        for k, (a, b) in enumerate(BOX_EDGES):
            ax.plot(*zip(uv[a], uv[b]), color=PROJ_COLOR, lw=0.9, alpha=0.8,
                    label=f"{OURS}: bbox3d edges, projected" if k == 0 else None)  # fmt: skip
        ax.scatter(uv[:, 0], uv[:, 1], s=22, color=PROJ_COLOR, zorder=4,
                   label="8 corners  u_j = π(K(R X_j + t))")  # fmt: skip
        for j, (u, v) in enumerate(uv):
            ax.annotate(str(j), (u, v), xytext=(3, 3), textcoords="offset points", fontsize=7)
        _rect(ax, steps.footprint, color=PROJ_COLOR, lw=2.2, label="B_proj: footprint (Eq. 12)")
        _rect(ax, steps.box2d, color=PRED_COLOR, lw=2, ls="--", label=f"B̂_2d: {OURS}: bbox2d")
        lo = np.maximum(steps.footprint[:2], steps.box2d[:2])
        hi = np.minimum(steps.footprint[2:], steps.box2d[2:])
        if np.all(hi > lo):
            ax.fill_between([lo[0], hi[0]], lo[1], hi[1], color="#9467bd", alpha=0.3,
                            label="B_proj ∩ B̂_2d")  # fmt: skip
        ax.legend(loc="upper right", fontsize=7.5, framealpha=0.85)
    x0, x1, y0, y1 = _rpc_limits(sample, steps)
    ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel="u (px)", ylabel="v (px)")
    text = rpc_text(steps)
    ax.text(0.01, 0.02, text, transform=ax.transAxes, fontsize=9, va="bottom", ha="left",
            zorder=10, bbox={"boxstyle": "round", "fc": "white", "ec": "0.3", "alpha": 0.9})  # fmt: skip
    ax.set_title(PANEL_TITLES["rpc"], loc="left", fontsize=11)
    return text


# ----------------------------------------------------------------------------- figure
def figure3(
    sample: Mapping,
    completion: str,
    quant_bins: int,
    num_keypoints: int | None = None,
    system: str = "GRCA + RPC",
):
    """The four panels for one test sample and our completion -> (matplotlib Figure, info).

    ``num_keypoints`` defaults to the GT keypoint count M (as ``eval.metrics``). ``info``
    holds ``texts`` (panel -> text drawn), ``rpc`` (the printed value), ``errors``
    (field -> parse error or None). Never raises on a malformed completion.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = num_keypoints or _np(sample["kpts3d"]).reshape(-1, 3).shape[0]
    view = view_prediction(completion, quant_bins, m)
    steps = rpc_steps(view, sample, quant_bins)
    fig = plt.figure(figsize=(15, 12.5), constrained_layout=True)
    axes = fig.subplots(2, 2)
    axes[0, 1].remove()
    ax3d = fig.add_subplot(2, 2, 2, projection="3d")
    texts = {"qa": panel_qa(axes[0, 0], sample, view, str(completion))}
    texts["3d"] = "\n".join(panel_3d(ax3d, sample, view))
    texts["2d"] = "\n".join(panel_2d(axes[1, 0], sample, view))
    texts["rpc"] = panel_rpc(axes[1, 1], sample, steps)
    where = " | ".join(str(sample[k]) for k in ("uid", "category") if sample.get(k) is not None)
    fig.suptitle(f"Figure 3 on our test sample {where}: structured output of {OURS} ({system}); "
                 "GT solid, ours dashed red", fontsize=13)  # fmt: skip
    info = {"texts": texts, "rpc": steps.rpc, "errors": dict(view.parsed.errors), "view": view}
    return fig, info


def figure3_png(path: str | os.PathLike, *args, dpi: int = 110, **kwargs) -> dict:
    """``figure3(*args, **kwargs)`` saved to ``path`` (PNG); returns its ``info``."""
    import matplotlib.pyplot as plt

    fig, info = figure3(*args, **kwargs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return info
