"""pointvl.schema: quantization round trip, canonical target, tolerant parsing (Sec. 3.7)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_sample
from pointvl.schema import (
    FIELDS,
    GEOMETRIC_FIELDS,
    dequantize_3d,
    format_target,
    parse_output,
    quantize_2d,
    quantize_3d,
    to_continuous,
)


@pytest.mark.parametrize("q", [2, 10, 100, 1000])
def test_quantize_round_trip_within_half_bin(q):
    x = np.random.default_rng(q).uniform(-0.5, 0.5, 10_000)
    b = quantize_3d(x, q)
    assert b.min() >= 0 and b.max() <= q - 1
    assert np.max(np.abs(dequantize_3d(b, q) - x)) <= 0.5 / q + 1e-12


def test_quantize_edges_and_clipping():
    assert quantize_3d([-0.5, 0.5, -3.0, 7.0], 10).tolist() == [0, 9, 0, 9]
    assert dequantize_3d([0, 9], 10).tolist() == pytest.approx([-0.45, 0.45])
    assert quantize_2d([1.4, 1.6, -0.6]).tolist() == [1, 2, -1]


def test_format_target_is_canonical_json(sample):
    text = format_target(sample, quant_bins=100)
    obj = json.loads(text)
    assert list(obj) == list(FIELDS)
    assert obj["bbox3d"] == quantize_3d(sample["bbox3d"], 100).tolist()
    assert obj["bbox2d"] == quantize_2d(sample["bbox2d"]).tolist()
    assert np.asarray(obj["kpts3d"]).shape == (16, 3)
    assert "\n" not in text


def test_format_target_rejects_bad_samples(sample):
    bad = dict(sample, bbox2d=[1, 2, 3])
    with pytest.raises(ValueError, match="bbox2d has shape"):
        format_target(bad)
    with pytest.raises(KeyError, match="kpts3d"):
        format_target({k: v for k, v in sample.items() if k != "kpts3d"})


def test_parse_round_trip_and_spans(sample):
    text = format_target(sample, quant_bins=100)
    p = parse_output(text)
    assert p.ok
    cont = to_continuous(p.values, 100)
    assert np.max(np.abs(cont["bbox3d"] - sample["bbox3d"])) <= 0.5 / 100 + 1e-12
    assert np.max(np.abs(cont["bbox2d"] - sample["bbox2d"])) <= 0.5 + 1e-12
    obj = json.loads(text)
    for name in FIELDS:
        s, e = p.char_spans[name]
        # the span is exactly the value's JSON text
        assert json.loads(text[s:e]) == obj[name]


def test_parse_tolerates_prose_and_fences(sample):
    core = format_target(sample)
    text = "Sure! Here it is {not json}:\n```json\n" + core + "\n```\nHope it helps {x}."
    p = parse_output(text)
    assert p.ok
    s, e = p.char_spans["bbox2d"]
    assert text[s:e] == core[p.char_spans["bbox2d"][0] - text.index(core) :][: e - s]
    assert p.json_span[0] == text.index(core)


def test_duplicate_field_has_no_value_and_no_span(sample):
    core = format_target(sample)
    text = core[:-1] + ', "bbox3d": [1, 2, 3, 4, 5, 6]}'
    p = parse_output(text)
    assert p.errors["bbox3d"] == "duplicate"
    assert p.values["bbox3d"] is None and p.char_spans["bbox3d"] is None
    assert p.errors["bbox2d"] is None  # the others survive


@pytest.mark.parametrize(
    "snippet, field, code",
    [
        ('"bbox2d": [1, 2, 3]', "bbox2d", "wrong_shape"),
        ('"bbox2d": [1, 2, 3, NaN]', "bbox2d", "non_finite"),
        ('"bbox2d": [1, 2, 3, Infinity]', "bbox2d", "non_finite"),
        ('"bbox2d": [1, 2, true, 4]', "bbox2d", "wrong_type"),
        ('"bbox2d": "1,2,3,4"', "bbox2d", "wrong_type"),
        ('"bbox2d": [1, 2, 3, 4]]', "bbox2d", "malformed"),
        ('"bbox2d": [1, 2,, 3, 4]', "bbox2d", "malformed"),
        ('"answer": 3', "answer", "wrong_type"),
        ('"kpts2d": [[1, 2], [3]]', "kpts2d", "wrong_shape"),
        ('"kpts2d": [[1, 2], [3, 4]]', "kpts2d", "wrong_shape"),  # 2 keypoints, 16 expected
    ],
)
def test_bad_values_are_reported(snippet, field, code):
    p = parse_output("{" + snippet + ', "description": "ok"}')
    assert p.errors[field] == code
    assert p.values[field] is None and p.char_spans[field] is None
    assert p.errors["description"] is None
    assert p.errors["bbox3d"] == "missing"


def test_truncated_output_keeps_completed_fields(sample):
    text = format_target(sample)
    cut = text[: text.index('"kpts2d"') + 30]
    p = parse_output(cut)
    assert p.errors["bbox3d"] is None and p.errors["bbox2d"] is None
    assert p.errors["kpts2d"] == "malformed"
    assert p.errors["kpts3d"] == "missing"


def test_no_json():
    for text in ["", "no braces here", "{}", '{ "other": 1 }', None, 42]:
        p = parse_output(text)
        assert all(v is None for v in p.values.values())
        assert all(e is not None for e in p.errors.values())


def test_any_keypoint_count_when_unconstrained():
    p = parse_output('{"kpts3d": [[1, 2, 3], [4, 5, 6]]}', num_keypoints=None)
    assert p.errors["kpts3d"] is None and p.values["kpts3d"].shape == (2, 3)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parse_never_raises_on_arbitrary_text(text):
    p = parse_output(text)
    assert set(p.errors) == set(FIELDS)
    for name, span in p.char_spans.items():
        if span is not None:
            assert 0 <= span[0] < span[1] <= len(text)
            assert p.errors[name] is None


_JSONISH = st.sampled_from(list('{}[],:"0123456789 .-eE\\nNaI') + ["NaN", "true", "bbox2d"])


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 50),
    cuts=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 5), _JSONISH), max_size=4),
)
def test_parse_never_raises_on_mutated_valid_output(seed, cuts):
    text = format_target(make_sample(seed))
    for pos, delete, insert in cuts:
        pos = pos % (len(text) + 1)
        text = text[:pos] + insert + text[pos + delete :]
    p = parse_output(text)
    for name in GEOMETRIC_FIELDS:
        if p.errors[name] is None:
            s, e = p.char_spans[name]
            assert np.all(np.isfinite(p.values[name]))
            assert json.loads(text[s:e]) is not None
