"""The token partition of a completion (Eqs. 6-7) and the advantage each region gets (Eq. 10).

Drawn on the actual BPE tokens: each token is a coloured span (white bars between tokens;
hovering shows its index, characters, region and advantage). The tables explain the
partition of a ``pointvl.demo.DemoGroup``: parse errors per field, tokens that straddle a
value and the background, offsets vs cumulative decode, one advantage per region.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import numpy as np

from pointvl.schema import FIELDS, GEOMETRIC_FIELDS
from pointvl.viz.html import Html, html_table

FIELD_NAMES = ("background",) + GEOMETRIC_FIELDS
# background, bbox2d, bbox3d, kpts2d, kpts3d: light tints, so the token text stays readable
# (the heatmaps' partition strip uses the saturated viz.advantages.FIELD_COLORS)
FIELD_COLORS = ("#e6e6e6", "#8dd3c7", "#fdb462", "#bebada", "#fb8072")


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
                rows.append((t, repr(text[s:e]), int(inside), int(e - s - inside), name,
                             FIELD_NAMES[ids[t]]))  # fmt: skip
    return rows


def straddling_html(text: str, offsets: np.ndarray, char_spans: Mapping, field_ids) -> Html:
    """``straddling_rows`` as a table."""
    cols = ["token", "text", "chars in field", "chars in background", "field", "assigned to"]
    return html_table(straddling_rows(text, offsets, char_spans, field_ids), cols)


def parse_table_html(group) -> Html:
    """Per completion of a ``DemoGroup``: each field's parse error (``ok`` when clean) and
    its token count."""
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


def region_advantages_html(group, row: int, lam: float = 0.15) -> Html:
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


def alignment_html(group) -> Html:
    """Per completion: do the tokenizer's ``offset_mapping`` and the paper's cumulative decode
    agree? Compares the (T, 2) offsets and the field ids (Eqs. 6-7) each gives (EOS excluded).
    """
    from pointvl.spans import field_token_ids, offsets_from_cumulative_decode

    tok = group.tokenizer

    def decode(ids: list[int]) -> str:
        return tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    rows = []
    for i, (ids, text) in enumerate(zip(group.token_ids, group.completions)):
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        off = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)  # (T-1, 2)
        cum = offsets_from_cumulative_decode(ids[:-1], decode)  # (T-1, 2)
        spans = group.parsed[i].char_spans
        same_ids = np.array_equal(field_token_ids(spans, off), field_token_ids(spans, cum))
        n_diff = int((cum != off).any(axis=1).sum())
        rows.append([f"{i}: {group.cases[i]}", len(ids) - 1, n_diff, bool(same_ids)])
    return html_table(rows, ["completion", "tokens", "tokens with other offsets", "same field ids"])
