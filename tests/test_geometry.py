"""pointvl.geometry: IoU against a naive loop, Monte-Carlo and closed forms; projection
against a hand-computed camera; keypoint containment (Eq. 8); footprint (Eqs. 11-12)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pointvl.geometry import (
    aabb_corners,
    box_from_points,
    iou_2d,
    iou_3d,
    keypoint_containment,
    project_points,
    reprojected_footprint,
)

# A hand-written camera: f = 100 px, principal point (50, 40), identity rotation, the
# object 2 units in front of the camera.
K = np.array([[100.0, 0.0, 50.0], [0.0, 100.0, 40.0], [0.0, 0.0, 1.0]])
R_ID = np.eye(3)
T_FRONT = np.array([0.0, 0.0, 2.0])
UNIT_CUBE = np.array([-0.5, -0.5, -0.5, 0.5, 0.5, 0.5])


def random_boxes(rng: np.random.Generator, n: int, d: int, inverted_frac: float = 0.1):
    lo = rng.uniform(-1, 1, (n, d))
    hi = lo + rng.uniform(0.05, 1.5, (n, d))
    box = np.concatenate([lo, hi], axis=-1)
    flip = rng.random(n) < inverted_frac  # swap lo / hi on one axis
    box[flip, 0], box[flip, d] = box[flip, d].copy(), box[flip, 0].copy()
    return box


def naive_iou(a, b, d):
    """Plain-python IoU, one box pair at a time."""
    inter, vol_a, vol_b = 1.0, 1.0, 1.0
    for k in range(d):
        vol_a *= max(0.0, a[d + k] - a[k])
        vol_b *= max(0.0, b[d + k] - b[k])
        inter *= max(0.0, min(a[d + k], b[d + k]) - max(a[k], b[k]))
    union = vol_a + vol_b - inter
    return inter / union if union > 0 else 0.0


# ----------------------------------------------------------------------------- IoU
@pytest.mark.parametrize("d, fn", [(2, iou_2d), (3, iou_3d)])
def test_iou_matches_naive_loop(d, fn):
    rng = np.random.default_rng(d)
    a, b = random_boxes(rng, 2000, d), random_boxes(rng, 2000, d)
    got = fn(a, b)
    want = np.array([naive_iou(x, y, d) for x, y in zip(a, b)])
    assert got.shape == (2000,)
    assert (want > 0).sum() > 200 and (want == 0).sum() > 200  # both cases are exercised
    np.testing.assert_allclose(got, want, atol=1e-12)


@pytest.mark.parametrize(
    "a, b",
    [
        ([0.0, 0.0, 0.0, 1.0, 1.0, 1.0], [0.5, 0.2, -0.3, 1.4, 1.1, 0.6]),
        ([-0.3, -0.2, -0.1, 0.2, 0.4, 0.3], [-0.1, -0.4, 0.0, 0.3, 0.1, 0.5]),
        ([0.0, 0.0, 0.0, 2.0, 0.5, 1.0], [0.2, 0.1, 0.2, 1.0, 0.4, 0.9]),
    ],
)
def test_iou_3d_matches_monte_carlo(a, b):
    a, b = np.array(a), np.array(b)
    lo, hi = np.minimum(a[:3], b[:3]), np.maximum(a[3:], b[3:])
    x = np.random.default_rng(0).uniform(lo, hi, (200_000, 3))
    in_a = np.all((x >= a[:3]) & (x <= a[3:]), axis=1)
    in_b = np.all((x >= b[:3]) & (x <= b[3:]), axis=1)
    mc = (in_a & in_b).sum() / (in_a | in_b).sum()
    assert abs(float(iou_3d(a, b)) - mc) < 0.01


def test_iou_2d_matches_monte_carlo():
    a, b = np.array([10.0, 20.0, 60.0, 50.0]), np.array([30.0, 5.0, 90.0, 40.0])
    x = np.random.default_rng(1).uniform([10, 5], [90, 50], (200_000, 2))
    in_a = np.all((x >= a[:2]) & (x <= a[2:]), axis=1)
    in_b = np.all((x >= b[:2]) & (x <= b[2:]), axis=1)
    assert abs(float(iou_2d(a, b)) - (in_a & in_b).sum() / (in_a | in_b).sum()) < 0.01


def test_iou_closed_forms():
    a3 = np.array([0.0, 0.0, 0.0, 2.0, 3.0, 4.0])
    assert float(iou_3d(a3, a3)) == 1.0
    # disjoint, and touching along a face: 0
    assert float(iou_3d(a3, a3 + np.array([5, 0, 0, 5, 0, 0]))) == 0.0
    assert float(iou_3d(a3, a3 + np.array([2, 0, 0, 2, 0, 0]))) == 0.0
    # nested: |inner| / |outer| = (1 * 1 * 2) / (2 * 3 * 4) = 1/12
    inner = np.array([0.5, 1.0, 1.0, 1.5, 2.0, 3.0])
    assert float(iou_3d(inner, a3)) == pytest.approx(1 / 12, abs=1e-12)
    # half overlap along x: inter = 1*3*4 = 12, union = 24 + 24 - 12 = 36
    assert float(iou_3d(a3, a3 + np.array([1, 0, 0, 1, 0, 0]))) == pytest.approx(1 / 3)
    a2 = np.array([0.0, 0.0, 4.0, 2.0])
    assert float(iou_2d(a2, a2)) == 1.0
    assert float(iou_2d(a2, [1.0, 0.5, 3.0, 1.5])) == pytest.approx(2 / 8)  # nested
    assert float(iou_2d(a2, [4.0, 0.0, 6.0, 2.0])) == 0.0  # shared edge
    assert float(iou_2d(a2, [2.0, 1.0, 6.0, 3.0])) == pytest.approx(2 / (8 + 8 - 2))


def test_iou_degenerate_inverted_nonfinite_give_zero():
    good2, good3 = np.array([0.0, 0.0, 1.0, 1.0]), UNIT_CUBE
    bad2 = [
        [0.0, 0.0, 0.0, 1.0],  # zero width
        [0.5, 0.5, 0.5, 0.5],  # a point
        [1.0, 1.0, 0.0, 0.0],  # inverted on both axes (positive "area" if unclipped)
        [1.0, 0.0, 0.0, 1.0],  # inverted on x
        [np.nan, 0.0, 1.0, 1.0],
        [0.0, 0.0, np.inf, 1.0],
        [-np.inf, -np.inf, np.inf, np.inf],
    ]
    for box in bad2:
        for pair in ((box, good2), (good2, box), (box, box)):
            v = iou_2d(*pair)
            assert np.isfinite(v) and float(v) == 0.0, (box, float(v))
    bad3 = [
        [0.0, 0.0, 0.0, 1.0, 1.0, 0.0],  # flat
        [0.5, 0.5, 0.5, -0.5, -0.5, -0.5],  # inverted (a sorted copy of UNIT_CUBE)
        [0.0, 0.0, 0.0, 1.0, np.nan, 1.0],
    ]
    for box in bad3:
        for pair in ((box, good3), (good3, box), (box, box)):
            assert float(iou_3d(*pair)) == 0.0
    out = iou_3d(np.full((5, 6), np.nan), good3)
    assert out.shape == (5,) and not np.isnan(out).any()


def test_iou_huge_and_tiny_coordinates_stay_exact():
    for s in (1e-300, 1e-8, 1e8, 1e300):
        box = np.array([-1.0, -2.0, -3.0, 1.0, 2.0, 3.0]) * s
        assert float(iou_3d(box, box)) == 1.0
        half = box.copy()
        half[3] = 0.0  # half of the box along x
        assert float(iou_3d(half, box)) == pytest.approx(0.5, rel=1e-12)
    big = np.array([-1.7e308, -1.7e308, 1.7e308, 1.7e308])
    assert float(iou_2d(big, big)) == 1.0
    assert 0.0 <= float(iou_2d(big, [0.0, 0.0, 1.0, 1.0])) <= 1.0


@pytest.mark.parametrize("d, fn", [(2, iou_2d), (3, iou_3d)])
def test_iou_invariances(d, fn):
    rng = np.random.default_rng(10 + d)
    a, b = random_boxes(rng, 200, d, 0.0), random_boxes(rng, 200, d, 0.0)
    base = fn(a, b)
    assert np.array_equal(base, fn(b, a))  # symmetry, exact
    shift = np.tile(rng.uniform(-50, 50, (200, d)), 2)  # same shift for both boxes
    np.testing.assert_allclose(fn(a + shift, b + shift), base, atol=1e-9)
    scale = np.tile(rng.uniform(0.1, 10, (200, d)), 2)  # per-axis positive scaling
    np.testing.assert_allclose(fn(a * scale, b * scale), base, atol=1e-9)
    assert np.all((base >= 0) & (base <= 1))


def test_iou_broadcasts_and_accepts_torch():
    rng = np.random.default_rng(3)
    a, b = random_boxes(rng, 4, 3, 0.0), random_boxes(rng, 5, 3, 0.0)
    table = iou_3d(a[:, None, :], b[None, :, :])  # (4, 5)
    assert table.shape == (4, 5)
    assert table[2, 3] == pytest.approx(float(iou_3d(a[2], b[3])))
    np.testing.assert_allclose(iou_3d(torch.tensor(a), torch.tensor(a)), np.ones(4))
    np.testing.assert_allclose(iou_2d(torch.tensor([[0.0, 0, 2, 2]]), [[0.0, 0, 1, 2]]), [0.5])


def test_iou_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        iou_2d(np.zeros(6), np.zeros(4))
    with pytest.raises(ValueError, match=r"\(\.\.\., 6\)"):
        iou_3d(np.zeros((2, 4)), np.zeros((2, 6)))
    with pytest.raises(ValueError, match="broadcast"):
        iou_3d(np.zeros((2, 6)), np.zeros((3, 6)))
    with pytest.raises(ValueError, match="numeric"):
        iou_2d(["a", "b", "c", "d"], np.zeros(4))


# ----------------------------------------------------------------------------- corners, boxes
def test_aabb_corners_bit_order_and_round_trip():
    box = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    c = aabb_corners(box)
    assert c.shape == (8, 3)
    np.testing.assert_array_equal(c[0], [1, 2, 3])
    np.testing.assert_array_equal(c[1], [4, 2, 3])  # j & 1 -> xmax
    np.testing.assert_array_equal(c[2], [1, 5, 3])  # j & 2 -> ymax
    np.testing.assert_array_equal(c[4], [1, 2, 6])  # j & 4 -> zmax
    np.testing.assert_array_equal(c[7], [4, 5, 6])
    boxes = random_boxes(np.random.default_rng(0), 7, 3, 0.0).reshape(7, 1, 6)
    corners = aabb_corners(boxes)  # (7, 1, 8, 3)
    assert corners.shape == (7, 1, 8, 3)
    np.testing.assert_array_equal(box_from_points(corners), boxes)
    assert len({tuple(p) for p in c}) == 8
    with pytest.raises(ValueError, match=r"\(\.\.\., 6\)"):
        aabb_corners(np.zeros(4))


def test_box_from_points():
    pts = np.array([[3.0, -1.0], [0.0, 2.0], [1.0, 1.0]])
    np.testing.assert_array_equal(box_from_points(pts), [0, -1, 3, 2])
    with pytest.raises(ValueError, match="M >= 1"):
        box_from_points(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="2 or 3"):
        box_from_points(np.zeros((5, 4)))


# ----------------------------------------------------------------------------- containment
def test_keypoint_containment_closed_forms():
    box2 = [0.0, 0.0, 10.0, 5.0]
    pts = [[1, 1], [10, 5], [0, 0], [10.0001, 1], [5, -1e-9], [np.nan, 1], [3, 3], [20, 20]]
    # inside: (1,1), (10,5) and (0,0) on the boundary (inclusive), (3,3) -> 4 of 8
    assert float(keypoint_containment(pts, box2)) == 0.5
    box3 = UNIT_CUBE
    corners = aabb_corners(box3)
    assert float(keypoint_containment(corners, box3)) == 1.0  # every corner is on the boundary
    assert float(keypoint_containment(corners * 1.01, box3)) == 0.0
    assert float(keypoint_containment(np.zeros((0, 3)), box3)) == 0.0  # empty
    assert float(keypoint_containment(corners, [0, 0, 0, 1, 1, np.inf])) == 0.0  # bad box
    assert float(keypoint_containment(corners, box3[[3, 4, 5, 0, 1, 2]])) == 0.0  # inverted
    # a degenerate box still contains the points lying exactly on it
    assert float(keypoint_containment([[1.0, 2.0], [1.0, 3.0]], [1.0, 2.0, 1.0, 2.0])) == 0.5


def test_keypoint_containment_batched_matches_loop():
    rng = np.random.default_rng(5)
    pts = rng.uniform(-1, 1, (4, 6, 16, 3))  # (B, G, M, 3)
    boxes = random_boxes(rng, 6, 3, 0.2)  # (G, 6) broadcast over B
    got = keypoint_containment(pts, boxes)
    assert got.shape == (4, 6)
    for i in range(4):
        for j in range(6):
            lo, hi = boxes[j, :3], boxes[j, 3:]
            want = np.mean([np.all((p >= lo) & (p <= hi)) for p in pts[i, j]])
            assert got[i, j] == want


def test_keypoint_containment_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\(\.\.\., 6\) for 3D"):
        keypoint_containment(np.zeros((4, 3)), np.zeros(4))
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\) for 2D"):
        keypoint_containment(np.zeros((4, 2)), np.zeros(6))
    with pytest.raises(ValueError, match="M, 2 or 3"):
        keypoint_containment(np.zeros(3), np.zeros(6))
    with pytest.raises(ValueError, match="broadcast"):
        keypoint_containment(np.zeros((2, 4, 3)), np.zeros((3, 6)))


@settings(max_examples=200, deadline=None)
@given(
    pts=hnp.arrays(
        np.float64,
        st.tuples(st.integers(0, 20), st.sampled_from([2, 3])),
        elements=st.floats(allow_nan=True, allow_infinity=True),
    ),
    box=hnp.arrays(np.float64, 6, elements=st.floats(allow_nan=True, allow_infinity=True)),
)
def test_keypoint_containment_in_unit_interval(pts, box):
    box = box[: 2 * pts.shape[1]]
    v = float(keypoint_containment(pts, box))
    assert 0.0 <= v <= 1.0
    if pts.shape[0]:  # it is a fraction of M
        assert abs(v * pts.shape[0] - round(v * pts.shape[0])) < 1e-9


# ----------------------------------------------------------------------------- projection
def test_project_points_hand_computed():
    X = np.array([[0.5, -0.2, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, -2.0], [0.0, 0.0, -3.0]])
    uv, valid = project_points(X, K, R_ID, T_FRONT)
    # (0.5, -0.2, 0) -> X_c = (0.5, -0.2, 2): u = 100 * 0.5 / 2 + 50 = 75,
    #                                         v = 100 * -0.2 / 2 + 40 = 30
    np.testing.assert_allclose(uv[0], [75.0, 30.0])
    np.testing.assert_allclose(uv[1], [50.0, 40.0])  # the origin lands on (cx, cy)
    # z_c = 0 (in the camera plane) and z_c = -1 (behind): invalid, uv finite (zeros)
    assert valid.tolist() == [True, True, False, False]
    assert np.all(np.isfinite(uv)) and np.all(uv[2:] == 0)


def test_project_points_rotated_camera_hand_computed():
    # R: rotation of +90 degrees about y, so x_c = z, y_c = y, z_c = -x; t = 0.
    R = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    X = np.array([[-3.0, 1.0, 0.5], [3.0, 1.0, 0.5]])
    uv, valid = project_points(X, K, R, np.zeros(3))
    # X_c = (0.5, 1, 3): u = 100 * 0.5 / 3 + 50 = 66.667, v = 100 * 1 / 3 + 40 = 73.333
    np.testing.assert_allclose(uv[0], [50 + 50 / 3, 40 + 100 / 3])
    assert valid.tolist() == [True, False]  # (3, 1, 0.5) has z_c = -3: behind


def test_project_points_batched_matches_loop():
    rng = np.random.default_rng(7)
    X = rng.uniform(-1, 1, (3, 5, 3))  # (B, N, 3)
    uv, valid = project_points(X, K, R_ID, T_FRONT)
    assert uv.shape == (3, 5, 2) and valid.shape == (3, 5) and valid.all()
    for b in range(3):
        for n in range(5):
            x, y, z = X[b, n] + T_FRONT
            np.testing.assert_allclose(uv[b, n], [100 * x / z + 50, 100 * y / z + 40])


def test_project_points_bad_shapes_raise():
    X = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"K must have shape \(3, 3\)"):
        project_points(X, np.eye(4), R_ID, T_FRONT)
    with pytest.raises(ValueError, match=r"R must have shape \(3, 3\)"):
        project_points(X, K, np.eye(3)[:2], T_FRONT)
    with pytest.raises(ValueError, match=r"t must have shape \(3,\)"):
        project_points(X, K, R_ID, T_FRONT[:, None])
    with pytest.raises(ValueError, match=r"\(\.\.\., N, 3\)"):
        project_points(np.zeros((4, 2)), K, R_ID, T_FRONT)


# ----------------------------------------------------------------------------- footprint
def test_reprojected_footprint_head_on_hand_computed():
    box2d, valid = reprojected_footprint(UNIT_CUBE, K, R_ID, T_FRONT)
    # Seen head-on, the near face (z_c = 2 - 0.5 = 1.5) bounds the footprint:
    # u = 50 +- 100 * 0.5 / 1.5 = 50 +- 33.333, v = 40 +- 33.333.
    assert bool(valid)
    np.testing.assert_allclose(box2d, [50 - 100 / 3, 40 - 100 / 3, 50 + 100 / 3, 40 + 100 / 3])
    # a flat square at z = 0 (z_c = 2): +-0.5 -> +-25 px
    flat = np.array([-0.5, -0.5, 0.0, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(reprojected_footprint(flat, K, R_ID, T_FRONT)[0], [25, 15, 75, 65])


def test_reprojected_footprint_invalid_when_a_corner_is_behind():
    # the camera at z = -0.2 inside the box's z range: near corners are behind it
    box2d, valid = reprojected_footprint(UNIT_CUBE, K, R_ID, np.array([0.0, 0.0, 0.2]))
    assert not bool(valid) and np.all(box2d == 0)
    _, valid = reprojected_footprint(UNIT_CUBE, K, R_ID, -T_FRONT)  # all behind
    assert not bool(valid)
    boxes = np.stack([UNIT_CUBE, UNIT_CUBE + 3.0, np.full(6, np.nan)])  # (3, 6)
    box2d, valid = reprojected_footprint(boxes, K, R_ID, T_FRONT)
    assert box2d.shape == (3, 4) and valid.tolist() == [True, True, False]
    assert np.all(np.isfinite(box2d))


def test_reprojected_footprint_matches_corner_loop_under_rotation():
    rng = np.random.default_rng(11)
    a = 0.4
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    t = np.array([0.1, -0.2, 3.0])
    box = random_boxes(rng, 1, 3, 0.0)[0] * 0.5
    box2d, valid = reprojected_footprint(box, K, R, t)
    uv = []
    for c in aabb_corners(box):
        p = K @ (R @ c + t)
        uv.append(p[:2] / p[2])
    uv = np.array(uv)
    assert bool(valid)
    np.testing.assert_allclose(box2d, np.r_[uv.min(0), uv.max(0)])
