"""The ``view`` task: the frame, the visible cloud from depth, amodal labels, the build option."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from pointvl.config import ConfigError
from pointvl.data import shapes
from pointvl.data.build import (
    DEPTH_SCALE,
    BuildDatasetConfig,
    InstanceSpec,
    build,
    instance_seed,
    make_instance,
)
from pointvl.data.cameras import Camera, intrinsics, look_at, sample_camera
from pointvl.data.dataset import PointVLDataset, decode_png, read_manifest
from pointvl.data.render import Material, RaycastRenderer
from pointvl.data.sampling import farthest_point_sampling, sample_points
from pointvl.data.view import (
    ViewFrame,
    backproject_depth,
    point_visibility,
    upright_rotation,
    view_geometry,
)
from pointvl.geometry import (
    aabb_corners,
    box_from_points,
    keypoint_containment,
    project_points,
    reprojected_footprint,
)
from pointvl.schema import dequantize_3d, parse_output, quantize_3d

Q = 100


def small_cfg(**kw) -> BuildDatasetConfig:
    base = dict(train_count=10, test_count=4, num_points=128, image_size=48, workers=1,
                shard_size=6)  # fmt: skip
    return BuildDatasetConfig(**(base | kw))


def camera_at(azimuth_deg: float, elevation_deg: float, dist: float = 1.8, size: int = 64):
    a, e = np.radians(azimuth_deg), np.radians(elevation_deg)
    C = dist * np.array([np.cos(e) * np.sin(a), np.sin(e), np.cos(e) * np.cos(a)])
    R, t = look_at(C)
    return Camera(intrinsics(size, size, 40.0), R, t, size, size, azimuth_deg, elevation_deg)


def random_frame(rng: np.random.Generator) -> tuple[ViewFrame, Camera]:
    cam = camera_at(rng.uniform(-180, 180), rng.uniform(5, 80))
    frame = ViewFrame(upright_rotation(cam.R), rng.normal(0, 0.2, 3), float(rng.uniform(0.3, 3)))
    return frame, cam


# ----------------------------------------------------------------------------- the frame
@pytest.mark.parametrize("seed", range(6))
def test_upright_rotation_is_a_gravity_aligned_camera_frame(seed):
    cam = camera_at(*np.random.default_rng(seed).uniform([-180, 5], [180, 85]))
    Q = upright_rotation(cam.R)
    np.testing.assert_allclose(Q @ Q.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(Q) == pytest.approx(1.0)
    np.testing.assert_array_equal(Q[1], [0.0, 1.0, 0.0])  # y_v = up
    np.testing.assert_allclose(Q[0], cam.R[0], atol=1e-12)  # x_v = the camera's right (no roll)
    to_cam = cam.center / np.linalg.norm(cam.center)
    assert Q[2] @ to_cam > 0 and abs(Q[2][1]) < 1e-12  # z_v horizontal, toward the camera
    # the camera centre lies in the y_v-z_v plane: straight ahead of the viewer
    assert abs(Q[0] @ cam.center) < 1e-9


def test_upright_rotation_at_azimuth_zero_is_the_object_frame():
    np.testing.assert_allclose(upright_rotation(camera_at(0.0, 30.0).R), np.eye(3), atol=1e-12)
    with pytest.raises(ValueError, match="straight up or down"):
        upright_rotation(np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]))
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        upright_rotation(np.eye(2))


@pytest.mark.parametrize("seed", range(8))
def test_frame_change_keeps_every_projection(seed):
    """X_c' = s X_c: the same pixels through the stored camera, depths times s."""
    rng = np.random.default_rng(seed)
    frame, cam = random_frame(rng)
    X = rng.uniform(-0.5, 0.5, (50, 3))  # (N, 3) object frame
    np.testing.assert_allclose(frame.to_object(frame.to_view(X)), X, atol=1e-12)
    R2, t2 = frame.camera(cam.R, cam.t)
    np.testing.assert_allclose(R2 @ R2.T, np.eye(3), atol=1e-12)  # still a rotation
    uv, ok = project_points(X, cam.K, cam.R, cam.t)
    uv2, ok2 = project_points(frame.to_view(X), cam.K, R2, t2)
    np.testing.assert_allclose(uv2, uv, atol=1e-9)
    np.testing.assert_array_equal(ok2, ok)
    z, z2 = X @ cam.R[2] + cam.t[2], frame.to_view(X) @ R2[2] + t2[2]
    np.testing.assert_allclose(z2, frame.scale * z, atol=1e-12)


