"""pointvl.rewards: per-field rewards (Eq. 8), RPC (Eq. 13), semantic, format and sequence
rewards; never raising on arbitrary predictions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import make_sample
from pointvl.geometry import reprojected_footprint
from pointvl.rewards import (
    Rewards,
    answer_reward,
    description_reward,
    field_rewards,
    format_reward,
    normalize_text,
    rpc_reward,
    score_batch,
    score_completion,
    sequence_reward,
)
from pointvl.schema import (
    FIELDS,
    GEOMETRIC_FIELDS,
    ParsedOutput,
    dequantize_3d,
    format_target,
    parse_output,
)

Q = 100
A = 0.3  # camera yaw (rad): the box is seen at an angle, not head-on
CAMERA = {
    "K": np.array([[200.0, 0.0, 112.0], [0.0, 200.0, 112.0], [0.0, 0.0, 1.0]]),
    "R": np.array([[np.cos(A), 0.0, np.sin(A)], [0.0, 1.0, 0.0], [-np.sin(A), 0.0, np.cos(A)]]),
    "t": np.array([0.05, -0.1, 2.5]),
}
BOX_BINS = np.array([20.0, 25.0, 30.0, 80.0, 75.0, 70.0])  # bbox3d as written (bins)


def parsed_of(**values) -> ParsedOutput:
    """A ParsedOutput whose given fields are clean and whose other fields are missing."""
    return ParsedOutput(
        values={f: values.get(f) for f in FIELDS},
        char_spans={f: None for f in FIELDS},
        errors={f: (None if values.get(f) is not None else "missing") for f in FIELDS},
    )


def perfect_case():
    """A target and a prediction that matches it exactly, 2D box = projected footprint."""
    gt3d = dequantize_3d(BOX_BINS, Q)  # (6,) object frame: bin centres, exactly representable
    footprint, valid = reprojected_footprint(gt3d, **CAMERA)
    assert bool(valid)
    rng = np.random.default_rng(0)
    kpts3d_bins = rng.integers(BOX_BINS[:3], BOX_BINS[3:] + 1, (16, 3)).astype(float)
    kpts2d = rng.uniform(footprint[:2], footprint[2:], (16, 2))
    target = {"bbox2d": footprint, "bbox3d": gt3d, "answer": "chair", "description": "a chair"}
    target.update(CAMERA)
    parsed = parsed_of(
        answer="Chair",
        description="A chair.",
        bbox2d=footprint.copy(),
        bbox3d=BOX_BINS.copy(),
        kpts2d=kpts2d,
        kpts3d=kpts3d_bins,
    )
    return parsed, target


# ----------------------------------------------------------------------------- geometric fields
def test_perfect_prediction_scores_one_everywhere():
    parsed, target = perfect_case()
    r = score_completion(parsed, target, Q)
    assert isinstance(r, Rewards)
    assert r.fields == {"bbox2d": 1.0, "bbox3d": 1.0, "kpts2d": 1.0, "kpts3d": 1.0}
    assert list(r.fields) == list(GEOMETRIC_FIELDS)
    assert r.rpc == pytest.approx(1.0, abs=1e-12)
    assert r.format == 1.0 and r.answer == 1.0 and r.description == 1.0
    assert r.seq == pytest.approx(1.1)


def test_3d_fields_are_dequantized_before_scoring():
    parsed, target = perfect_case()
    # GT box of a small cube around the origin; bin 50 is the bin centre 0.005 (inside),
    # while the raw value 50 would be far outside.
    target["bbox3d"] = np.array([-0.1, -0.1, -0.1, 0.1, 0.1, 0.1])
    parsed.values["kpts3d"] = np.full((16, 3), 50.0)
    parsed.values["kpts3d"][:4] = 95.0  # 0.455: outside
    parsed.values["bbox3d"] = np.array([40.0, 40, 40, 59, 59, 59])  # [-0.095, 0.095]^3
    r = field_rewards(parsed, target, Q)
    assert r["kpts3d"] == 0.75
    assert r["bbox3d"] == pytest.approx((0.19 / 0.2) ** 3)


def test_field_rewards_closed_forms():
    target = {"bbox2d": np.array([0.0, 0.0, 100.0, 50.0]), "bbox3d": dequantize_3d(BOX_BINS, Q)}
    kpts2d = np.array([[10.0, 10.0], [100.0, 50.0], [150.0, 10.0], [50.0, -1.0]])
    parsed = parsed_of(bbox2d=np.array([50.0, 0.0, 150.0, 50.0]), kpts2d=kpts2d)
    r = field_rewards(parsed, target, Q)
    # IoU: inter 50 * 50, union 2 * 5000 - 2500; 2 of 4 keypoints inside (one on the corner)
    assert r == {"bbox2d": pytest.approx(1 / 3), "bbox3d": 0.0, "kpts2d": 0.5, "kpts3d": 0.0}


def test_missing_or_errored_field_scores_zero_and_leaves_the_others():
    parsed, target = perfect_case()
    parsed.values["kpts3d"], parsed.errors["kpts3d"] = None, "missing"
    parsed.errors["bbox2d"] = "duplicate"  # an error wins over a stale value
    r = score_completion(parsed, target, Q)
    assert r.fields == {"bbox2d": 0.0, "bbox3d": 1.0, "kpts2d": 1.0, "kpts3d": 0.0}
    assert r.rpc == 0.0  # needs the predicted bbox2d
    assert r.format == pytest.approx(4 / 6)
    assert r.seq == pytest.approx(0.5 + 0.1 * 4 / 6)


@pytest.mark.parametrize(
    "name, value",
    [
        ("bbox2d", np.zeros(3)),
        ("bbox2d", np.array([0.0, 0.0, np.inf, 1.0])),
        ("bbox3d", np.zeros((2, 6))),
        ("kpts2d", np.zeros((16, 3))),
        ("kpts2d", np.zeros((0, 2))),
        ("kpts3d", "not an array"),
        ("kpts3d", [[1, 2, 3], [4, 5]]),
    ],
)
def test_wrong_shape_or_type_scores_zero_even_without_an_error_code(name, value):
    parsed, target = perfect_case()
    parsed.values[name] = value  # errors[name] stays None: a lying stand-in
    assert field_rewards(parsed, target, Q)[name] == 0.0


def test_one_non_finite_keypoint_voids_the_whole_field():
    parsed, target = perfect_case()
    parsed.values["kpts2d"][3, 1] = np.nan  # containment alone would give 15/16
    parsed.values["kpts3d"][0, 0] = np.inf
    r = field_rewards(parsed, target, Q)
    assert r["kpts2d"] == 0.0 and r["kpts3d"] == 0.0 and r["bbox2d"] == 1.0


def test_end_to_end_through_the_parser(sample):
    """format_target -> parse_output -> rewards: quantization costs at most a little."""
    target = dict(sample, **CAMERA)
    parsed = parse_output(format_target(sample, Q))
    r = score_completion(parsed, target, Q)
    assert r.format == 1.0 and r.answer == 1.0 and r.description == 1.0
    assert r.fields["bbox2d"] > 0.97 and r.fields["bbox3d"] > 0.9
    assert r.fields["kpts2d"] >= 0.8 and r.fields["kpts3d"] >= 0.8
    assert 0.0 <= r.rpc <= 1.0  # the sample's 2D box is unrelated to this camera
    garbage = score_completion(parse_output("I cannot answer."), target, Q)
    assert garbage.fields == dict.fromkeys(GEOMETRIC_FIELDS, 0.0)
    assert garbage.rpc == garbage.format == garbage.seq == garbage.answer == 0.0


def test_bad_target_raises():
    parsed, target = perfect_case()
    with pytest.raises(ValueError, match=r"bbox2d.*\(4,\)"):
        field_rewards(parsed, dict(target, bbox2d=np.zeros(3)), Q)
    with pytest.raises(KeyError, match="bbox3d"):
        field_rewards(parsed, {"bbox2d": target["bbox2d"]}, Q)
    flat = dict(target, K=target["K"].reshape(-1), R=target["R"].reshape(-1))  # dataset rows
    assert rpc_reward(parsed, flat, Q) == rpc_reward(parsed, target, Q)
    with pytest.raises(ValueError, match=r"K.*\(3, 3\)"):
        rpc_reward(parsed, dict(target, K=np.eye(4)), Q)
    with pytest.raises(ValueError, match="quant_bins"):
        field_rewards(parsed, target, 1)


# ----------------------------------------------------------------------------- RPC
def test_rpc_closed_form_and_independent_of_gt_boxes():
    parsed, target = perfect_case()
    fp = parsed.values["bbox2d"].copy()
    w = fp[2] - fp[0]
    parsed.values["bbox2d"] = fp + np.array([w / 2, 0.0, w / 2, 0.0])  # half-width shift
    assert rpc_reward(parsed, target, Q) == pytest.approx(1 / 3)
    other = dict(target, bbox2d=np.array([0.0, 0.0, 1.0, 1.0]), bbox3d=np.full(6, 0.1))
    assert rpc_reward(parsed, other, Q) == pytest.approx(1 / 3)


def test_rpc_zero_when_box_behind_camera_or_invalid():
    parsed, target = perfect_case()
    assert rpc_reward(parsed, dict(target, t=np.array([0.0, 0.0, -2.5])), Q) == 0.0
    assert rpc_reward(parsed, dict(target, t=np.array([0.0, 0.0, 0.1])), Q) == 0.0  # inside
    inverted = parsed_of(bbox2d=parsed.values["bbox2d"], bbox3d=BOX_BINS[[3, 4, 5, 0, 1, 2]])
    assert rpc_reward(inverted, target, Q) == 0.0
    assert rpc_reward(parsed_of(bbox3d=BOX_BINS), target, Q) == 0.0  # no bbox2d
    assert rpc_reward(parsed_of(bbox2d=parsed.values["bbox2d"]), target, Q) == 0.0  # no bbox3d


# ----------------------------------------------------------------------------- semantic
@pytest.mark.parametrize(
    "pred, gt, want",
    [
        ("The Chair.", "chair", 1.0),
        ("  a   RED  chair ", "red chair", 1.0),
        ("T-shirt", "tshirt", 1.0),
        ("Ｃｈａｉｒ！", "chair", 1.0),  # full-width letters and punctuation (NFKC)
        ("chairs", "chair", 0.0),
        ("chair", "table", 0.0),
        ("theater", "ater", 0.0),  # articles only as whole words
        (None, "chair", 0.0),
        ("chair", None, 0.0),
    ],
)
def test_answer_reward(pred, gt, want):
    assert answer_reward(pred, gt) == want


def test_normalize_text_rule():
    assert normalize_text("The  quick, brown fox's TAIL!") == ["quick", "brown", "foxs", "tail"]


def test_description_reward_unigram_f1():
    # pred tokens [red, chair, with, four, legs], gt [red, wooden, chair]: overlap 2,
    # P = 2/5, R = 2/3, F1 = 2 * (2/5) * (2/3) / (2/5 + 2/3) = 1/2
    assert description_reward("A red chair with four legs.", "the red wooden chair") == 0.5
    # multiset overlap min(2, 2) = 2: P = 1, R = 2/3, F1 = 0.8 (a set overlap would give 0.4)
    assert description_reward("chair chair", "chair chair table") == pytest.approx(0.8)
    assert description_reward("same words", "Same words!") == 1.0
    assert description_reward("", "the") == 1.0  # both empty after normalization
    assert description_reward("", "chair") == 0.0
    assert description_reward(None, "chair") == 0.0
    assert description_reward("table", "chair") == 0.0


# ----------------------------------------------------------------------------- format, sequence
def test_format_reward():
    parsed, _ = perfect_case()
    assert format_reward(parsed) == 1.0
    parsed.errors["answer"], parsed.values["answer"] = "wrong_type", None
    assert format_reward(parsed) == pytest.approx(5 / 6)
    assert format_reward(parse_output("no json here")) == 0.0
    assert format_reward(parse_output('{"answer": "x", "bbox2d": [1, 2, 3]}')) == pytest.approx(
        1 / 6
    )


def test_sequence_reward():
    r = {"bbox2d": 1.0, "bbox3d": 0.0, "kpts2d": 0.5, "kpts3d": 0.5}
    assert sequence_reward(r, 1.0) == pytest.approx(0.6)
    assert sequence_reward(r, 0.5, format_weight=0.0) == pytest.approx(0.5)
    assert sequence_reward(r, 1.0, weights={"bbox2d": 3.0, "bbox3d": 1.0}) == pytest.approx(
        0.75 + 0.1
    )
    with pytest.raises(ValueError, match="lacks"):
        sequence_reward({"bbox2d": 1.0}, 1.0)
    with pytest.raises(ValueError, match="unknown"):
        sequence_reward(r, 1.0, weights={"answer": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        sequence_reward(r, 1.0, weights={"bbox2d": -1.0, "bbox3d": 2.0})


def test_score_batch_matches_loop_and_field_order():
    parsed, target = perfect_case()
    p_missing = parsed_of(**{k: v for k, v in parsed.values.items() if k != "kpts3d"})
    p_none = parse_output("")
    batch = [parsed, p_missing, p_none]
    out = score_batch(batch, [target] * 3, Q)
    assert out["per_field_rewards"].shape == (3, len(GEOMETRIC_FIELDS))
    for name in ("rpc", "seq", "format", "answer", "description"):
        assert out[name].shape == (3,)
    np.testing.assert_array_equal(out["per_field_rewards"][1], [1.0, 1.0, 1.0, 0.0])
    np.testing.assert_array_equal(out["per_field_rewards"][2], np.zeros(4))
    for i, p in enumerate(batch):
        r = score_completion(p, target, Q)
        assert out["seq"][i] == r.seq and out["rpc"][i] == r.rpc
        assert list(out["per_field_rewards"][i]) == [r.fields[k] for k in GEOMETRIC_FIELDS]
    with pytest.raises(ValueError, match="expected equal"):
        score_batch(batch, [target], Q)
    empty = score_batch([], [], Q)
    assert empty["per_field_rewards"].shape == (0, 4) and empty["seq"].shape == (0,)


# ----------------------------------------------------------------------------- never raises
_floats = st.floats(allow_nan=True, allow_infinity=True)  # includes +-1.8e308 and subnormals
_shaped = {
    "bbox2d": (4,),
    "bbox3d": (6,),
    "kpts2d": (16, 2),
    "kpts3d": (16, 3),
}


def _value(name: str):
    right_shape = hnp.arrays(np.float64, _shaped[name], elements=_floats)
    any_shape = hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
        elements=_floats,
    )
    near_box = hnp.arrays(np.float64, _shaped[name], elements=st.floats(-10, 300))
    odd = st.one_of(
        st.none(),
        st.text(max_size=5),
        st.lists(st.integers(min_value=-(2**1100), max_value=2**1100), max_size=6),
        st.lists(st.lists(st.integers(-5, 5), max_size=4), max_size=4),  # ragged
    )
    return st.one_of(right_shape, near_box, any_shape, odd)


@settings(max_examples=300, deadline=None)
@given(
    values=st.fixed_dictionaries({f: _value(f) for f in GEOMETRIC_FIELDS}),
    errors=st.fixed_dictionaries({f: st.sampled_from([None, None, "malformed"]) for f in FIELDS}),
    semantic=st.one_of(st.none(), st.text(max_size=20), st.integers()),
)
def test_rewards_never_raise_and_stay_in_unit_interval(values, errors, semantic):
    _, target = perfect_case()
    parsed = ParsedOutput(
        values=dict(values, answer=semantic, description=semantic),
        char_spans={f: None for f in FIELDS},
        errors=errors,
    )
    fields = field_rewards(parsed, target, Q)
    assert list(fields) == list(GEOMETRIC_FIELDS)
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in fields.values())
    assert 0.0 <= rpc_reward(parsed, target, Q) <= 1.0
    r = score_completion(parsed, target, Q)
    assert 0.0 <= r.seq <= 1.1 + 1e-12 and 0.0 <= r.format <= 1.0
    assert 0.0 <= r.answer <= 1.0 and 0.0 <= r.description <= 1.0
    for name in GEOMETRIC_FIELDS:
        if errors[name] is not None:
            assert fields[name] == 0.0


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=200))
def test_rewards_on_arbitrary_text_through_the_parser(text):
    _, target = perfect_case()
    out = score_batch([parse_output(text)], [target], Q)
    for v in out.values():
        assert np.all(np.isfinite(v)) and np.all(v >= 0)


@pytest.mark.parametrize("seed", range(1, 6))
def test_round_tripped_targets_score_high(seed):
    s = make_sample(seed)
    r = field_rewards(parse_output(format_target(s, Q)), s, Q)
    assert r["bbox2d"] > 0.97 and r["bbox3d"] > 0.9 and min(r.values()) >= 0.8
