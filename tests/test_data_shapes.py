"""Procedural meshes, Poisson-disk sampling, FPS keypoints and cameras (pointvl.data)."""

from __future__ import annotations

import math

import numpy as np
import open3d as o3d
import pytest

from pointvl.data import shapes
from pointvl.data.cameras import AZIMUTH_RANGES, look_at, sample_camera, view_side
from pointvl.data.sampling import farthest_point_sampling, sample_points
from pointvl.data.shapes import CATEGORIES, box, make_shape
from pointvl.geometry import project_points


def _signed_volume(v, f):
    return np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6.0


def test_at_least_twelve_categories():
    assert len(CATEGORIES) >= 12 and len(set(CATEGORIES)) == len(CATEGORIES)


@pytest.mark.parametrize("category", CATEGORIES)
def test_family_is_normalized_closed_and_seeded(category):
    m = make_shape(category, np.random.default_rng(7))
    lo, hi = m.vertices.min(0), m.vertices.max(0)
    assert np.linalg.norm(hi - lo) == pytest.approx(1.0, abs=1e-9)  # unit diagonal
    np.testing.assert_allclose((lo + hi) / 2, 0.0, atol=1e-12)  # centred
    assert m.part_ids.shape == (len(m.triangles),) and m.part_ids.max() < len(m.part_names)
    assert len(m.part_counts) == len(m.part_names) and min(m.part_counts) >= 1
    # every part is a closed surface wound outwards: each edge used by exactly two faces
    for pid in range(len(m.part_names)):
        f = m.triangles[m.part_ids == pid]
        edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1)
        _, counts = np.unique(edges, axis=0, return_counts=True)
        assert np.all(counts % 2 == 0), f"{category}/{m.part_names[pid]} has open edges"
    assert _signed_volume(m.vertices, m.triangles) > 0
    again = make_shape(category, np.random.default_rng(7))
    np.testing.assert_array_equal(m.vertices, again.vertices)
    other = make_shape(category, np.random.default_rng(8))
    assert other.vertices.shape != m.vertices.shape or not np.allclose(other.vertices, m.vertices)


def test_box_winding_is_outward():
    v, f = box((0, 0, 0), (1, 2, 3))
    assert _signed_volume(v, f) == pytest.approx(6.0)
    normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    centres = v[f].mean(1)
    assert np.all(np.einsum("ij,ij->i", normals, centres) > 0)


def test_unknown_category_raises():
    with pytest.raises(ValueError, match="expected one of"):
        make_shape("spaceship", np.random.default_rng(0))


def test_poisson_points_lie_on_surface_with_outward_normals():
    mesh = make_shape("cabinet", np.random.default_rng(1))
    pts = sample_points(mesh, 512, seed=3)
    assert pts.shape == (512, 6) and pts.dtype == np.float32
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(mesh.vertices.astype(np.float32)),
        o3d.core.Tensor(mesh.triangles.astype(np.uint32)),
    )
    dist = scene.compute_distance(o3d.core.Tensor(pts[:, :3])).numpy()
    assert dist.max() < 1e-4
    np.testing.assert_allclose(np.linalg.norm(pts[:, 3:], axis=1), 1.0, atol=1e-5)
    # a cabinet is nearly convex: KNN normals must point away from the centre (oriented)
    outward = np.einsum("ij,ij->i", pts[:, 3:], pts[:, :3]) > 0
    assert outward.mean() > 0.95
    # same seed -> identical cloud; another seed -> another cloud
    np.testing.assert_array_equal(pts, sample_points(mesh, 512, seed=3))
    assert not np.array_equal(pts, sample_points(mesh, 512, seed=4))


@pytest.mark.parametrize("category", ["chair", "mug", "car"])
def test_poisson_points_are_evenly_spread(category):
    """Poisson-disk points keep a larger spacing than uniform random ones.

    (Parts thinner than the disk radius, e.g. bookshelf panels, put the two faces' points
    within one thickness of each other, so the median nearest-neighbour distance is not a
    fair measure there; these families have thick parts.)
    """
    mesh = make_shape(category, np.random.default_rng(2))
    pts = sample_points(mesh, 400, seed=0)[:, :3]
    om = shapes_to_o3d(mesh)
    rnd = np.asarray(om.sample_points_uniformly(400).points)

    def nn(x):
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)
        np.fill_diagonal(d, np.inf)
        return d.min(1)

    assert np.median(nn(pts)) > 1.3 * np.median(nn(rnd))
    assert np.percentile(nn(pts), 5) > 1.3 * np.percentile(nn(rnd), 5)


def shapes_to_o3d(mesh):
    from pointvl.data.sampling import to_o3d

    return to_o3d(mesh)


def test_fps_matches_naive_loop():
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(300, 3))
    idx = farthest_point_sampling(xyz, 16)
    assert len(set(idx.tolist())) == 16
    # naive: each next point maximizes the distance to the already chosen set
    chosen = [int(np.argmax(np.linalg.norm(xyz - xyz.mean(0), axis=1)))]
    while len(chosen) < 16:
        best = max(
            range(len(xyz)), key=lambda i: min(np.linalg.norm(xyz[i] - xyz[j]) for j in chosen)
        )
        chosen.append(best)
    assert idx.tolist() == chosen
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        farthest_point_sampling(xyz[:, :2], 4)


@pytest.mark.parametrize("category", ["car", "chair", "mug", "airplane"])
def test_camera_is_calibrated_and_category_adaptive(category):
    rng = np.random.default_rng(5)
    for _ in range(20):
        cam = sample_camera(category, rng, 96)
        R = cam.R
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
        assert 10.0 <= cam.elevation_deg <= 45.0
        assert any(lo <= cam.azimuth_deg <= hi for lo, hi in AZIMUTH_RANGES[category])
        # the origin projects to the principal point, and the whole bounding sphere is in view
        uv, ok = project_points(np.zeros((1, 3)), cam.K, R, cam.t)
        np.testing.assert_allclose(uv[0], [48.0, 48.0], atol=1e-9)
        sphere = rng.normal(size=(500, 3))
        sphere = 0.5 * sphere / np.linalg.norm(sphere, axis=1, keepdims=True)
        uv, ok = project_points(sphere, cam.K, R, cam.t)
        assert ok.all() and uv.min() > 0 and uv.max() < 96
        # the camera centre sits at the sampled elevation
        c = cam.center
        assert math.degrees(math.asin(c[1] / np.linalg.norm(c))) == pytest.approx(cam.elevation_deg)


def test_look_at_opencv_axes():
    R, t = look_at(np.array([0.0, 0.0, 3.0]))  # in front of the object, looking at -z
    # world +x appears to the right (camera x), world +y up (camera -y)
    np.testing.assert_allclose(R @ [1, 0, 0], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(R @ [0, 1, 0], [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(R @ [0, 0, 0] + t, [0, 0, 3], atol=1e-12)


def test_view_side():
    assert [view_side(a) for a in (0, 90, 180, -90, 350, 44, 46)] == [
        "front", "left", "back", "right", "front", "front", "left"
    ]  # fmt: skip


def test_car_azimuth_is_side_view():
    assert all(30 <= abs(lo) and abs(hi) <= 150 for lo, hi in AZIMUTH_RANGES["car"])
    assert shapes.SYMMETRIC <= set(CATEGORIES)
