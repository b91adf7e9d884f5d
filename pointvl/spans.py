"""Character spans -> per-token field ids: the token partition of Eqs. (6-7).

Every completion token gets one integer id::

    0       background S_bg (keys, brackets between fields, commas, answer, description, EOS)
    k + 1   the value span S_k of GEOMETRIC_FIELDS[k]   (1 bbox2d, 2 bbox3d, 3 kpts2d, 4 kpts3d)

so the ids partition the tokens by construction (Eq. 7: S_bg is everything else).

Straddling rule. BPE merges do not respect JSON: a token may hold ``": [`` or ``]}``.
A token goes to the region -- a field's value span or the background -- that holds most of its
characters. A tie between a field and the background goes to the field (the token carries
part of the value); a tie between two fields goes to the one earlier in the text. Tokens with
no characters (special tokens such as EOS, offsets (0, 0) or (s, s)) are background.

Two ways to get each token's character range:
- ``offsets``: the tokenizer's ``offset_mapping`` (fast tokenizers, ``trim_offsets=False``);
- ``offsets_from_cumulative_decode``: the paper's method, "cumulative decoded offsets":
  decode the prefix ``ids[:t+1]`` and take its length. It needs only ``decode`` and works for
  any tokenizer; it is O(T^2) in decoding work. Both agree wherever both apply (tested).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from pointvl.schema import GEOMETRIC_FIELDS

Span = tuple[int, int]


def _span_array(char_spans: Mapping[str, Span | None], fields: Sequence[str]) -> np.ndarray:
    """(F, 2) start/end per field; a missing span is the empty range (0, 0)."""
    arr = np.zeros((len(fields), 2), dtype=np.int64)
    for k, name in enumerate(fields):
        span = char_spans.get(name)
        if span is not None:
            start, end = int(span[0]), int(span[1])
            if end < start:
                raise ValueError(f"char span of {name!r} is {span}: expected start <= end")
            arr[k] = (start, end)
    return arr


def _assign(off: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """Core of the straddling rule on arrays: off (..., T, 2), spans (..., F, 2) -> (..., T)."""
    # overlap[..., t, k] = |[s_t, e_t) ∩ [S_k, E_k)|
    lo = np.maximum(off[..., :, None, 0], spans[..., None, :, 0])  # (..., T, F)
    hi = np.minimum(off[..., :, None, 1], spans[..., None, :, 1])  # (..., T, F)
    overlap = np.clip(hi - lo, 0, None)  # (..., T, F)
    length = np.clip(off[..., 1] - off[..., 0], 0, None)  # (..., T)
    background = length - overlap.sum(axis=-1)  # (..., T)
    best_overlap = overlap.max(axis=-1)  # (..., T)
    # among tied fields, the earliest in the text (fields are disjoint: compare span starts)
    tied = (overlap == best_overlap[..., None]) & (best_overlap[..., None] > 0)  # (..., T, F)
    starts = np.where(tied, spans[..., None, :, 0], np.iinfo(np.int64).max)  # (..., T, F)
    best = starts.argmin(axis=-1)  # (..., T)
    # t goes to field best+1 iff that field holds >= as many of t's characters as background
    take = (best_overlap > 0) & (best_overlap >= background)  # (..., T)
    return np.where(take, best + 1, 0).astype(np.int64)  # (..., T)


def field_token_ids(
    char_spans: Mapping[str, Span | None],
    offsets: Sequence[Span] | np.ndarray,
    fields: Sequence[str] = GEOMETRIC_FIELDS,
) -> np.ndarray:
    """Eqs. (6-7): per-token field id (T,) int64 from value char spans and token offsets.

    ``char_spans`` maps field -> (start, end) of its value in the completion text (or None);
    fields not in ``fields`` (the semantic ones) are background. ``offsets`` (T, 2) gives each
    token's (start, end) in the same text. See the module docstring for the straddling rule.
    """
    off = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)  # (T, 2)
    return _assign(off, _span_array(char_spans, fields))  # (T,)


def field_token_ids_naive(
    char_spans: Mapping[str, Span | None],
    offsets: Sequence[Span],
    fields: Sequence[str] = GEOMETRIC_FIELDS,
) -> list[int]:
    """Reference implementation of ``field_token_ids``: a character-by-character vote."""
    owner: dict[int, int] = {}
    for k, name in enumerate(fields):
        span = char_spans.get(name)
        if span is not None:
            for c in range(span[0], span[1]):
                owner[c] = k + 1
    ids = []
    for s, e in offsets:
        votes: dict[int, int] = {}
        for c in range(s, e):
            votes[owner.get(c, 0)] = votes.get(owner.get(c, 0), 0) + 1
        field_votes = {k: v for k, v in votes.items() if k != 0}
        if not field_votes:
            ids.append(0)
            continue
        top = max(field_votes.values())
        winner = min(
            (k for k, v in field_votes.items() if v == top),
            key=lambda k: char_spans[fields[k - 1]][0],
        )
        ids.append(winner if top >= votes.get(0, 0) else 0)
    return ids


def offsets_from_cumulative_decode(
    token_ids: Sequence[int], decode: Callable[[list[int]], str]
) -> np.ndarray:
    """The paper's alignment: token t covers [len(decode(ids[:t])), len(decode(ids[:t+1]))).

    O(T^2) decoding work. A prefix that ends inside a multi-byte character may decode to a
    replacement character; lengths are made monotone so every range stays well formed.
    """
    ids = list(token_ids)
    out = np.zeros((len(ids), 2), dtype=np.int64)
    prev = 0
    for t in range(len(ids)):
        cur = max(prev, len(decode(ids[: t + 1])))
        out[t] = (prev, cur)
        prev = cur
    return out


class TokenLengths:
    """Per-vocabulary-entry character lengths, so that offsets are a cumulative sum.

    For a byte-level BPE (ours and Qwen's), ``decode(ids) == "".join(decode([i]) for i in ids)``
    whenever every token decodes on its own to complete characters; then token t covers
    ``[cumsum(len)_{t-1}, cumsum(len)_t)``, computed for a whole row in one numpy call. Tokens
    that hold part of a multi-byte character (their lone decode contains U+FFFD) are marked
    unclean, and a row containing one -- or whose total length disagrees with its text -- falls
    back to the cumulative-decode method. Special tokens have length 0 (they are skipped when
    decoding), so they are background.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        n = len(tokenizer)
        pieces = tokenizer.batch_decode(
            [[i] for i in range(n)], skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        self.lengths = np.array([len(p) for p in pieces], dtype=np.int64)  # (V,)
        self.clean = np.array(["\ufffd" not in p for p in pieces], dtype=bool)  # (V,)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    def offsets(self, token_ids: Sequence[int], text: str | None = None) -> np.ndarray:
        """(T, 2) offsets of one row in its decoded text."""
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)  # (T,)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.lengths)):
            raise ValueError(f"token id outside the vocabulary [0, {len(self.lengths)})")
        ends = np.cumsum(self.lengths[ids])  # (T,)
        total = int(ends[-1]) if ids.size else 0
        if self.clean[ids].all() and (text is None or total == len(text)):
            return np.stack([ends - self.lengths[ids], ends], axis=1)  # (T, 2)
        return offsets_from_cumulative_decode(ids.tolist(), self.decode)


def token_offsets(token_ids: Sequence[int], tokenizer, text: str | None = None) -> np.ndarray:
    """Character offsets (T, 2) of generated ``token_ids`` in their decoded text.

    Builds a ``TokenLengths`` table (once per call: keep one around for many rows).
    """
    return TokenLengths(tokenizer).offsets(token_ids, text)


def batch_token_offsets(
    token_ids: Sequence[Sequence[int]], table: TokenLengths, texts: Sequence[str] | None = None
) -> list[np.ndarray]:
    """``TokenLengths.offsets`` for a batch of rows."""
    if texts is None:
        return [table.offsets(row) for row in token_ids]
    return [table.offsets(row, text) for row, text in zip(token_ids, texts, strict=True)]


def batch_field_token_ids(
    char_spans_list: Sequence[Mapping[str, Span | None]],
    offsets_list: Sequence[np.ndarray],
    num_tokens: int,
    fields: Sequence[str] = GEOMETRIC_FIELDS,
) -> torch.Tensor:
    """Field ids of a batch, (B, T) long, right-padded with 0 (background), in one numpy pass.

    Padding positions get the empty offset (0, 0), hence background; they are masked out by
    ``completion_mask`` downstream. Rows longer than ``num_tokens`` are cut.
    """
    B = len(offsets_list)
    if len(char_spans_list) != B:
        raise ValueError(
            f"{len(char_spans_list)} span mappings but {B} offset rows; expected equal"
        )
    off = np.zeros((B, num_tokens, 2), dtype=np.int64)  # (B, T, 2)
    for i, o in enumerate(offsets_list):
        o = np.asarray(o, dtype=np.int64).reshape(-1, 2)[:num_tokens]
        off[i, : len(o)] = o
    spans = (
        np.stack([_span_array(c, fields) for c in char_spans_list])
        if B
        else np.zeros((0, len(fields), 2), dtype=np.int64)
    )  # (B, F, 2)
    return torch.from_numpy(_assign(off, spans))  # (B, T)