def test_gt_box_projection_through_the_stored_camera_equals_todays():
    """At azimuth 0 the view frame is the object frame moved and scaled, so the tight view
    box is today's box in new coordinates and its footprint is today's; at any azimuth the
    object box's corners project to today's corners."""
    rng = np.random.default_rng(0)
    mesh, _, _ = shapes.normalize(shapes.FAMILIES["cabinet"](rng))
    points = sample_points(mesh, 256, 0)
    kpt_idx = farthest_point_sampling(points[:, :3], 16)
    box = box_from_points(points[:, :3].astype(np.float64))
    for az in (0.0, 37.0):
        cam = camera_at(az, 25.0)
        out = RaycastRenderer().render(mesh, cam, Material.for_mesh(mesh))
        g = view_geometry(points, kpt_idx, box, out.depth, cam, mesh, 256, 30, 0.35, "tight")
        today, ok = reprojected_footprint(box, cam.K, cam.R, cam.t)
        corners_today, _ = project_points(aabb_corners(box), cam.K, cam.R, cam.t)
        corners_view, _ = project_points(g["frame"].to_view(aabb_corners(box)), cam.K, g["R"],
                                         g["t"])  # fmt: skip
        np.testing.assert_allclose(corners_view, corners_today, atol=1e-9)
        if az == 0.0:
            ours, ok2 = reprojected_footprint(g["bbox3d"], cam.K, g["R"], g["t"])
            assert ok and ok2
            np.testing.assert_allclose(ours, today, atol=1e-9)


# ----------------------------------------------------------------------------- depth
def test_backproject_depth_matches_a_pixel_loop():
    rng = np.random.default_rng(1)
    cam = camera_at(20.0, 30.0, size=12)
    depth = np.where(rng.random((12, 12)) < 0.4, rng.uniform(1.0, 2.5, (12, 12)), 0.0)
    xyz, pix = backproject_depth(depth, cam.K, cam.R, cam.t)
    expect = []
    for i in range(12):
        for j in range(12):
            if depth[i, j] > 0:
                ray = np.linalg.solve(cam.K, [j + 0.5, i + 0.5, 1.0]) * depth[i, j]
                expect.append(np.linalg.solve(cam.R, ray - cam.t))
    np.testing.assert_allclose(xyz, np.array(expect), atol=1e-12)
    uv, _ = project_points(xyz, cam.K, cam.R, cam.t)  # back to the pixel centres
    np.testing.assert_allclose(uv, pix[:, ::-1] + 0.5, atol=1e-9)


def test_point_visibility_front_face_seen_back_face_hidden():
    mesh, _, _ = shapes.normalize(shapes.FAMILIES["cabinet"](np.random.default_rng(0)))
    lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
    mid = (lo + hi) / 2
    front = np.array([[mid[0], mid[1], hi[2]]])  # on the +z face, which faces the camera
    back = np.array([[mid[0], mid[1], lo[2]]])
    vis = point_visibility(mesh, camera_at(0.0, 15.0), np.concatenate([front, back]))
    np.testing.assert_array_equal(vis, [True, False])


# ----------------------------------------------------------------------------- instances
@pytest.fixture(scope="module")
def pairs():
    """(full row, view row) of 14 instances, one per category."""
    full, view = small_cfg(num_points=256, image_size=64), small_cfg(num_points=256, image_size=64,
                                                                     task="view")  # fmt: skip
    out = []
    for i, cat in enumerate(shapes.CATEGORIES):
        spec = InstanceSpec("test", i, cat, instance_seed(0, "test", i))
        out.append((make_instance(spec, full, Q), make_instance(spec, view, Q)))
    return out


