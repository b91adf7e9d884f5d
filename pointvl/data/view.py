"""The ``view`` task: what one camera sees as input, the whole object as target (issue 16).

In the paper's task (``full``) the input cloud samples the whole surface in the object's
normalized frame and the 3D targets are functions of it: ``bbox3d`` is the cloud's AABB and
``kpts3d`` farthest point sampling on the cloud, so min / max and FPS recover them without
learning. In ``view`` the answer is not in the input:

    depth (H, W) of the same render --back-project the foreground pixels--> P points
      --FPS to N, KNN normals facing the camera--> the visible cloud V (N, 6)
    view frame    X_v = s · Q (X − c)
      Q           rows (x_v, y_v, z_v) = (camera right, up, toward the camera), both
                  horizontal axes in the ground plane: the camera's axes with pitch removed
                  (gravity-aligned: y_v is the object frame's up, +y)
      c           centroid of V                       (origin: from the visible points only)
      s           ρ / max_i |v_i − c|                 (scale: V's radius about c is ρ)
    targets       bbox3d = AABB, in the view frame, of the *full* cloud (``tight``) or of the
                  8 corners of the object-frame box (``object_box``); kpts3d = the full
                  cloud's FPS keypoints in the view frame; both amodal. ``kpts3d_visible``
                  says which keypoints the camera sees (ray cast against the mesh).
                  bbox2d, kpts2d, answer, description: unchanged (same image).
    camera        X_c' = R' X_v + t' with R' = R Qᵀ, t' = s (R c + t), i.e. X_c' = s X_c:
                  every pixel projection is unchanged (projection is scale-free) and
                  depths are in view units (``depth_png`` stores s · z).

The view frame, for a camera at azimuth a (elevation e is the angle above the x_v-z_v plane)::

              y_v (up)
              |        camera
              |       /
              |      /  e
              c ---------- x_v (camera right, horizontal)
             /
            z_v (horizontal, toward the camera)          Q = R_y(a)ᵀ: a = 0 gives Q = I

Nothing in the frame depends on the hidden part: c and s are statistics of V, Q of the camera.
A frame normalised by the full object (the object frame: centred box, unit diagonal) gives its
extent away; an object-aligned frame gives its orientation away (three visible faces of a box
already span its AABB). If the full object's labels would leave the unit cube [-0.5, 0.5]^3
that the schema quantizes (``schema.quantize_3d``), s is reduced until they fit and the row
counts as ``view_clamped`` (a leak of one bit; counted in the manifest, zero on ``tiny``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

os.environ.setdefault("OPEN3D_DISABLE_WEB_VISUALIZER", "true")

import numpy as np  # noqa: E402
import open3d as o3d  # noqa: E402

from pointvl.data.cameras import Camera  # noqa: E402
from pointvl.data.sampling import farthest_point_sampling  # noqa: E402
from pointvl.data.shapes import PartMesh  # noqa: E402
from pointvl.geometry import aabb_corners, box_from_points  # noqa: E402
from pointvl.schema import UNIT_CUBE  # noqa: E402

__all__ = [
    "TASKS",
    "VIEW_BOXES",
    "ViewFrame",
    "backproject_depth",
    "point_visibility",
    "upright_rotation",
    "view_frame",
    "view_geometry",
    "visible_cloud",
]

TASKS = ("full", "view")
VIEW_BOXES = ("tight", "object_box")
UP = np.array([0.0, 1.0, 0.0])
VISIBILITY_EPS = 1e-3
"""A point is visible when the camera ray towards it hits nothing closer than |X − C| − eps."""


@dataclass(frozen=True)
class ViewFrame:
    """X_v = scale · rotation · (X − origin): object frame -> view frame (module docstring)."""

    rotation: np.ndarray  # (3, 3) rows = view axes in object coordinates
    origin: np.ndarray  # (3,) object frame
    scale: float

    @classmethod
    def from_row(cls, row) -> ViewFrame:
        """The frame of a ``view`` dataset row (``view_rotation``, ``view_origin``, ``view_scale``)."""
        return cls(
            np.asarray(row["view_rotation"], np.float64).reshape(3, 3),
            np.asarray(row["view_origin"], np.float64),
            float(row["view_scale"]),
        )

    def to_view(self, xyz: np.ndarray) -> np.ndarray:
        """(..., 3) object frame -> (..., 3) view frame."""
        return self.scale * (np.asarray(xyz, np.float64) - self.origin) @ self.rotation.T

    def to_object(self, xyz_view: np.ndarray) -> np.ndarray:
        """(..., 3) view frame -> (..., 3) object frame."""
        return np.asarray(xyz_view, np.float64) @ self.rotation / self.scale + self.origin

    def camera(self, R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(R', t') with R' X_v + t' = s (R X + t): the same pixels, depths in view units."""
        # X = Qᵀ X_v / s + c  =>  s (R X + t) = R Qᵀ X_v + s (R c + t)
        return R @ self.rotation.T, self.scale * (R @ self.origin + t)


