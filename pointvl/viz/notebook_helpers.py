"""What the notebooks display, so that no notebook defines a function of its own.

- ``notebook_setup``: Plotly renderer and numpy print options for executed and live kernels;
- ``DemoGroup`` / ``demo_group``: the ``pointvl.demo`` group of G = 8 completions, parsed,
  tokenized with a locally trained BPE, partitioned (Eqs. 6-7) and scored (Eqs. 8, 13);
- ``Html`` and the ``*_html`` functions: tables and the token partition coloured on the
  actual tokens (rendered inline by Jupyter and kept by nbconvert's HTML export);
- ``rpc_figure`` (Eqs. 11-13 drawn) and ``lambda_slider_figure`` (Eq. 14 over λ ∈ [0, 1]).
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pointvl.schema import FIELDS, GEOMETRIC_FIELDS

FIELD_NAMES = ("background",) + GEOMETRIC_FIELDS
# background, bbox2d, bbox3d, kpts2d, kpts3d (same hues as viz.advantages' PNG)
FIELD_COLORS = ("#e6e6e6", "#8dd3c7", "#fdb462", "#bebada", "#fb8072")
EXECUTED_ENV = "POINTVL_NOTEBOOK_EXECUTED"


def notebook_setup() -> str:
    """Call once at the top of a notebook. Returns the Plotly renderer in use.

    Under ``pointvl.stages.notebook`` (env ``POINTVL_NOTEBOOK_EXECUTED=1``) Plotly renders with
    ``"notebook"`` (plotly.js inlined): Papermill's default ``plotly_mimetype`` leaves no figure
    in nbconvert's HTML. In a live JupyterLab the default renderer is kept.
    """
    import plotly.io as pio

    if os.environ.get(EXECUTED_ENV) == "1":
        pio.renderers.default = "notebook"
    np.set_printoptions(precision=4, suppress=True, linewidth=110)
    return str(pio.renderers.default)


class Html(str):
    """A string that Jupyter displays as HTML (``_repr_html_``) and prints as its source."""

    def _repr_html_(self) -> str:
        return str(self)


def _fmt(v: Any) -> str:
    if isinstance(v, float | np.floating):
        return f"{float(v):.3f}"
    if v is None:
        return "—"
    return html.escape(str(v))


def html_table(rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> Html:
    """A plain HTML table; floats with 3 decimals, None as '—'."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
    return Html(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


# ----------------------------------------------------------------------------- the demo group


@dataclass
class DemoGroup:
    """One group of G completions with everything Eqs. (6-14) need (rows = ``cases``)."""

    target: dict
    """Continuous ground truth with camera K, R, t (``pointvl.demo.demo_target``)."""
    cases: list[str]
    completions: list[str]
    parsed: list
    """``schema.ParsedOutput`` per completion."""
    tokenizer: Any
    token_ids: list[list[int]]
    """Per row, the completion's tokens plus EOS."""
    offsets: list[np.ndarray]
    """Per row, (T_i, 2) character offsets (EOS gets the empty range at the end)."""
    tokens: list[list[str]]
    """Per row, each token's text."""
    field_ids: torch.Tensor
    """(B, T) long: 0 = background, k + 1 = ``GEOMETRIC_FIELDS[k]``, padding 0."""
    mask: torch.Tensor
    """(B, T) bool: True on real tokens."""
    scores: dict
    """``rewards.score_batch`` output: per_field_rewards (B, F), rpc, seq, format, ... (B,)."""
    quant_bins: int

    @property
    def group_size(self) -> int:
        return len(self.completions)

    def credit_inputs(self):
        from pointvl.credit import CreditInputs

        return CreditInputs(
            per_field_rewards=self.scores["per_field_rewards"],
            seq_rewards=self.scores["seq"],
            rpc_rewards=self.scores["rpc"],
            field_ids=self.field_ids,
            group_size=self.group_size,
        )

    def advantages(self, variant: str, lam: float = 0.15, background: str = "seq") -> np.ndarray:
        """(B, T) per-token advantages of ``variant`` (grpo | grca | grca_rpc), NaN on padding."""
        from pointvl.credit import CreditConfig, build_advantages

        cfg = CreditConfig(background=background, lam=lam)
        adv = build_advantages(variant, self.credit_inputs(), cfg)  # (B, T)
        return adv.masked_fill(~self.mask, float("nan")).numpy()


def demo_tokenizer(seed: int = 0, quant_bins: int = 100, corpus: int = 200, vocab_size: int = 400):
    """The byte-level BPE of the ``credit_demo`` stage (trained on random target JSONs)."""
    from pointvl.config import CreditDemoConfig
    from pointvl.stages.credit_demo import demo_tokenizer as _train

    cfg = CreditDemoConfig(seed=seed, tokenizer_corpus=corpus, vocab_size=vocab_size)
    return _train(cfg, quant_bins)


def tokenize_completions(completions: Sequence[str], parsed: Sequence, tokenizer):
    """Tokens + EOS, their offsets and the (B, T) field ids / mask of a list of completions."""
    from pointvl.spans import field_token_ids

    encs = [
        tokenizer(c, add_special_tokens=False, return_offsets_mapping=True) for c in completions
    ]
    # EOS closes every completion; it has no characters, so it is background
    ids = [e["input_ids"] + [tokenizer.eos_token_id] for e in encs]
    offsets = [
        np.asarray(e["offset_mapping"] + [(len(c), len(c))], dtype=np.int64).reshape(-1, 2)
        for e, c in zip(encs, completions)
    ]
    B, T = len(ids), max(len(i) for i in ids)
    field_ids = torch.zeros(B, T, dtype=torch.long)  # (B, T)
    mask = torch.zeros(B, T, dtype=torch.bool)  # (B, T)
    for i, off in enumerate(offsets):
        field_ids[i, : len(off)] = torch.from_numpy(field_token_ids(parsed[i].char_spans, off))
        mask[i, : len(off)] = True
    tokens = [
        [c[s:e] if e > s else "<eos>" for s, e in off] for off, c in zip(offsets, completions)
    ]
    return ids, offsets, tokens, field_ids, mask


def demo_group(
    seed: int = 0,
    quant_bins: int = 100,
    num_keypoints: int = 16,
    tokenizer_corpus: int = 200,
    vocab_size: int = 400,
    completions: Sequence[str] | None = None,
) -> DemoGroup:
    """Build, parse, tokenize and score the demo group (or your own ``completions``)."""
    from pointvl.demo import CASES, demo_completions, demo_target
    from pointvl.rewards import score_batch
    from pointvl.schema import parse_output

    target = demo_target(seed)
    if completions is None:
        completions = demo_completions(target, quant_bins, seed=seed)
        cases = list(CASES)
    else:
        completions = list(completions)
        cases = [f"completion {i}" for i in range(len(completions))]
    tok = demo_tokenizer(seed, quant_bins, tokenizer_corpus, vocab_size)
    parsed = [parse_output(c, num_keypoints=num_keypoints) for c in completions]
    ids, offsets, tokens, field_ids, mask = tokenize_completions(completions, parsed, tok)
    scores = score_batch(parsed, [target] * len(completions), quant_bins)
    return DemoGroup(
        target, cases, list(completions), parsed, tok, ids, offsets, tokens, field_ids, mask,
        scores, quant_bins,
    )  # fmt: skip


# ----------------------------------------------------------------------------- span routing


def legend_html() -> Html:
    """The colour of each region of the partition (Eqs. 6-7)."""
    items = "".join(
        f'<span style="background:{c};padding:2px 6px;margin-right:6px">{n}</span>'
        for n, c in zip(FIELD_NAMES, FIELD_COLORS)
    )
    return Html(f'<div style="font-family:monospace;margin:4px 0">{items}</div>')


def token_partition_html(
    text: str,
    offsets: np.ndarray,
    field_ids: Sequence[int],
    advantages: Sequence[float] | None = None,
) -> Html:
    """The completion drawn token by token, each token coloured by its region (Eqs. 6-7).

    A thin white bar separates tokens, so every BPE split is visible; hovering a token shows
    its index, its characters, its field and (if given) its advantage. Zero-length tokens
    (EOS) are drawn as ``⟨eos⟩``.
    """
    ids = np.asarray(field_ids).reshape(-1)
    parts = []
    for t, (s, e) in enumerate(np.asarray(offsets).reshape(-1, 2)):
        k = int(ids[t])
        piece = text[s:e] if e > s else "⟨eos⟩"
        tip = f"token {t} [{s}, {e}) {FIELD_NAMES[k]}"
        if advantages is not None:
            tip += f" A={float(advantages[t]):+.3f}"
        parts.append(
            f'<span title="{html.escape(tip)}" style="background:{FIELD_COLORS[k]};'
            f'border-right:2px solid white">{html.escape(piece)}</span>'
        )
    body = "".join(parts)
    return Html(
        legend_html()
        + f'<div style="font-family:monospace;white-space:pre-wrap;line-height:1.9">{body}</div>'
    )


def straddling_rows(text: str, offsets: np.ndarray, char_spans: Mapping, field_ids) -> list:
    """Tokens holding characters of a field value *and* of the background, with the vote.

    One row per such token: index, its text, characters in a field, characters in the
    background, the field it touches, the region it was assigned (``spans`` straddling rule).
    """
    rows = []
    ids = np.asarray(field_ids).reshape(-1)
    for t, (s, e) in enumerate(np.asarray(offsets).reshape(-1, 2)):
        for name in GEOMETRIC_FIELDS:
            span = char_spans.get(name)
            if span is None:
                continue
            inside = max(0, min(e, span[1]) - max(s, span[0]))
            if 0 < inside < e - s:
                rows.append(
                    (
                        t,
                        repr(text[s:e]),
                        int(inside),
                        int(e - s - inside),
                        name,
                        FIELD_NAMES[ids[t]],
                    )
                )
    return rows


def straddling_html(text: str, offsets: np.ndarray, char_spans: Mapping, field_ids) -> Html:
    """``straddling_rows`` as a table."""
    cols = ["token", "text", "chars in field", "chars in background", "field", "assigned to"]
    return html_table(straddling_rows(text, offsets, char_spans, field_ids), cols)


def parse_table_html(group: DemoGroup) -> Html:
    """Per completion: each field's parse error (``ok`` when clean) and its token count."""
    rows = []
    for i, p in enumerate(group.parsed):
        ids = group.field_ids[i][group.mask[i]]
        row = [f"{i}: {group.cases[i]}"]
        for name in FIELDS:
            err = p.errors[name] or "ok"
            if name in GEOMETRIC_FIELDS:
                err += f" ({int((ids == GEOMETRIC_FIELDS.index(name) + 1).sum())} tok)"
            row.append(err)
        row.append(int((ids == 0).sum()))
        rows.append(row)
    return html_table(rows, ["completion", *FIELDS, "background tok"])


# ----------------------------------------------------------------------------- rewards, RPC


def rewards_html(group: DemoGroup) -> Html:
    """Per completion: the four field rewards (Eq. 8), r_rpc (Eq. 13), format and r_seq."""
    s = group.scores
    rows = [
        [f"{i}: {c}", *s["per_field_rewards"][i], s["rpc"][i], s["format"][i], s["seq"][i]]
        for i, c in enumerate(group.cases)
    ]
    return html_table(rows, ["completion", *GEOMETRIC_FIELDS, "rpc", "format", "seq"])


def field_advantages_html(group: DemoGroup) -> Html:
    """Eq. (9) on the demo group: Â_{i,k} per field, plus Â_seq and Â_rpc."""
    from pointvl.credit import standardize_in_groups

    G = group.group_size
    fa = standardize_in_groups(group.scores["per_field_rewards"], G).numpy()  # (B, F)
    seq = standardize_in_groups(group.scores["seq"], G).numpy()  # (B,)
    rpc = standardize_in_groups(group.scores["rpc"], G).numpy()  # (B,)
    rows = [[f"{i}: {c}", *fa[i], seq[i], rpc[i]] for i, c in enumerate(group.cases)]
    return html_table(rows, ["completion", *(f"Â {n}" for n in GEOMETRIC_FIELDS), "Â seq", "Â rpc"])


def _rect(ax, box, **kw):
    from matplotlib.patches import Rectangle

    x1, y1, x2, y2 = (float(v) for v in box)
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, **kw))


