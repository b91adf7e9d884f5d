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