def upright_rotation(R: np.ndarray) -> np.ndarray:
    """Q (3, 3): rows = camera right, up, toward the camera, pitch removed (gravity = −y).

    ``R``'s third row is the camera's forward axis in the object frame; its horizontal part,
    reversed, is z_v; x_v = y_v × z_v. Raises ValueError for a camera looking straight
    up or down (no horizontal direction).
    """
    R = np.asarray(R, np.float64)
    if R.shape != (3, 3):
        raise ValueError(f"upright_rotation: R must have shape (3, 3), got {R.shape}")
    forward = R[2]  # (3,)
    horizontal = forward - (forward @ UP) * UP  # (3,)
    norm = np.linalg.norm(horizontal)
    if norm < 1e-6:
        raise ValueError("upright_rotation: the camera looks straight up or down")
    z_v = -horizontal / norm
    return np.stack([np.cross(UP, z_v), UP, z_v])  # (3, 3)


def backproject_depth(
    depth: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Foreground pixels (depth > 0) -> object-frame points (P, 3) and their (row, col) (P, 2).

    Pixel (i, j) is the ray through its centre (j + 0.5, i + 0.5):
    X_c = z K⁻¹ [u, v, 1]ᵀ, X = Rᵀ (X_c − t). Row-major pixel order.
    """
    depth = np.asarray(depth, np.float64)
    if depth.ndim != 2:
        raise ValueError(f"backproject_depth: depth must be (H, W), got {depth.shape}")
    rows, cols = np.nonzero(depth > 0)  # (P,), (P,)
    z = depth[rows, cols]  # (P,)
    uv1 = np.stack([cols + 0.5, rows + 0.5, np.ones_like(z)], 1)  # (P, 3)
    xc = (uv1 @ np.linalg.inv(K).T) * z[:, None]  # (P, 3) camera frame
    return (xc - t) @ R, np.stack([rows, cols], 1)  # Rᵀ (X_c − t): (P, 3), (P, 2)


def visible_cloud(
    depth: np.ndarray, camera: Camera, num_points: int, normal_knn: int
) -> tuple[np.ndarray, int]:
    """The input cloud of ``view``: (N, 6) float64 [xyz, normals] in the object frame, and P.

    The P foreground pixels of ``depth`` are back-projected and thinned to N by farthest point
    sampling (an even cover of the visible surface, as Poisson-disk sampling is of the whole
    one). With P < N the FPS order is repeated from its start (duplicate points; counted by
    the caller). Normals: KNN plane fits, oriented towards the camera centre.
    """
    xyz, _ = backproject_depth(depth, camera.K, camera.R, camera.t)  # (P, 3)
    p = len(xyz)
    if p == 0:
        raise ValueError("visible_cloud: the depth map has no foreground pixel")
    order = farthest_point_sampling(xyz, min(num_points, p))  # (min(N, P),)
    idx = np.resize(order, num_points)  # (N,) repeats the FPS order when P < N
    pts = xyz[idx]  # (N, 3)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(knn=normal_knn))
    pcd.orient_normals_towards_camera_location(camera.center)
    nrm = np.asarray(pcd.normals, np.float64)  # (N, 3)
    nrm = nrm / np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    return np.concatenate([pts, nrm], 1), p


def point_visibility(mesh: PartMesh, camera: Camera, xyz: np.ndarray) -> np.ndarray:
    """(N,) bool: does the camera see each object-frame point (N, 3) on the mesh?

    One ray from the camera centre C towards each point; visible when the first hit is at
    least |X − C| − ``VISIBILITY_EPS`` away (points inside a neighbouring part are hidden).
    """
    xyz = np.asarray(xyz, np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"point_visibility: xyz must be (N, 3), got {xyz.shape}")
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(np.ascontiguousarray(mesh.vertices, np.float32)),
        o3d.core.Tensor(np.ascontiguousarray(mesh.triangles, np.uint32)),
    )
    c = camera.center  # (3,)
    d = xyz - c  # (N, 3)
    dist = np.linalg.norm(d, axis=1)  # (N,)
    rays = np.concatenate([np.broadcast_to(c, d.shape), d / dist[:, None]], 1)  # (N, 6)
    t_hit = scene.cast_rays(o3d.core.Tensor(rays.astype(np.float32)))["t_hit"].numpy()
    return t_hit >= dist - VISIBILITY_EPS


def view_frame(visible_xyz: np.ndarray, R: np.ndarray, radius: float) -> ViewFrame:
    """Origin = the visible centroid, axes = ``upright_rotation(R)``, scale: radius ρ of V."""
    v = np.asarray(visible_xyz, np.float64)  # (N, 3)
    c = v.mean(0)  # (3,)
    r = float(np.linalg.norm(v - c, axis=1).max())
    if r <= 0:
        raise ValueError("view_frame: the visible points are all at one place")
    return ViewFrame(upright_rotation(R), c, radius / r)


def _amodal_box(frame: ViewFrame, full_xyz: np.ndarray, object_box: np.ndarray, kind: str):
    if kind == "tight":  # the full cloud's AABB in the view frame
        return box_from_points(frame.to_view(full_xyz))
    if kind == "object_box":  # the hull of the object-frame box's corners
        return box_from_points(frame.to_view(aabb_corners(object_box)))
    raise ValueError(f"view box {kind!r}: expected one of {VIEW_BOXES}")


def view_geometry(
    points: np.ndarray,
    kpt_idx: np.ndarray,
    object_box: np.ndarray,
    depth: np.ndarray,
    camera: Camera,
    mesh: PartMesh,
    num_points: int,
    normal_knn: int,
    radius: float,
    box: str = "tight",
) -> dict:
    """Everything ``view`` changes in a row (module docstring), from the full task's geometry.

    points (N, 6) full cloud, object frame; kpt_idx (M,) its FPS keypoints; object_box (6,)
    the full task's bbox3d; depth (H, W) z-depth in object units. Returns float64 arrays:
    ``points`` (N, 6) visible cloud, view frame; ``bbox3d`` (6,), ``kpts3d`` (M, 3) amodal,
    view frame; ``R``, ``t`` the camera of the view frame; ``depth`` (H, W) view units;
    ``frame`` (ViewFrame); ``kpts3d_visible`` (M,) bool; ``visible_pixels``; ``clamped``.
    """
    cloud, pixels = visible_cloud(depth, camera, num_points, normal_knn)  # (N, 6), P
    frame = view_frame(cloud[:, :3], camera.R, radius)
    full = np.asarray(points[:, :3], np.float64)  # (N, 3)
    reach = float(np.abs(frame.to_view(full)).max())
    if box == "object_box":
        reach = max(reach, float(np.abs(frame.to_view(aabb_corners(object_box))).max()))
    half = UNIT_CUBE[1]
    clamped = reach > half
    if clamped:  # keep the labels inside the quantized cube
        frame = ViewFrame(frame.rotation, frame.origin, frame.scale * half / reach)
    R, t = frame.camera(camera.R, camera.t)
    return {
        "points": np.concatenate([frame.to_view(cloud[:, :3]), cloud[:, 3:] @ frame.rotation.T], 1),
        "bbox3d": _amodal_box(frame, full, object_box, box),
        "kpts3d": frame.to_view(full[kpt_idx]),
        "R": R,
        "t": t,
        "depth": np.asarray(depth, np.float64) * frame.scale,
        "frame": frame,
        "kpts3d_visible": point_visibility(mesh, camera, full[kpt_idx]),
        "visible_pixels": pixels,
        "clamped": clamped,
    }