def rpc_figure(group: DemoGroup, rows: Sequence[int] = (0, 2, 6), image_size: int = 224):
    """Eqs. (11-13) drawn: for each chosen completion, the 8 projected corners of its predicted
    3D box (wireframe), their footprint B_proj (dashed), its predicted 2D box B̂_2d (solid) and
    the ground-truth 2D box (grey). The title gives r_rpc = IoU(B_proj, B̂_2d). Image axes:
    x right, y down (OpenCV). Returns a matplotlib figure.
    """
    import matplotlib.pyplot as plt

    from pointvl.geometry import aabb_corners, project_points, reprojected_footprint
    from pointvl.schema import dequantize_3d

    K, R, t = group.target["K"], group.target["R"], group.target["t"]
    edges = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]
    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 4.2), squeeze=False)
    for ax, i in zip(axes[0], rows):
        p = group.parsed[i]
        _rect(ax, group.target["bbox2d"], color="0.6", lw=3, label="ground-truth 2D box")
        if p.values["bbox3d"] is not None:
            box3d = dequantize_3d(p.values["bbox3d"], group.quant_bins)  # (6,)
            uv, _ = project_points(aabb_corners(box3d), K, R, t)  # (8, 2)
            for a, b in edges:
                ax.plot(uv[[a, b], 0], uv[[a, b], 1], color="tab:blue", lw=1)
            ax.scatter(uv[:, 0], uv[:, 1], s=12, color="tab:blue", label="projected corners u_j")
            foot, _ = reprojected_footprint(box3d, K, R, t)
            _rect(ax, foot, color="tab:blue", ls="--", lw=1.5, label="B_proj (Eq. 12)")
        if p.values["bbox2d"] is not None:
            _rect(ax, p.values["bbox2d"], color="tab:red", lw=1.5, label="predicted 2D box")
        ax.set_xlim(0, image_size)
        ax.set_ylim(image_size, 0)
        ax.set_aspect("equal")
        ax.set_title(f"{i}: {group.cases[i]}\nr_rpc = {group.scores['rpc'][i]:.3f}", fontsize=9)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def lambda_slider_figure(group: DemoGroup, lams: Sequence[float]):
    """Eq. (14) as a Plotly slider: A_bg(λ) = (1 − λ) Â_seq + λ Â_rpc per completion.

    Bars: the background advantage of each completion at the slider's λ; markers: the two
    ends, Â_seq (λ = 0, GRCA) and Â_rpc (λ = 1). Field-span advantages do not move with λ.
    """
    import plotly.graph_objects as go

    from pointvl.credit import background_advantages, rpc_shaped_background

    G, labels = group.group_size, [f"{i}: {c}" for i, c in enumerate(group.cases)]
    bg = background_advantages(group.scores["seq"], G)  # (B,)
    per_lam = [
        rpc_shaped_background(bg, group.scores["rpc"], G, float(lam)).numpy() for lam in lams
    ]
    ends = (per_lam[0], rpc_shaped_background(bg, group.scores["rpc"], G, 1.0).numpy())
    fig = go.Figure(
        [
            go.Bar(x=labels, y=per_lam[0].tolist(), name="A_bg(λ)", marker_color="#4c72b0"),
            go.Scatter(x=labels, y=bg.numpy(), mode="markers", name="Â_seq (λ=0)"),
            go.Scatter(x=labels, y=ends[1], mode="markers", name="Â_rpc (λ=1)"),
        ]
    )
    steps = [
        {"method": "restyle", "label": f"{lam:.2f}", "args": [{"y": [v.tolist()]}, [0]]}
        for lam, v in zip(lams, per_lam)
    ]
    fig.update_layout(
        sliders=[{"active": 0, "steps": steps, "currentvalue": {"prefix": "λ = "}}],
        yaxis={"title": "background advantage", "range": [-2.6, 2.6]},
        title="Eq. (14): RPC shapes the background advantage only",
        height=480,
        width=900,
    )
    return fig