def test_view_keeps_the_image_the_2d_labels_and_the_language(pairs):
    same = ("uid", "image_png", "mask_png", "K", "bbox2d", "kpts2d", "description", "questions",
            "answers", "qa_types", "width", "height", "azimuth_deg", "elevation_deg")  # fmt: skip
    for full, view in pairs:
        for k in same:
            assert np.array_equal(np.asarray(full[k]), np.asarray(view[k])), k
        np.testing.assert_array_equal(view["bbox3d_object"], full["bbox3d"])
        for tf, tv in zip(full["targets"], view["targets"]):
            pf, pv = parse_output(tf), parse_output(tv)
            for f in ("answer", "description", "bbox2d", "kpts2d"):
                assert np.array_equal(np.asarray(pf.values[f]), np.asarray(pv.values[f])), f


def test_visible_cloud_is_the_stored_depth_seen_through_the_stored_camera(pairs):
    for _, v in pairs:
        K, R, t = v["K"].reshape(3, 3), v["R"].reshape(3, 3), v["t"]
        xyz = v["points"].reshape(-1, 6)[:, :3].astype(np.float64)  # (N, 3)
        uv, ok = project_points(xyz, K, R, t)
        assert ok.all()
        np.testing.assert_allclose(uv - np.floor(uv), 0.5, atol=1e-4)  # pixel centres
        col, row = np.floor(uv).astype(int).T
        assert decode_png(v["mask_png"]).astype(bool)[row, col].all()
        depth = decode_png(v["depth_png"]).astype(np.float64) / DEPTH_SCALE  # view units
        np.testing.assert_allclose(depth[row, col], xyz @ R[2] + t[2], atol=1e-4)
        nrm = v["points"].reshape(-1, 6)[:, 3:]
        np.testing.assert_allclose(np.linalg.norm(nrm, axis=1), 1.0, atol=1e-5)
        toward_cam = -(xyz - (-R.T @ t))  # normals face the camera
        assert ((nrm * toward_cam).sum(1) >= -1e-6).mean() > 0.99


def test_frame_uses_only_the_visible_points_and_labels_fit_the_cube(pairs):
    for full, v in pairs:
        xyz = v["points"].reshape(-1, 6)[:, :3].astype(np.float64)
        np.testing.assert_allclose(xyz.mean(0), 0.0, atol=1e-6)  # origin: visible centroid
        assert not v["view_clamped"]
        assert np.linalg.norm(xyz, axis=1).max() == pytest.approx(0.35, abs=1e-6)  # radius ρ
        box, kpts = v["bbox3d"], v["kpts3d"].reshape(-1, 3)
        assert np.abs(box).max() <= 0.5 and np.abs(kpts).max() <= 0.5
        # amodal: the box holds the visible surface (up to the depth quantization and the gap
        # between the mesh and its Poisson samples, whose AABB the box is) and every GT
        # keypoint (GT KPA-3D = 1)
        assert np.maximum(box[:3] - xyz, xyz - box[3:]).max() < 0.03
        assert keypoint_containment(kpts, box) == 1.0
        # quantization round trip inside half a bin: nothing was clipped
        assert np.abs(dequantize_3d(quantize_3d(box, Q), Q) - box).max() <= 0.5 / Q + 1e-12
        # the view labels are the full task's, moved into the frame
        frame = ViewFrame.from_row(v)
        np.testing.assert_allclose(frame.to_object(kpts), full["kpts3d"].reshape(-1, 3),
                                   atol=1e-9)  # fmt: skip


def test_keypoint_visibility_and_occlusion(pairs):
    occluded = [1 - np.mean(v["kpts3d_visible"]) for _, v in pairs]
    assert 0.2 < np.mean(occluded) < 0.8  # one view never sees most of the far side
    for _, v in pairs:  # a visible keypoint is near the visible cloud, in view units
        xyz = v["points"].reshape(-1, 6)[:, :3]
        kp = v["kpts3d"].reshape(-1, 3)[np.asarray(v["kpts3d_visible"])]
        if len(kp):
            d = np.linalg.norm(kp[:, None] - xyz[None], axis=2).min(1)
            assert np.median(d) < 0.1


