"""Box and camera geometry behind the geometric rewards (Eqs. 8, 11-13). Pure numpy.

Conventions
-----------
2D boxes are ``[x1, y1, x2, y2]`` in pixels (x right, y down), shape ``(..., 4)``.
3D boxes are axis-aligned ``[xmin, ymin, zmin, xmax, ymax, zmax]`` in the object frame,
shape ``(..., 6)``. A box whose max is below its min on some axis is *inverted*; one whose
max equals its min is *degenerate*. Both have zero area / volume.

Camera: OpenCV pinhole. A world (object-frame) point X maps to camera coordinates
``X_c = R X + t`` and to pixels ``u = (K X_c)_xy / (K X_c)_z``::

            z (forward, optical axis)
           /
          /
         +-------- x (right)
         |
         |
         y (down)          image origin (0, 0) = top-left pixel corner

Every function accepts numpy arrays, nested lists or CPU torch tensors (converted with
``np.asarray``), is batched over leading dimensions (numpy broadcasting), never returns
NaN from finite input, and raises ``ValueError`` naming the expected shape on a wrong one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "aabb_corners",
    "box_from_points",
    "iou_2d",
    "iou_3d",
    "keypoint_containment",
    "project_points",
    "reprojected_footprint",
]

DEPTH_EPS = 1e-6
"""Points with camera depth z_c <= DEPTH_EPS are treated as at / behind the camera."""


def _as_array(x: Any, name: str) -> np.ndarray:
    """Anything array-like (torch tensors included) -> float64 ndarray."""
    if hasattr(x, "detach"):  # a torch tensor; torch is not imported here
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as err:
        raise ValueError(f"{name}: expected a numeric array, got {type(x).__name__}") from err


def _check_last(a: np.ndarray, size: int, name: str, expected: str) -> None:
    if a.ndim < 1 or a.shape[-1] != size:
        raise ValueError(f"{name}: expected shape {expected}, got {a.shape}")


def _broadcast(a: np.ndarray, b: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        return np.broadcast_arrays(a, b)
    except ValueError as err:
        raise ValueError(f"{what}: leading dims do not broadcast: {a.shape} vs {b.shape}") from err


# ----------------------------------------------------------------------------- IoU
def _iou_aabb(a: np.ndarray, b: np.ndarray, d: int) -> np.ndarray:
    """IoU of axis-aligned boxes ``[lo (d), hi (d)]``, a and b already broadcast: (..., 2d)."""
    finite = np.isfinite(a).all(-1) & np.isfinite(b).all(-1)  # (...)
    # Halve first so that no difference below can overflow, then move every axis into
    # [0, 1] (shift by the union's min, divide by the union's extent). IoU is invariant to
    # per-axis translation and positive scaling, and this makes it numerically so as well:
    # identical boxes give exactly 1, whatever their position or size.
    a = np.where(finite[..., None], a, 0.0) * 0.5  # (..., 2d)
    b = np.where(finite[..., None], b, 0.0) * 0.5  # (..., 2d)
    lo_a, hi_a, lo_b, hi_b = a[..., :d], a[..., d:], b[..., :d], b[..., d:]  # (..., d) each
    origin = np.minimum(lo_a, lo_b)  # (..., d)
    span = np.maximum(hi_a, hi_b) - origin  # (..., d)
    span = np.where(span > 0, span, 1.0)  # span <= 0: both boxes empty on that axis
    lo_a, hi_a = (lo_a - origin) / span, (hi_a - origin) / span  # (..., d)
    lo_b, hi_b = (lo_b - origin) / span, (hi_b - origin) / span  # (..., d)
    # |A| = prod_k max(0, hi_k - lo_k): inverted and degenerate boxes have zero volume
    vol_a = np.clip(hi_a - lo_a, 0.0, None).prod(-1)  # (...)
    vol_b = np.clip(hi_b - lo_b, 0.0, None).prod(-1)  # (...)
    # |A ∩ B| = prod_k max(0, min(hi_a, hi_b) - max(lo_a, lo_b))
    inter = np.clip(np.minimum(hi_a, hi_b) - np.maximum(lo_a, lo_b), 0.0, None).prod(-1)  # (...)
    union = vol_a + vol_b - inter  # (...)
    ok = finite & (union > 0)  # (...)
    # IoU = |A ∩ B| / |A ∪ B|, and 0 where the union is empty or the input non-finite
    iou = np.where(ok, inter / np.where(ok, union, 1.0), 0.0)  # (...)
    return np.clip(iou, 0.0, 1.0)


def iou_2d(a: Any, b: Any) -> np.ndarray:
    """Eq. (8), r_bbox2d: IoU of 2D boxes ``[x1, y1, x2, y2]``, shapes (..., 4) -> (...).

    Leading dims broadcast. Degenerate (zero area) or inverted boxes give 0, as does any
    non-finite coordinate; the result is always in [0, 1], never NaN. Boxes that merely
    touch (shared edge) give 0. Continuous convention: area = (x2 - x1) (y2 - y1), no +1.
    """
    a, b = _as_array(a, "iou_2d a"), _as_array(b, "iou_2d b")
    _check_last(a, 4, "iou_2d a", "(..., 4) [x1, y1, x2, y2]")
    _check_last(b, 4, "iou_2d b", "(..., 4) [x1, y1, x2, y2]")
    with np.errstate(all="ignore"):
        return _iou_aabb(*_broadcast(a, b, "iou_2d"), d=2)


def iou_3d(a: Any, b: Any) -> np.ndarray:
    """Eq. (8), r_bbox3d: IoU of axis-aligned 3D boxes, shapes (..., 6) -> (...).

    Boxes are ``[xmin, ymin, zmin, xmax, ymax, zmax]``. Leading dims broadcast. Degenerate
    (zero volume), inverted or non-finite boxes give 0; the result is in [0, 1], never NaN.
    Departure: the paper does not say whether its 3D boxes are oriented; ours are axis
    aligned in the object's normalized frame (Eq. 8 restatement).
    """
    a, b = _as_array(a, "iou_3d a"), _as_array(b, "iou_3d b")
    _check_last(a, 6, "iou_3d a", "(..., 6) [xmin, ymin, zmin, xmax, ymax, zmax]")
    _check_last(b, 6, "iou_3d b", "(..., 6) [xmin, ymin, zmin, xmax, ymax, zmax]")
    with np.errstate(all="ignore"):
        return _iou_aabb(*_broadcast(a, b, "iou_3d"), d=3)


# ----------------------------------------------------------------------------- boxes and points
def aabb_corners(box3d: Any) -> np.ndarray:
    """The 8 corners of axis-aligned boxes: (..., 6) -> (..., 8, 3).

    Corner j takes the max on x if ``j & 1``, on y if ``j & 2``, on z if ``j & 4`` (else
    the min)::

              6 ------------ 7
             /|             /|
            / |            / |
           4 ------------ 5  |             z
           |  |           |  |             |   y
           |  2 ----------|- 3             |  /
           | /            | /              | /
           |/             |/               |/
           0 ------------ 1                +------ x

        0 = (xmin, ymin, zmin)   1 = (xmax, ymin, zmin)
        2 = (xmin, ymax, zmin)   3 = (xmax, ymax, zmin)
        4 = (xmin, ymin, zmax)   5 = (xmax, ymin, zmax)
        6 = (xmin, ymax, zmax)   7 = (xmax, ymax, zmax)

    The values are taken as given (no sorting): an inverted box yields the same 8 points
    as its sorted version, only in a different order.
    """
    box = _as_array(box3d, "aabb_corners box3d")
    _check_last(box, 6, "aabb_corners box3d", "(..., 6) [xmin, ymin, zmin, xmax, ymax, zmax]")
    j = np.arange(8)  # (8,)
    use_max = np.stack([(j & 1) > 0, (j & 2) > 0, (j & 4) > 0], axis=-1)  # (8, 3)
    lo, hi = box[..., None, :3], box[..., None, 3:]  # (..., 1, 3) each
    return np.where(use_max, hi, lo)  # (..., 8, 3)


def box_from_points(points: Any) -> np.ndarray:
    """Tight axis-aligned box of a point set: (..., M, D) -> (..., 2D), D in {2, 3}.

    Returns ``[min_1..min_D, max_1..max_D]``, i.e. ``[x1, y1, x2, y2]`` for D = 2 and
    ``[xmin, ymin, zmin, xmax, ymax, zmax]`` for D = 3. Needs M >= 1; NaN propagates.
    """
    p = _as_array(points, "box_from_points points")
    if p.ndim < 2 or p.shape[-1] not in (2, 3) or p.shape[-2] < 1:
        raise ValueError(f"box_from_points: expected shape (..., M >= 1, 2 or 3), got {p.shape}")
    return np.concatenate([p.min(-2), p.max(-2)], axis=-1)  # (..., 2D)


def keypoint_containment(points: Any, box: Any) -> np.ndarray:
    """Eq. (8): r_kpt = (1/M) sum_m 1[p_m in B*], points (..., M, D), box (..., 2D) -> (...).

    D = 2 with a ``[x1, y1, x2, y2]`` box (kpts2d) or D = 3 with a
    ``[xmin, ymin, zmin, xmax, ymax, zmax]`` box (kpts3d). Boundaries are inclusive
    (lo <= p <= hi on every axis). Leading dims of ``points[..., 0, 0]`` and
    ``box[..., 0]`` broadcast. An empty point set (M = 0) or a box with a non-finite
    coordinate gives 0; a non-finite keypoint counts as outside (the others still count);
    an inverted box contains nothing.
    """
    p = _as_array(points, "keypoint_containment points")
    bx = _as_array(box, "keypoint_containment box")
    if p.ndim < 2 or p.shape[-1] not in (2, 3):
        raise ValueError(
            f"keypoint_containment points: expected shape (..., M, 2 or 3), got {p.shape}"
        )
    d = p.shape[-1]
    _check_last(bx, 2 * d, "keypoint_containment box", f"(..., {2 * d}) for {d}D keypoints")
    try:
        lead = np.broadcast_shapes(p.shape[:-2], bx.shape[:-1])
    except ValueError as err:
        raise ValueError(
            f"keypoint_containment: leading dims do not broadcast: {p.shape} vs {bx.shape}"
        ) from err
    if p.shape[-2] == 0:
        return np.zeros(lead)
    box_ok = np.isfinite(bx).all(-1)  # (...)
    lo, hi = bx[..., None, :d], bx[..., None, d:]  # (..., 1, D) each
    # 1[p_m in B*] = prod_axes 1[lo <= p_m <= hi]; NaN compares False, i.e. outside
    inside = ((p >= lo) & (p <= hi)).all(-1)  # (..., M)
    frac = inside.mean(-1)  # (...)
    return np.broadcast_to(np.where(box_ok, frac, 0.0), lead).astype(np.float64)


# ----------------------------------------------------------------------------- camera
def _check_camera(K: Any, R: Any, t: Any, fn: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    K, R, t = _as_array(K, f"{fn} K"), _as_array(R, f"{fn} R"), _as_array(t, f"{fn} t")
    if K.shape != (3, 3):
        raise ValueError(f"{fn}: K must have shape (3, 3) (intrinsics), got {K.shape}")
    if R.shape != (3, 3):
        raise ValueError(f"{fn}: R must have shape (3, 3) (rotation), got {R.shape}")
    if t.shape != (3,):
        raise ValueError(f"{fn}: t must have shape (3,) (translation), got {t.shape}")
    return K, R, t


def project_points(
    X: Any, K: Any, R: Any, t: Any, eps: float = DEPTH_EPS
) -> tuple[np.ndarray, np.ndarray]:
    """Eq. (11): pinhole projection u = (K X_c)_xy / (K X_c)_z with X_c = R X + t.

    X (..., N, 3) object-frame points; K (3, 3) intrinsics; R (3, 3), t (3,) the
    object -> camera transform (OpenCV: x right, y down, z forward; see module docstring).
    Returns ``uv`` (..., N, 2) pixels and ``valid`` (..., N) bool. A point is invalid when
    its depth z_c <= eps (at or behind the camera; the paper's "ũ_z <= 0" with a small
    margin) or when its projection is not finite; its ``uv`` is then set to 0.
    """
    K, R, t = _check_camera(K, R, t, "project_points")
    X = _as_array(X, "project_points X")
    _check_last(X, 3, "project_points X", "(..., N, 3)")
    with np.errstate(all="ignore"):
        # X_c = R X + t
        Xc = X @ R.T + t  # (..., N, 3)
        # ũ = K X_c
        uvw = Xc @ K.T  # (..., N, 3)
        w = uvw[..., 2]  # (..., N)
        valid = (Xc[..., 2] > eps) & (np.abs(w) > 0) & np.isfinite(uvw).all(-1)  # (..., N)
        # u = (ũ_x / ũ_z, ũ_y / ũ_z)
        uv = uvw[..., :2] / np.where(valid, w, 1.0)[..., None]  # (..., N, 2)
        valid &= np.isfinite(uv).all(-1)  # (..., N)
        uv = np.where(valid[..., None], uv, 0.0)  # (..., N, 2)
    return uv, valid


def reprojected_footprint(
    box3d: Any, K: Any, R: Any, t: Any, eps: float = DEPTH_EPS
) -> tuple[np.ndarray, np.ndarray]:
    """Eqs. (11-12): B_proj = [min_j u_jx, min_j u_jy, max_j u_jx, max_j u_jy].

    Projects the 8 corners of each box (``aabb_corners`` order) through the camera
    (``project_points``). box3d (..., 6) -> ``box2d`` (..., 4) pixels and ``valid`` (...)
    bool; valid is False when any corner is invalid (at / behind the camera, or a
    non-finite box), and then ``box2d`` is all zeros. The footprint is the tight 2D box of
    the projected corners: for a box seen at an angle it is larger than the object's
    silhouette, as in the paper. No clipping to the image.
    """
    K, R, t = _check_camera(K, R, t, "reprojected_footprint")
    corners = aabb_corners(box3d)  # (..., 8, 3)
    uv, corner_ok = project_points(corners, K, R, t, eps=eps)  # (..., 8, 2), (..., 8)
    valid = corner_ok.all(-1)  # (...)
    box2d = np.concatenate([uv.min(-2), uv.max(-2)], axis=-1)  # (..., 4)
    return np.where(valid[..., None], box2d, 0.0), valid