def region_advantages_html(group: DemoGroup, row: int, lam: float = 0.15) -> Html:
    """Eq. (10) on one completion: the advantage each region's tokens get, per variant.

    Routed advantages are constant on a region (one Â per field span, A_bg elsewhere), so one
    number per (region, variant) says everything; a region with no tokens shows '—'.
    """
    variants = {"GRPO (broadcast)": "grpo", "GRCA": "grca", f"GRCA+RPC (λ={lam})": "grca_rpc"}
    adv = {name: group.advantages(v, lam=lam)[row] for name, v in variants.items()}  # (T,) each
    ids = group.field_ids[row].numpy()
    mask = group.mask[row].numpy()
    rows = []
    for k, region in enumerate(FIELD_NAMES):
        sel = mask & (ids == k)
        vals = [float(a[sel][0]) if sel.any() else None for a in adv.values()]
        rows.append([region, int(sel.sum()), *vals])
    return html_table(rows, ["region", "tokens", *variants])


def alignment_html(group: DemoGroup) -> Html:
    """Per completion: do the tokenizer's offsets and the paper's cumulative decode agree?

    Compares the (T, 2) offsets and the field ids (Eqs. 6-7) each gives (EOS excluded).
    """
    from pointvl.spans import field_token_ids, offsets_from_cumulative_decode

    def decode(ids: list[int]) -> str:
        return group.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    rows = []
    for i, (ids, off) in enumerate(zip(group.token_ids, group.offsets)):
        cum = offsets_from_cumulative_decode(ids[:-1], decode)  # (T-1, 2)
        spans = group.parsed[i].char_spans
        same_ids = np.array_equal(field_token_ids(spans, off[:-1]), field_token_ids(spans, cum))
        n_diff = int((cum != off[:-1]).any(axis=1).sum())
        rows.append([f"{i}: {group.cases[i]}", len(ids) - 1, n_diff, bool(same_ids)])
    return html_table(rows, ["completion", "tokens", "tokens with other offsets", "same field ids"])


