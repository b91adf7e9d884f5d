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
    spans = _span_array(char_spans, fields)  # (F, 2)
    if off.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    # overlap[t, k] = |[s_t, e_t) ∩ [S_k, E_k)|
    lo = np.maximum(off[:, None, 0], spans[None, :, 0])  # (T, F)
    hi = np.minimum(off[:, None, 1], spans[None, :, 1])  # (T, F)
    overlap = np.clip(hi - lo, 0, None)  # (T, F)
    length = np.clip(off[:, 1] - off[:, 0], 0, None)  # (T,)
    background = length - overlap.sum(axis=1)  # (T,)
    best = overlap.argmax(axis=1)  # (T,)  first max = earliest field in order
    best_overlap = overlap[np.arange(len(off)), best]  # (T,)
    # earliest-in-text among tied fields: fields are disjoint, so compare span starts
    if len(fields) > 1:
        tied = overlap == best_overlap[:, None]  # (T, F)
        starts = np.where(tied, spans[None, :, 0], np.iinfo(np.int64).max)  # (T, F)
        best = np.where(best_overlap > 0, starts.argmin(axis=1), best)  # (T,)
    # t goes to field best+1 iff it holds >= as many of t's characters as the background
    take = (best_overlap > 0) & (best_overlap >= background)  # (T,)
    return np.where(take, best + 1, 0).astype(np.int64)  # (T,)


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


def token_offsets(token_ids: Sequence[int], tokenizer, text: str | None = None) -> np.ndarray:
    """Character offsets (T, 2) of generated ``token_ids`` in their decoded text.

    Fast path: re-encode the decoded text with ``return_offsets_mapping``; if that reproduces
    exactly the same ids (the usual case), its offsets are exact. Otherwise -- a generation
    that is not the tokenizer's canonical segmentation, or a tokenizer without offsets --
    fall back to the cumulative-decode method.
    """
    ids = [int(i) for i in token_ids]

    def decode(x: list[int]) -> str:
        return tokenizer.decode(x, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    if text is None:
        text = decode(ids)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        special = set(getattr(tokenizer, "all_special_ids", []))
        body = [i for i in ids if i not in special]
        if enc["input_ids"] == body:
            it = iter(enc["offset_mapping"])
            end = len(text)
            return np.asarray(
                [(end, end) if i in special else next(it) for i in ids], dtype=np.int64
            ).reshape(-1, 2)
    return offsets_from_cumulative_decode(ids, decode)


def batch_field_token_ids(
    char_spans_list: Sequence[Mapping[str, Span | None]],
    offsets_list: Sequence[np.ndarray],
    num_tokens: int,
    fields: Sequence[str] = GEOMETRIC_FIELDS,
) -> torch.Tensor:
    """Stack per-completion ids into (B, T) long, right-padded with 0 (background).

    Padding positions are masked out by ``completion_mask`` downstream.
    """
    out = torch.zeros(len(char_spans_list), num_tokens, dtype=torch.long)  # (B, T)
    for i, (spans, off) in enumerate(zip(char_spans_list, offsets_list, strict=True)):
        ids = field_token_ids(spans, off[:num_tokens], fields)  # (T_i,)
        out[i, : len(ids)] = torch.from_numpy(ids)
    return out
