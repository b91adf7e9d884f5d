"""Rendering and annotation: the camera, the mask, the depth and the labels agree."""

from __future__ import annotations

import numpy as np
import pytest

from pointvl.data import annotate
from pointvl.data.cameras import Camera, intrinsics, look_at, sample_camera
from pointvl.data.render import Material, RaycastRenderer, identity_appearance
from pointvl.data.sampling import farthest_point_sampling, sample_points
from pointvl.data.shapes import CATEGORIES, PartMesh, box, make_shape, normalize
from pointvl.geometry import (
    box_from_points,
    keypoint_containment,
    project_points,
    reprojected_footprint,
)

SIZE = 96


def _render(category, seed, size=SIZE):
    rng = np.random.default_rng(seed)
    mesh = make_shape(category, rng)
    cam = sample_camera(category, rng, size)
    return mesh, cam, RaycastRenderer().render(mesh, cam, Material.for_mesh(mesh, rng))


def _cuboid(size=(0.6, 0.5, 0.4)) -> PartMesh:
    v, f = box((0, 0, 0), size)
    mesh, _, _ = normalize(PartMesh(v, f, np.zeros(len(f), np.int64), ["box"], "cabinet", {}, [1]))
    return mesh


@pytest.mark.parametrize("category", CATEGORIES)
def test_mask_box_matches_projected_mesh(category):
    """Calibration: the silhouette's box equals the box of the projected mesh (< 1 px)."""
    mesh, cam, out = _render(category, 11)
    assert out.rgb.shape == (SIZE, SIZE, 3) and out.rgb.dtype == np.uint8
    assert out.mask.any() and not out.mask[0].any() and not out.mask[:, 0].any()  # not cut
    uv, ok = project_points(mesh.vertices, cam.K, cam.R, cam.t)
    assert ok.all()
    proj_box = box_from_points(uv)
    # pixel (i, j) is foreground iff its centre is covered: < 1 px off at sharp corners
    np.testing.assert_allclose(annotate.mask_box(out.mask), proj_box, atol=1.0)


@pytest.mark.parametrize("seed", range(6))
def test_cuboid_footprint_equals_mask_box(seed):
    """For a cuboid the projected 3D AABB *is* the silhouette: footprint == mask box."""
    mesh = _cuboid()
    cam = sample_camera("cabinet", np.random.default_rng(seed), SIZE)
    out = RaycastRenderer().render(mesh, cam, Material.for_mesh(mesh))
    foot, ok = reprojected_footprint(box_from_points(mesh.vertices), cam.K, cam.R, cam.t)
    assert ok
    np.testing.assert_allclose(annotate.mask_box(out.mask), foot, atol=1.0)


@pytest.mark.parametrize("category", ["chair", "car", "lamp", "mug"])
def test_footprint_of_cloud_box_contains_mask_box(category):
    """The GT bbox3d (cloud AABB) projects to a footprint containing the mask box (1 px)."""
    mesh, cam, out = _render(category, 3)
    pts = sample_points(mesh, 512, seed=3)
    foot, ok = reprojected_footprint(box_from_points(pts[:, :3]), cam.K, cam.R, cam.t)
    mb = annotate.mask_box(out.mask)
    assert ok
    assert foot[0] <= mb[0] + 1 and foot[1] <= mb[1] + 1
    assert foot[2] >= mb[2] - 1 and foot[3] >= mb[3] - 1


def test_depth_backprojects_onto_the_surface():
    import open3d as o3d

    mesh, cam, out = _render("sofa", 4)
    rows, cols = np.nonzero(out.mask)
    z = out.depth[rows, cols].astype(np.float64)
    pix = np.stack([cols + 0.5, rows + 0.5, np.ones_like(z)], 1)
    Xc = (np.linalg.inv(cam.K) @ pix.T).T * z[:, None]  # camera frame
    X = (Xc - cam.t) @ cam.R  # object frame: R^T (Xc - t)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(mesh.vertices.astype(np.float32)),
        o3d.core.Tensor(mesh.triangles.astype(np.uint32)),
    )
    dist = scene.compute_distance(o3d.core.Tensor(X.astype(np.float32))).numpy()
    assert np.percentile(dist, 99) < 1e-3
    assert (out.depth[~out.mask] == 0).all()