# ----------------------------------------------------------------------------- dataset (01)


def instance_sample(row: Mapping) -> dict:
    """A ``build.make_instance`` row as a ``PointVLDataset``-style sample (numpy arrays).

    PNG bytes are decoded (``image`` (H, W, 3) uint8, ``mask`` (H, W) bool), flat columns are
    reshaped (``points`` (N, 6), ``K`` / ``R`` (3, 3), ``kpts2d`` (M, 2), ``kpts3d`` (M, 3));
    ``question`` / ``target`` are the first QA pair. ``reprojection_figure`` takes it as is.
    """
    from pointvl.data.dataset import decode_png

    return {
        "uid": row["uid"],
        "category": row["category"],
        "points": np.asarray(row["points"], np.float32).reshape(-1, 6),  # (N, 6)
        "image": decode_png(row["image_png"]),  # (H, W, 3)
        "mask": decode_png(row["mask_png"]).astype(bool),  # (H, W)
        "K": np.asarray(row["K"]).reshape(3, 3),
        "R": np.asarray(row["R"]).reshape(3, 3),
        "t": np.asarray(row["t"]).reshape(3),
        "bbox2d": np.asarray(row["bbox2d"]),  # (4,)
        "bbox3d": np.asarray(row["bbox3d"]),  # (6,)
        "kpts2d": np.asarray(row["kpts2d"]).reshape(-1, 2),  # (M, 2)
        "kpts3d": np.asarray(row["kpts3d"]).reshape(-1, 3),  # (M, 3)
        "question": row["questions"][0],
        "target": row["targets"][0],
        "description": row["description"],
    }


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
    up = {"up": {"x": 0, "y": 1, "z": 0}, "eye": {"x": 1.2, "y": 0.8, "z": 1.6}}
    fig.update_scenes(aspectmode="data", camera=up)
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
        _rect(axes[1], bbox2d, color="tab:green", lw=1.5)
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