def test_view_box_conventions():
    spec = InstanceSpec("test", 9, "car", instance_seed(0, "test", 9))
    tight = make_instance(spec, small_cfg(task="view"), Q)
    hull = make_instance(spec, small_cfg(task="view", view_box="object_box"), Q)
    frame = ViewFrame.from_row(hull)
    expect = box_from_points(frame.to_view(aabb_corners(hull["bbox3d_object"])))
    np.testing.assert_allclose(hull["bbox3d"], expect, atol=1e-12)
    assert np.all(hull["bbox3d"][:3] <= tight["bbox3d"][:3] + 1e-9)  # the hull holds the
    assert np.all(hull["bbox3d"][3:] >= tight["bbox3d"][3:] - 1e-9)  # tight box


def test_clamped_scale_keeps_labels_in_the_cube():
    rng = np.random.default_rng(3)
    mesh, _, _ = shapes.normalize(shapes.FAMILIES["airplane"](rng))
    points = sample_points(mesh, 256, 3)
    kpt_idx = farthest_point_sampling(points[:, :3], 16)
    box = box_from_points(points[:, :3].astype(np.float64))
    cam = sample_camera("airplane", rng, 64)
    depth = RaycastRenderer().render(mesh, cam, Material.for_mesh(mesh)).depth
    g = view_geometry(points, kpt_idx, box, depth, cam, mesh, 256, 30, 0.5, "object_box")
    assert g["clamped"] and np.abs(g["bbox3d"]).max() == pytest.approx(0.5)
    assert np.linalg.norm(g["points"][:, :3], axis=1).max() < 0.5


# ----------------------------------------------------------------------------- the build
@pytest.fixture(scope="module")
def view_built(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "smoke_view"
    return out, build(small_cfg(task="view"), out, Q, "smoke", progress=False)


def test_view_build_manifest_loader_and_determinism(view_built, tmp_path):
    out, metrics = view_built
    man = read_manifest(out)
    assert man["config"]["task"] == "view" and man["config"]["view_box"] == "tight"
    assert set(man["view"]) == {"clamped", "padded", "visible_pixels_mean", "kpts3d_occluded"}
    assert metrics["view"] == man["view"] and metrics["skipped_total"] == 0
    assert "view_rotation / view_origin / view_scale" in man["columns"]
    assert 0.2 < man["gt_rpc_mean"] < 1.0
    table = pq.read_table(out / man["splits"]["train"]["shards"][0])
    assert table.schema.field("kpts3d_visible").type.list_size == 16
    s = PointVLDataset(out, "test")[0]
    assert tuple(s["points"].shape) == (128, 6) and tuple(s["kpts3d"].shape) == (16, 3)
    again = build(small_cfg(task="view", workers=2), tmp_path / "again", Q, "smoke",
                  progress=False)  # fmt: skip
    assert again["content_hash"] == metrics["content_hash"]
    assert (tmp_path / "again/manifest.json").read_bytes() == (out / "manifest.json").read_bytes()


def test_full_build_is_unchanged_by_the_task_option(tmp_path):
    """``task: full`` writes what the builder wrote before the option: no view column, no
    task key in the manifest, the same bytes with or without the keys in the config."""
    a = build(small_cfg(), tmp_path / "a", Q, "smoke", progress=False)
    b = build(small_cfg(task="full", view_radius=0.2, view_box="object_box"), tmp_path / "b", Q,
              "smoke", progress=False)  # fmt: skip
    assert a["content_hash"] == b["content_hash"]
    manifests = [(tmp_path / d / "manifest.json").read_bytes() for d in ("a", "b")]
    assert manifests[0] == manifests[1]
    man = json.loads((tmp_path / "a/manifest.json").read_text())
    assert not {"task", "view_radius", "view_box"} & set(man["config"]) and "view" not in man
    names = pq.read_schema(next((tmp_path / "a").glob("train/*.parquet"))).names
    assert names[-1] == "attributes" and not any(n.startswith("view_") for n in names)


def test_task_validation_names_the_field():
    with pytest.raises(ConfigError, match="build_dataset.task"):
        small_cfg(task="partial").validate()
    with pytest.raises(ConfigError, match="build_dataset.view_radius"):
        small_cfg(view_radius=0.7).validate()
    with pytest.raises(ConfigError, match="build_dataset.view_box"):
        small_cfg(view_box="obb").validate()
