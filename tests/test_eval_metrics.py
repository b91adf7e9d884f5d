"""Evaluation metrics: perfect = 1, garbage = 0, collapse detected, QA split, naive loops."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_sample
from pointvl.eval.metrics import chamfer, evaluate, pck, per_sample_metrics, spread_ratio
from pointvl.geometry import reprojected_footprint
from pointvl.schema import dequantize_3d, format_target, quantize_3d

Q = 100


def make_target(seed: int, question_type: str | None = None) -> dict:
    """A target whose 3D values sit on bin centres and whose 2D box is the GT footprint."""
    t = make_sample(seed)
    t["bbox3d"] = dequantize_3d(quantize_3d(t["bbox3d"], Q), Q)
    t["kpts3d"] = dequantize_3d(quantize_3d(t["kpts3d"], Q), Q)
    t["K"] = np.array([[200.0, 0, 128], [0, 200.0, 128], [0, 0, 1]])
    t["R"] = np.eye(3)
    t["t"] = np.array([0.0, 0.0, 2.5])
    box2d, ok = reprojected_footprint(t["bbox3d"], t["K"], t["R"], t["t"])
    assert ok
    t["bbox2d"] = np.rint(box2d)
    lo, hi = t["bbox2d"][:2], t["bbox2d"][2:]
    t["kpts2d"] = np.rint(np.random.default_rng(seed).uniform(lo, hi, (16, 2)))
    if question_type:
        t["question_type"] = question_type
    return t


@pytest.fixture(scope="module")
def targets() -> list[dict]:
    return [make_target(s, ["category_mc", "attribute"][s % 2]) for s in range(8)]


def test_perfect_predictions_score_one(targets):
    texts = [format_target(t, Q) for t in targets]
    per = per_sample_metrics(texts, targets, Q)
    for name in ("iou2d", "iou3d", "kpa2d", "kpa3d", "qa_acc", "pck2d", "pck3d"):
        np.testing.assert_allclose(per[name], 1.0, err_msg=name)
    np.testing.assert_allclose(per["spread3d"], 1.0)
    np.testing.assert_allclose(per["chamfer3d"], 0.0, atol=1e-12)
    np.testing.assert_allclose(per["parse_fail"], 0.0)
    assert per["rpc"].min() > 0.95  # footprint rounded to pixels
    res = evaluate(texts, targets, Q, seed=0, n_boot=200)
    for name in ("iou3d", "kpa3d", "qa_acc", "qa_acc/category_mc", "qa_acc/attribute",
                 "bleu1", "bleu4", "rouge1", "rougeL"):  # fmt: skip
        assert res[name]["mean"] == pytest.approx(1.0), name
        assert res[name]["lo"] == pytest.approx(1.0), name
    assert res["parse_fail"]["mean"] == 0.0


@pytest.mark.parametrize("garbage", ["", "I cannot tell.", "{]", '{"answer": 3}', "```json\n{"])
def test_garbage_scores_zero_with_parse_failure(targets, garbage):
    texts = [garbage] * len(targets)
    res = evaluate(texts, targets, Q, seed=0, n_boot=100)
    for name in ("iou2d", "iou3d", "kpa2d", "kpa3d", "rpc", "qa_acc", "pck2d", "pck3d",
                 "bleu1", "bleu4", "rouge1", "rouge2", "rougeL"):  # fmt: skip
        assert res[name]["mean"] == 0.0, name
    assert res["parse_fail"]["mean"] == 1.0
    assert res["chamfer3d"]["mean"] == 1.0  # failures take the worst (capped) value
    assert res["spread3d"]["n"] == 0 and np.isnan(res["spread3d"]["mean"])


def test_one_broken_field_zeroes_only_that_field(targets):
    t = targets[0]
    obj = json.loads(format_target(t, Q))
    obj["kpts3d"] = obj["kpts3d"][:15]  # 15 of 16 keypoints: wrong shape
    per = per_sample_metrics([json.dumps(obj)], [t], Q)
    assert per["kpa3d"][0] == 0.0 and per["pck3d"][0] == 0.0
    assert per["iou3d"][0] == pytest.approx(1.0) and per["kpa2d"][0] == 1.0
    assert per["parse_fail"][0] == 1.0 and per["parse_fail/kpts3d"][0] == 1.0
    assert per["parse_fail/bbox3d"][0] == 0.0


def test_collapse_detected_while_containment_is_perfect(targets):
    texts = []
    for t in targets:
        centre = 0.5 * (t["bbox3d"][:3] + t["bbox3d"][3:])
        texts.append(format_target({**t, "kpts3d": np.repeat(centre[None], 16, 0)}, Q))
    per = per_sample_metrics(texts, targets, Q)
    np.testing.assert_allclose(per["kpa3d"], 1.0)  # containment is fooled
    assert per["spread3d"].max() < 0.05  # ... the spread is not
    np.testing.assert_allclose(per["collapsed3d"], 1.0)
    assert per["pck3d"].mean() < 0.5
    assert per["chamfer3d"].mean() > 0.1


def test_qa_accuracy_normalized_and_split_by_type(targets):
    texts = []
    for i, t in enumerate(targets):
        ans = f"  The {t['answer'].upper()}. " if i < 4 else "sofa bed"
        texts.append(format_target({**t, "answer": ans}, Q))
    per = per_sample_metrics(texts, targets, Q)
    np.testing.assert_array_equal(per["qa_acc"], [1, 1, 1, 1, 0, 0, 0, 0])
    mc, attr = per["qa_acc/category_mc"], per["qa_acc/attribute"]
    np.testing.assert_array_equal(np.isnan(mc), [i % 2 == 1 for i in range(8)])
    assert np.nanmean(mc) == 0.5 and np.nanmean(attr) == 0.5
    res = evaluate(texts, targets, Q, n_boot=100, language=False)
    assert res["qa_acc/category_mc"]["n"] == 4 and res["qa_acc"]["n"] == 8


def _naive_chamfer(p, g):
    a = np.mean([min(np.linalg.norm(x - y) for y in g) for x in p])
    b = np.mean([min(np.linalg.norm(x - y) for x in p) for y in g])
    return 0.5 * (a + b)


def test_keypoint_set_metrics_against_naive_loops_and_invariances():
    rng = np.random.default_rng(0)
    p, g = rng.normal(size=(7, 3)), rng.normal(size=(16, 3))
    assert chamfer(p, g) == pytest.approx(_naive_chamfer(p, g))
    assert chamfer(p[::-1], g[rng.permutation(16)]) == pytest.approx(chamfer(p, g))
    assert chamfer(g, g) == 0.0 and chamfer(p + 5, g + 5) == pytest.approx(chamfer(p, g))
    r = 0.7
    naive = np.mean([any(np.linalg.norm(x - y) <= r for x in p) for y in g])
    assert pck(p, g, r) == pytest.approx(naive)
    assert spread_ratio(2 * g, g) == pytest.approx(2.0)
    assert spread_ratio(np.zeros((16, 3)), g) == 0.0
    assert np.isnan(spread_ratio(p, np.zeros((4, 3))))
    with pytest.raises(ValueError, match=r"\(M', D\)"):
        chamfer(p, g[:, :2])


def test_evaluate_deterministic_and_ci_brackets_mean(targets):
    rng = np.random.default_rng(1)
    texts = []
    for t in targets:
        noisy = {**t, "bbox3d": t["bbox3d"] + rng.normal(0, 0.05, 6)}
        texts.append(format_target(noisy, Q))
    a = evaluate(texts, targets, Q, seed=3, n_boot=200)
    b = evaluate(texts, targets, Q, seed=3, n_boot=200)
    assert a == b
    for name, v in a.items():
        if v["n"]:
            assert v["lo"] - 1e-12 <= v["mean"] <= v["hi"] + 1e-12, name
    assert 0.0 < a["iou3d"]["mean"] < 1.0 and a["iou3d"]["lo"] < a["iou3d"]["hi"]


def test_length_mismatch_raises(targets):
    with pytest.raises(ValueError, match="texts"):
        per_sample_metrics(["x"], targets, Q)