# ----------------------------------------------------------------------------- model (02)


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
    nb, ce = _to_np(neighborhood)[..., :3], _to_np(centers)  # (G, K, 3), (G, 3)
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
    up = {"up": {"x": 0, "y": 1, "z": 0}, "eye": {"x": 1.2, "y": 0.8, "z": 1.6}}
    fig.update_scenes(aspectmode="data", camera=up)
    fig.update_layout(
        title=f"{len(ce)} groups of {nb.shape[1]} points (FPS + KNN)",
        height=460, width=640, margin={"l": 0, "r": 0, "t": 40, "b": 0},
    )  # fmt: skip
    return fig


def _to_np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


@torch.no_grad()
def cross_attention_weights(fusion, point_tokens: torch.Tensor, image_tokens: torch.Tensor):
    """Eq. (2)'s attention matrix, which the module's fused SDPA kernel does not return.

    softmax((H_p W_q)(H_i W_k)^T / sqrt(d_h)) per head, from ``fusion``'s own projections;
    every image token is real (no mask). point_tokens (B, P, d_p), image_tokens (B, I, d_i)
    -> weights (B, h, P, I), rows summing to 1.
    """
    B, P, D = point_tokens.shape
    I, h = image_tokens.shape[1], fusion.num_heads
    q = fusion.q_proj(point_tokens).view(B, P, h, D // h).transpose(1, 2)  # (B, h, P, dh)
    k = fusion.k_proj(image_tokens).view(B, I, h, D // h).transpose(1, 2)  # (B, h, I, dh)
    return torch.softmax(q @ k.transpose(-1, -2) / (D // h) ** 0.5, dim=-1)  # (B, h, P, I)


@torch.no_grad()
def fuse_with_weights(fusion, weights, point_tokens, image_tokens) -> torch.Tensor:
    """Eqs. (2)-(3) written out with given attention ``weights`` (B, h, P, I): H_f (B, P, d_p).

    Z = W_o concat_h(weights_h (H_i W_v)_h); H_f = LN(H_p + Z). With the weights of
    ``cross_attention_weights`` it reproduces ``fusion(point_tokens, image_tokens)``.
    """
    B, P, D = point_tokens.shape
    I, h = image_tokens.shape[1], fusion.num_heads
    v = fusion.v_proj(image_tokens).view(B, I, h, D // h).transpose(1, 2)  # (B, h, I, dh)
    z = fusion.o_proj((weights @ v).transpose(1, 2).reshape(B, P, D))  # (B, P, d_p)
    return fusion.norm(point_tokens + z)  # (B, P, d_p)


def attention_heatmap_figure(weights, image: np.ndarray, grid_hw: tuple[int, int], uv=None):
    """Matplotlib: one point token's attention over the image tokens (Eq. 2), per head and
    averaged, drawn over the image. ``weights`` (h, I) for one point token; ``grid_hw`` the
    merged token grid (Qwen2.5-VL: (H/28, W/28), tokens in raster order); ``uv`` (2,) the
    token's FPS centre projected into the image (white star), if given. The colour scale spans
    [min, max] of the weights (not [0, 1]), so near-uniform weights still show their pattern."""
    import matplotlib.pyplot as plt

    w = _to_np(weights)  # (h, I)
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


# ----------------------------------------------------------------------------- training (06)

# the per-step diagnostics every RL variant logs (pointvl.train.grca_trainer), in plot order
TRAINING_CURVE_KEYS = (
    *(f"reward/{f}" for f in GEOMETRIC_FIELDS),
    "reward/rpc",
    "reward/seq",
    *(f"adv/{f}_zero_std_frac" for f in GEOMETRIC_FIELDS),
    *(f"spans/{f}_coverage" for f in GEOMETRIC_FIELDS),
    "spans/parse_fail_frac",
    "loss/clipfrac",
)


class TinySFTData(torch.utils.data.Dataset):
    """RL rows of ``pointvl.train.tiny`` (``prompt``, ``target``) as completion-only SFT
    features for a plain causal LM: ``input_ids`` = prompt + target JSON + ``<|im_end|>``,
    ``labels`` = -100 on the prompt (Eq. 5 sums over the target only). ``collate`` right-pads
    a batch; pass this object where ``build_sft_trainer`` expects the processor."""

    def __init__(self, rows: Sequence[Mapping], tokenizer, quant_bins: int):
        from pointvl.schema import format_target

        end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.pad_id = tokenizer.pad_token_id
        self.features = []
        for r in rows:
            p = tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]
            c = tokenizer(format_target(r["target"], quant_bins), add_special_tokens=False)
            c = c["input_ids"] + [end]
            self.features.append({"input_ids": p + c, "labels": [-100] * len(p) + c})

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict:
        return self.features[i]

    def collate(self, batch: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        B, L = len(batch), max(len(x["input_ids"]) for x in batch)
        ids = torch.full((B, L), self.pad_id, dtype=torch.long)  # (B, L)
        labels = torch.full((B, L), -100, dtype=torch.long)  # (B, L)
        mask = torch.zeros((B, L), dtype=torch.long)  # (B, L)
        for i, x in enumerate(batch):
            n = len(x["input_ids"])
            ids[i, :n] = torch.tensor(x["input_ids"])
            labels[i, :n] = torch.tensor(x["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def dvc_commands(dvc_yaml: str | os.PathLike, variables: dict | None = None) -> dict[str, str]:
    """``{stage: cmd}`` of a dvc.yaml, ``foreach`` stages expanded as ``stage@item``;
    ``variables`` ({"active.accelerate_config": ..., "profile": ...}) are filled in."""
    import yaml

    def fill(cmd: str) -> str:
        for key, value in (variables or {}).items():
            cmd = cmd.replace("${" + key + "}", str(value))
        return cmd

    out = {}
    for name, st in yaml.safe_load(open(dvc_yaml).read())["stages"].items():
        if "foreach" in st:
            for item in st["foreach"]:
                out[f"{name}@{item}"] = fill(st["do"]["cmd"].replace("${item}", str(item)))
        else:
            out[name] = fill(st["cmd"])
    return out


def accelerate_configs_html(config_dir: str | os.PathLike) -> Html:
    """One row per ``configs/accelerate/*.yaml``: backend, processes, precision, ZeRO stage."""
    from pathlib import Path

    import yaml

    rows = []
    for path in sorted(Path(config_dir).glob("*.yaml")):
        c = yaml.safe_load(path.read_text())
        ds = c.get("deepspeed_config") or {}
        rows.append([path.name, c.get("distributed_type"), c.get("num_processes"),
                     c.get("mixed_precision"), "CPU" if c.get("use_cpu") else "GPU",
                     ds.get("zero_stage")])  # fmt: skip
    cols = ["--config_file", "distributed_type", "num_processes", "mixed_precision", "device",
            "ZeRO stage"]  # fmt: skip
    return html_table(rows, cols)


def read_logs(paths: Mapping[str, str | os.PathLike]) -> dict[str, list[dict]]:
    """``{run: log.jsonl path}`` -> ``{run: records}`` for the logs that exist (others dropped)."""
    from pathlib import Path

    from pointvl.io import read_jsonl

    logs = {name: read_jsonl(p) for name, p in paths.items() if Path(p).is_file()}
    return {name: recs for name, recs in logs.items() if recs}


def training_curves_figure(
    logs: Mapping[str, Sequence[Mapping]],
    keys: Sequence[str] = TRAINING_CURVE_KEYS,
    title: str = "",
    smooth: int = 1,
    ncols: int = 5,
):
    """Matplotlib grid: one panel per logged metric ``keys`` (``reward/<field>``, ...), one
    line per run of ``logs`` ({run: MetricsLogger records}); moving average over ``smooth``
    logged steps. A metric no run logged gets an empty panel saying so."""
    import matplotlib.pyplot as plt

    nrows = -(-len(keys) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.1 * ncols, 2.4 * nrows), squeeze=False,
                             constrained_layout=True)  # fmt: skip
    for ax, key in zip(axes.flat, keys):
        for run, recs in logs.items():
            pts = [(r["step"], r[key]) for r in recs if r.get(key) is not None]
            if not pts:
                continue
            s, y = np.asarray(pts, dtype=float).T  # (S,), (S,)
            k = max(1, min(smooth, len(y)))
            ax.plot(s[k - 1 :], np.convolve(y, np.ones(k) / k, mode="valid"), marker=".",
                    label=run)  # fmt: skip
        if not ax.lines:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.supxlabel("optimizer step", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def last_metrics_html(
    logs: Mapping[str, Sequence[Mapping]], keys: Sequence[str], last: int = 1
) -> Html:
    """Mean of each metric over the last ``last`` logged steps, one row per run."""
    rows = []
    for run, recs in logs.items():
        row = [run, max((r.get("step", 0) for r in recs), default=0)]
        for key in keys:
            vals = [r[key] for r in recs if r.get(key) is not None][-last:]
            row.append(float(np.mean(vals)) if vals else None)
        rows.append(row)
    return html_table(rows, ["run", "steps", *keys])


# ----------------------------------------------------------------------------- results (07, 08)


def load_eval_results(metrics_dir: str | os.PathLike, systems: Sequence[str]) -> dict:
    """``{system: results/metrics/eval/<system>.json or None}`` ({metric: {mean, lo, hi, n}})."""
    import json
    from pathlib import Path

    out = {}
    for s in systems:
        p = Path(metrics_dir) / f"{s}.json"
        out[s] = json.loads(p.read_text()) if p.is_file() else None
    return out


def ours_cell(result: Mapping | None, metric: str):
    """(mean, lo, hi) of ``metric`` in one system's results, None if absent / NaN."""
    if not result or not isinstance(result.get(metric), Mapping):
        return None
    r = result[metric]
    mean = r.get("mean")
    if mean is None or not np.isfinite(mean):
        return None
    return (float(mean), r.get("lo"), r.get("hi"))


def ours_rows(results: Mapping, names: Mapping[str, str], metrics: Sequence[str]) -> dict:
    """``{paper row name: {metric: (mean, lo, hi) | None}}`` for our systems ``names``."""
    return {names[s]: {m: ours_cell(results.get(s), m) for m in metrics} for s in names}


def paper_vs_ours_html(
    rows_ours: Mapping, paper_rows: Mapping, metrics: Sequence[str], digits: int = 3
) -> Html:
    """The report stage's table layout (``pointvl.eval.report``): per metric an "(ours, 95%
    CI)" column and a "(paper)" column (shaded grey); "no run" where we have no number."""
    from pointvl.eval.report import PAPER_SUFFIX, _grid

    header, body = _grid(rows_ours, paper_rows, metrics, digits)
    grey = [PAPER_SUFFIX in h for h in header]
    head = "".join(
        f'<th style="background:#eee">{html.escape(h)}</th>' if g else f"<th>{html.escape(h)}</th>"
        for h, g in zip(header, grey)
    )
    rows = "".join(
        "<tr>" + "".join(f'<td style="background:#eee">{html.escape(c)}</td>' if g else
                         f"<td>{html.escape(c)}</td>" for c, g in zip(r, grey)) + "</tr>"
        for r in body
    )  # fmt: skip
    return Html(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")


def results_status_html(results: Mapping, produced_by: Mapping[str, str]) -> Html:
    """Which of our result files exist: system, profile and n behind it, or the command to run."""
    rows = []
    for s, res in results.items():
        meta = (res or {}).get("_meta") or {}
        n = meta.get("n") or next((v.get("n") for v in (res or {}).values() if
                                   isinstance(v, Mapping) and "n" in v), None)  # fmt: skip
        rows.append([s, "yes" if res else "missing", meta.get("profile"), n,
                     None if res else produced_by.get(s)])  # fmt: skip
    return html_table(rows, ["system", "metrics file", "profile", "test samples", "produced by"])


def _triple(cell) -> tuple | None:
    """A table cell -> (mean, lo, hi) floats (NaN where absent); a multi-seed dict cell too."""
    if cell is None:
        return None
    if isinstance(cell, Mapping):
        cell = (cell.get("mean"), cell.get("lo"), cell.get("hi"))
    return tuple(float("nan") if v is None else float(v) for v in cell)


def paper_vs_ours_figure(
    paper_rows: Mapping, rows_ours: Mapping, metrics: Sequence[str], title: str = ""
):
    """Grouped bars per metric: the paper's number (solid, labelled "paper") and ours (hatched,
    95% CI), one group per system in the paper's order; a missing number of ours says "no run"."""
    import matplotlib.pyplot as plt

    systems = list(paper_rows) + [s for s in rows_ours if s not in paper_rows]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.4), squeeze=False,
                             constrained_layout=True)  # fmt: skip
    x = np.arange(len(systems))
    for ax, m in zip(axes[0], metrics):
        paper = [(paper_rows.get(s) or {}).get(m) for s in systems]
        ours = [_triple((rows_ours.get(s) or {}).get(m)) for s in systems]
        ax.bar(x - 0.2, [p if p is not None else 0 for p in paper], 0.4, color="#bbbbbb",
               label="paper")  # fmt: skip
        for i, c in enumerate(ours):
            if c is None:
                ax.text(x[i] + 0.2, 0.02, "no run", rotation=90, fontsize=7, ha="center")
                continue
            err = [[c[0] - c[1]], [c[2] - c[0]]] if np.isfinite([c[1], c[2]]).all() else None
            ax.bar(x[i] + 0.2, c[0], 0.4, color="#4c72b0", hatch="//", yerr=err, capsize=2,
                   label="ours (95% CI)" if "ours (95% CI)" not in
                   ax.get_legend_handles_labels()[1] else None)  # fmt: skip
        ax.set_xticks(x, systems, rotation=35, ha="right", fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_title(m, fontsize=9)
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def lambda_sweep_figure(paper_rows: Mapping, ours_by_lam: Mapping, metrics=("rpc", "iou3d")):
    """Table 5 as curves over λ: the paper's numbers (dashed, "paper") and ours with 95% CIs
    where a run exists (``ours_by_lam``: {"0.15": {metric: (mean, lo, hi) | None}})."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False,
                             constrained_layout=True)  # fmt: skip
    lams = sorted((k for k in paper_rows if k[0].isdigit()), key=float)
    for ax, m in zip(axes[0], metrics):
        ax.plot([float(k) for k in lams], [paper_rows[k][m] for k in lams], "s--", color="gray",
                label="paper")  # fmt: skip
        pts = [(float(k), c[m]) for k, c in ours_by_lam.items() if (c or {}).get(m)]
        if pts:
            xs, cs = zip(*sorted(pts))
            c = np.asarray(cs, dtype=float)  # (L, 3)
            ax.errorbar(xs, c[:, 0], yerr=[c[:, 0] - c[:, 1], c[:, 2] - c[:, 0]], marker="o",
                        capsize=3, label="ours (95% CI)")  # fmt: skip
        else:
            ax.text(0.5, 0.1, "ours: no run", ha="center", transform=ax.transAxes)
        ax.set_xlabel("RPC weight λ")
        ax.set_title(m, fontsize=9)
        ax.legend(fontsize=7)
    return fig


def prediction_values(completion: str, quant_bins: int, num_keypoints: int | None) -> dict:
    """A completion -> the continuous geometric fields ``reprojection_figure`` draws (pixels,
    object frame); a field that failed to parse is None (and is not drawn)."""
    from pointvl.schema import parse_output, to_continuous

    parsed = parse_output(completion, num_keypoints=num_keypoints)
    ok = {f: (parsed.values[f] if parsed.errors.get(f) is None else None) for f in GEOMETRIC_FIELDS}
    return to_continuous(ok, quant_bins)


def read_predictions(path: str | os.PathLike) -> dict[str, dict]:
    """``results/predictions/<system>.jsonl`` -> ``{uid: {uid, question, completion}}`` ({} if absent)."""
    import json
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        return {}
    rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return {r["uid"]: r for r in rows}