def test_shading_uses_material_colours():
    mesh, cam, out = _render("car", 0)
    bg = out.rgb[~out.mask]
    assert (bg == bg[0]).all()
    fg = out.rgb[out.mask].astype(float)
    assert fg[:, 0].mean() > 1.5 * fg[:, 2].mean()  # cars are red
    assert len(np.unique(fg.sum(1))) > 5  # shaded, not flat
    assert identity_appearance(out, "") is out.rgb


def test_mask_box_convention():
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True  # rows 2..4, columns 3..8
    np.testing.assert_array_equal(annotate.mask_box(m), [3, 2, 9, 5])
    with pytest.raises(ValueError, match="empty"):
        annotate.mask_box(np.zeros((4, 4), bool))


def test_keypoints_2d_snap_rule():
    """On-mask projections are kept; off-mask ones snap to the nearest foreground centre."""
    K = intrinsics(20, 20, 60.0)
    R, t = look_at(np.array([0.0, 0.0, 2.0]))
    cam = Camera(K, R, t, 20, 20)
    mask = np.zeros((20, 20), bool)
    mask[5:8, 10:12] = True  # rows 5..7, columns 10..11
    inside = np.array([[10.6, 6.3]])
    outside = np.array([[2.2, 6.4]])  # far left of the blob, row 6
    X = []
    for u, v in np.concatenate([inside, outside]):
        ray = np.linalg.inv(K) @ [u, v, 1.0]
        X.append(R.T @ (ray * 2.0 - t))
    kp = annotate.keypoints_2d(np.array(X), cam, mask)
    np.testing.assert_allclose(kp[0], inside[0], atol=1e-9)
    np.testing.assert_allclose(kp[1], [10.5, 6.5])


@pytest.mark.parametrize("category", ["chair", "airplane", "bowl", "bed"])
def test_geometry_labels_have_full_gt_containment(category):
    mesh, cam, out = _render(category, 9)
    pts = sample_points(mesh, 512, seed=9)
    idx = farthest_point_sampling(pts[:, :3], 16)
    geo = annotate.geometry_labels(pts, idx, cam, out.mask)
    assert geo["kpts3d"].shape == (16, 3) and geo["kpts2d"].shape == (16, 2)
    assert keypoint_containment(geo["kpts3d"], geo["bbox3d"]) == 1.0
    assert keypoint_containment(geo["kpts2d"], geo["bbox2d"]) == 1.0
    cols, rows = np.floor(geo["kpts2d"]).astype(int).T
    assert out.mask[rows, cols].all()  # every 2D keypoint sits on the silhouette
    assert np.all(np.abs(geo["bbox3d"]) <= 0.5 + 1e-6)


def test_language_is_deterministic_and_correct():
    rng = np.random.default_rng(0)
    chair = make_shape("chair", rng)
    cam = sample_camera("chair", rng, SIZE)
    b3 = box_from_points(chair.vertices)
    qas = annotate.question_answers(chair, b3, cam, np.random.default_rng(1))
    again = annotate.question_answers(chair, b3, cam, np.random.default_rng(1))
    assert qas == again
    types = [q[0] for q in qas]
    assert types[0] == "category_mc" and set(types) <= set(annotate.QA_TYPES)
    options = qas[0][1].split("Options: ")[1].rstrip(".").split(", ")
    assert len(set(options)) == 4 and "chair" in options and qas[0][2] == "chair"
    by_type = {q[0]: q[2] for q in qas}
    assert by_type["part_count"] == "4"
    assert by_type["attribute"] == ("yes" if chair.attributes["has_armrests"] else "no")
    ext = b3[3:] - b3[:3]
    assert by_type["proportion"] == ("width", "height", "depth")[int(np.argmax(ext))]
    text = annotate.describe(chair, b3, cam)
    assert text.startswith("A chair with") and "four legs" in text
    assert annotate.describe(make_shape("airplane", rng), b3, cam).startswith("An airplane")


def test_no_half_pixel_bias():
    """A pixel-centre convention error would shift both box sides the same way."""
    shifts = []
    for seed in range(12):
        mesh, cam, out = _render(CATEGORIES[seed % len(CATEGORIES)], 100 + seed, size=64)
        uv, _ = project_points(mesh.vertices, cam.K, cam.R, cam.t)
        d = annotate.mask_box(out.mask) - box_from_points(uv)  # (4,)
        shifts += [(d[0] + d[2]) / 2, (d[1] + d[3]) / 2]  # translation part, x and y
    assert abs(np.mean(shifts)) < 0.12
