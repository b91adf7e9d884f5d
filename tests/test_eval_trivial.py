"""Trivial predictors: parsable text through the same metric path; the collapse probe."""

from __future__ import annotations

import numpy as np
import pytest
from test_eval_metrics import Q, make_target

from pointvl.eval.metrics import per_sample_metrics
from pointvl.eval.trivial import (
    box_centre,
    centroid_mean_size,
    cloud_aabb,
    cloud_fps,
    probe_row,
    probes,
    train_mean,
    trivial_completions,
)
from pointvl.schema import dequantize_3d, parse_output


@pytest.fixture(scope="module")
def split():
    train = [make_target(s) for s in range(20)]
    test = [make_target(s) for s in range(100, 110)]
    rng = np.random.default_rng(0)
    points = [rng.uniform(t["bbox3d"][:3], t["bbox3d"][3:], (256, 3)) for t in test]
    return train, test, points


def test_all_predictors_write_parsable_text(split):
    train, test, points = split
    out = trivial_completions(train, test, Q, points)
    assert len(out) == 5
    for name, texts in out.items():
        assert len(texts) == len(test), name
        assert all(parse_output(t).ok for t in texts), name
        per = per_sample_metrics(texts, test, Q)
        assert per["parse_fail"].sum() == 0, name
    assert len(trivial_completions(train, test, Q)) == 2  # the cloud predictors need points


def test_train_mean_box_is_the_training_mean(split):
    train, test, _ = split
    text = train_mean(train, test[:1], Q)[0]
    box = dequantize_3d(parse_output(text).values["bbox3d"], Q)
    mean = np.mean([t["bbox3d"] for t in train], axis=0)
    np.testing.assert_allclose(box, mean, atol=0.5 / Q + 1e-12)


def test_centroid_box_follows_the_cloud(split):
    train, test, points = split
    shifted = [p + 0.05 for p in points]
    a = parse_output(centroid_mean_size(train, test[:1], Q, points[:1])[0]).values["bbox3d"]
    b = parse_output(centroid_mean_size(train, test[:1], Q, shifted[:1])[0]).values["bbox3d"]
    np.testing.assert_allclose(b - a, 5, atol=1)  # 0.05 of the unit cube = 5 bins
    with pytest.raises(ValueError, match="points"):
        centroid_mean_size(train, test, Q)


def test_box_centre_games_containment_but_not_pck(split):
    train, test, _ = split
    per = per_sample_metrics(box_centre(train, test, Q), test, Q)
    assert per["kpa3d"].mean() == 1.0  # every GT box here contains the origin
    assert np.nanmax(per["spread3d"]) == 0.0 and per["pck3d"].mean() < 0.5


def test_cloud_aabb_is_the_box_of_the_points(split):
    """A cloud filling its GT box gives (almost) the GT box: the IoU3D ceiling without learning."""
    train, test, points = split
    per = per_sample_metrics(cloud_aabb(train, test, Q, points), test, Q)
    assert per["iou3d"].min() > 0.85  # 256 uniform points nearly reach the box faces
    inner = [t["bbox3d"][:3] + 0.25 * (t["bbox3d"][3:] - t["bbox3d"][:3]) for t in test]
    half = [
        np.stack([lo, lo + 0.5 * (t["bbox3d"][3:] - t["bbox3d"][:3])]) for lo, t in zip(inner, test)
    ]
    per_half = per_sample_metrics(cloud_aabb(train, test, Q, half), test, Q)
    np.testing.assert_allclose(per_half["iou3d"], 1 / 8, atol=0.05)  # half size per axis
    assert per["kpa3d"].mean() > 0.9  # relative positions in [0, 1]^3 stay inside the box
    with pytest.raises(ValueError, match="points"):
        cloud_aabb(train, test, Q)


def test_cloud_fps_is_farthest_point_sampling_of_the_cloud(split):
    """Keypoints by FPS on the cloud: on a cloud holding the GT keypoints, set by the same rule,
    it returns them (PCK 1, Chamfer within quantization); the box is the cloud's AABB."""
    from pointvl.data.sampling import farthest_point_sampling

    train, test, points = split
    gt = [dict(t, kpts3d=p[farthest_point_sampling(p, 16)]) for t, p in zip(test, points)]
    per = per_sample_metrics(cloud_fps(train, gt, Q, points), gt, Q)
    assert per["pck3d"].min() == 1.0 and per["chamfer3d"].max() < 1.0 / Q
    aabb = per_sample_metrics(cloud_aabb(train, gt, Q, points), gt, Q)
    np.testing.assert_array_equal(per["iou3d"], aabb["iou3d"])
    with pytest.raises(ValueError, match="points"):
        cloud_fps(train, test, Q)


def test_probes_on_a_full_build_recover_every_target(smoke_data):
    """The paper's task: AABB and FPS of the input give the GT box and keypoints exactly."""
    out = probes(smoke_data, "test", n_boot=100)
    assert out["_meta"]["task"] == "full" and out["iou3d_cloud_aabb"]["n"] == 8
    for name in ("iou3d_cloud_aabb", "pck3d_cloud_fps@0.1", "pck3d_cloud_fps@0.05",
                 "cloud_fps_exact"):  # fmt: skip
        assert out[name]["mean"] == 1.0, name
    assert "kpts3d_occluded" not in out


def test_probe_row_on_a_view_row_measures_what_is_hidden():
    from pointvl.data.build import BuildDatasetConfig, InstanceSpec, instance_seed, make_instance

    cfg = BuildDatasetConfig(num_points=256, image_size=64, task="view")
    rows = [make_instance(InstanceSpec("test", i, c, instance_seed(0, "test", i)), cfg, Q)
            for i, c in enumerate(("chair", "car", "bookshelf", "mug"))]  # fmt: skip
    per = [probe_row(r, 256) for r in rows]
    for p, r in zip(per, rows):
        assert p["kpts3d_occluded"] == 1 - np.mean(r["kpts3d_visible"]) > 0
        assert p["cloud_fps_exact"] == 0.0 and p["pck3d_cloud_fps@0.05"] <= p["pck3d_cloud_fps@0.1"]
        assert 0.2 < p["iou3d_cloud_aabb"] < 1.0 and 0.2 < p["iou3d_cloud_aabb_object_frame"] <= 1.0
    assert np.mean([p["pck3d_cloud_fps@0.1"] for p in per]) < 0.95
