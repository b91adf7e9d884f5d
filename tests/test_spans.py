"""pointvl.spans: token partition (Eqs. 6-7), straddling rule, offsets vs cumulative decode."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_sample
from pointvl.schema import GEOMETRIC_FIELDS, format_target, parse_output
from pointvl.spans import (
    batch_field_token_ids,
    field_token_ids,
    field_token_ids_naive,
    offsets_from_cumulative_decode,
    token_offsets,
)


def test_hand_made_straddling_cases():
    # text:   0123456789012
    #         {"a": [1, 2]}
    spans = {"bbox2d": (6, 12)}
    offsets = [(0, 2), (2, 6), (6, 8), (8, 10), (10, 12), (12, 13)]
    #   '{"'  '": ['  '[1'   ', '   '2]'   '}'
    ids = field_token_ids(spans, offsets)
    assert ids.tolist() == [0, 0, 1, 1, 1, 0]
    # a token '": [' (3 background chars + '[') -> background; ']}' tie -> field
    ids = field_token_ids(spans, [(0, 3), (3, 7), (7, 11), (11, 13)])
    assert ids.tolist() == [0, 0, 1, 1]
    # zero-length tokens (special tokens) are background
    assert field_token_ids(spans, [(7, 7), (13, 13)]).tolist() == [0, 0]


def test_semantic_fields_are_background(sample):
    text = format_target(sample)
    p = parse_output(text)
    offsets = [(i, i + 1) for i in range(len(text))]  # one token per character
    ids = field_token_ids(p.char_spans, offsets)
    for k, name in enumerate(GEOMETRIC_FIELDS):
        s, e = p.char_spans[name]
        assert set(ids[s:e].tolist()) == {k + 1}
    a, b = p.char_spans["answer"]
    assert set(ids[a:b].tolist()) == {0}
    assert (ids > 0).sum() == sum(
        e - s for n, (s, e) in p.char_spans.items() if n in GEOMETRIC_FIELDS
    )


def test_invalid_span_raises():
    with pytest.raises(ValueError, match="bbox2d"):
        field_token_ids({"bbox2d": (5, 2)}, [(0, 1)])


@settings(max_examples=200, deadline=None)
@given(
    n_chars=st.integers(1, 80),
    cuts=st.lists(st.integers(0, 80), max_size=30),
    raw_spans=st.lists(st.tuples(st.integers(0, 80), st.integers(0, 20)), min_size=4, max_size=4),
)
def test_vectorized_matches_naive_and_partitions(n_chars, cuts, raw_spans):
    bounds = sorted({0, n_chars, *[c % (n_chars + 1) for c in cuts]})
    offsets = list(zip(bounds[:-1], bounds[1:]))
    # disjoint spans, in text order
    spans, pos = {}, 0
    for name, (gap, width) in zip(GEOMETRIC_FIELDS, raw_spans):
        start = min(pos + gap % 10, n_chars)
        end = min(start + width, n_chars)
        spans[name] = (start, end) if end > start else None
        pos = end
    ids = field_token_ids(spans, offsets)
    assert ids.tolist() == field_token_ids_naive(spans, offsets)
    assert ids.shape == (len(offsets),)
    assert set(ids.tolist()) <= {0, 1, 2, 3, 4}  # every token has exactly one owner
    for k, name in enumerate(GEOMETRIC_FIELDS):
        if spans[name] is None:
            assert k + 1 not in ids.tolist()


def _mutations(sample_seed: int) -> list[str]:
    text = format_target(make_sample(sample_seed))
    return [
        text,
        "Answer follows.\n```json\n" + text + "\n```",
        text[: len(text) // 2],  # truncated
        text[:-1] + ', "bbox2d": [1, 2, 3, 4]}',  # duplicated field
        text.replace('"bbox3d": [', '"bbox3d": [[', 1),  # malformed field
    ]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_offsets_and_cumulative_decode_agree_on_bpe(bpe_tokenizer, seed):
    tok = bpe_tokenizer
    for text in _mutations(seed):
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = enc["input_ids"]
        # the BPE really splits numbers irregularly: some number token is not a whole number
        pieces = [text[s:e] for s, e in enc["offset_mapping"]]
        cum = offsets_from_cumulative_decode(ids, lambda x: tok.decode(x))
        assert cum.tolist() == [list(o) for o in enc["offset_mapping"]]
        p = parse_output(text)
        a = field_token_ids(p.char_spans, enc["offset_mapping"])
        b = field_token_ids(p.char_spans, cum)
        assert a.tolist() == b.tolist()
        assert "".join(pieces) == text


def test_bpe_splits_numbers_irregularly(bpe_tokenizer):
    tok = bpe_tokenizer
    splits = set()
    for number in ["1234", "5678", "9012", "3456", "987", "65"]:
        pieces = tok.convert_ids_to_tokens(tok(number, add_special_tokens=False)["input_ids"])
        splits.add(tuple(len(p) for p in pieces))
    assert len(splits) > 1, f"expected irregular splits, got {splits}"


def test_token_offsets_handles_noncanonical_ids_and_specials(bpe_tokenizer):
    tok = bpe_tokenizer
    text = format_target(make_sample(7))
    # a non-canonical segmentation: one token per character
    char_ids = [tok(ch, add_special_tokens=False)["input_ids"] for ch in text]
    assert all(len(c) == 1 for c in char_ids)  # ASCII: one byte-level token per character
    ids = [c[0] for c in char_ids] + [tok.eos_token_id]
    off = token_offsets(ids, tok)
    assert off.shape == (len(ids), 2)
    assert off[-1, 0] == off[-1, 1]  # EOS has no characters
    assert [text[s:e] for s, e in off[:-1]] == list(text)
    canonical = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    off2 = token_offsets(canonical, tok)
    assert [text[s:e] for s, e in off2[:-1]] == tok.batch_decode([[i] for i in canonical[:-1]])


def test_batch_field_token_ids_pads_with_background(bpe_tokenizer):
    tok = bpe_tokenizer
    texts = _mutations(4)
    spans, offs = [], []
    for t in texts:
        enc = tok(t, add_special_tokens=False, return_offsets_mapping=True)
        spans.append(parse_output(t).char_spans)
        offs.append(np.asarray(enc["offset_mapping"]))
    T = max(len(o) for o in offs)
    ids = batch_field_token_ids(spans, offs, T)
    assert ids.shape == (len(texts), T)
    for i, o in enumerate(offs):
        assert ids[i, len(o) :].eq(0).all()
        assert ids[i, : len(o)].tolist() == field_token_ids(spans[i], o).tolist()
    # the duplicated-bbox2d completion has no bbox2d tokens; the valid one has all four fields
    assert 1 not in ids[3].tolist()
    assert set(ids[0].tolist()) == {0, 1, 2, 3, 4}
