"""Category-adaptive view sampling and pinhole cameras (Sec. 4.1.2), OpenCV convention.

A camera looks at the object centre (the origin of the normalized frame) from azimuth ``az``
and elevation ``el``::

    C = dist * (cos(el) sin(az), sin(el), cos(el) cos(az))      camera centre, object frame

    az = 0: in front of the object (+z); az = 90: on the object's left side (+x);
    el in [10, 45] degrees above the ground plane (the paper's constraint, our range).

    R rows = (right, down, forward) of the camera, X_c = R X + t, t = -R C,
    K = [[f, 0, W/2], [0, f, H/2], [0, 0, 1]]  (pixel centres at i + 0.5).

The distance is drawn so that the bounding sphere of the normalized object (radius 0.5,
the half-diagonal) always fits inside the field of view: the object is never cut by the
image border, so the mask's 2D box is the whole object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Azimuth ranges in degrees per category (unions of intervals); categories not listed use
# the default. Cars and benches: side / three-quarter views ("side-view for cars", Sec.
# 4.1.2); furniture with a back: front and three-quarter views; round objects: anywhere.
DEFAULT_AZIMUTH: tuple[tuple[float, float], ...] = ((-70.0, 70.0),)
AZIMUTH_RANGES: dict[str, tuple[tuple[float, float], ...]] = {
    "car": ((30.0, 150.0), (-150.0, -30.0)),
    "airplane": ((20.0, 160.0), (-160.0, -20.0)),
    "bench": ((-60.0, 60.0),),
    "chair": ((-70.0, 70.0),),
    "sofa": ((-60.0, 60.0),),
    "bed": ((-70.0, 70.0),),
    "bookshelf": ((-50.0, 50.0),),
    "cabinet": ((-60.0, 60.0),),
    "monitor": ((-60.0, 60.0),),
    "table": ((-180.0, 180.0),),
    "mug": ((-180.0, 180.0),),
    "bottle": ((-180.0, 180.0),),
    "bowl": ((-180.0, 180.0),),
    "lamp": ((-180.0, 180.0),),
}


@dataclass(frozen=True)
class Camera:
    """A calibrated pinhole camera: K (3, 3), R (3, 3), t (3,), image width x height."""

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    width: int
    height: int
    azimuth_deg: float = 0.0
    elevation_deg: float = 0.0

    @property
    def center(self) -> np.ndarray:
        """Camera centre in the object frame, C = -R^T t."""
        return -self.R.T @ self.t

    @property
    def extrinsic(self) -> np.ndarray:
        """4x4 object -> camera matrix [R | t]."""
        e = np.eye(4)
        e[:3, :3], e[:3, 3] = self.R, self.t
        return e


def look_at(center: np.ndarray, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)):
    """R, t of an OpenCV camera at ``center`` looking at ``target`` (y image axis down)."""
    c = np.asarray(center, float)
    f = np.asarray(target, float) - c
    f /= np.linalg.norm(f)
    r = np.cross(f, np.asarray(up, float))
    if np.linalg.norm(r) < 1e-9:
        raise ValueError("look_at: viewing direction parallel to the up vector")
    r /= np.linalg.norm(r)
    d = np.cross(f, r)  # down
    R = np.stack([r, d, f])  # rows: x right, y down, z forward
    return R, -R @ c


def intrinsics(width: int, height: int, fov_deg: float) -> np.ndarray:
    """K with square pixels, horizontal field of view ``fov_deg``, principal point at centre."""
    f = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def sample_camera(
    category: str,
    rng: np.random.Generator,
    image_size: int,
    fov_deg: float = 40.0,
    elevation_range: tuple[float, float] = (10.0, 45.0),
    fill_range: tuple[float, float] = (0.75, 0.95),
) -> Camera:
    """Draw a category-adaptive view.

    ``fill_range``: the bounding sphere (radius 0.5) spans this fraction of the
    half-field of view, i.e. dist = 0.5 / sin(fill * fov / 2); fill < 1 keeps it in view.
    """
    ranges = AZIMUTH_RANGES.get(category, DEFAULT_AZIMUTH)
    widths = np.array([hi - lo for lo, hi in ranges])
    k = int(rng.choice(len(ranges), p=widths / widths.sum()))
    az = float(rng.uniform(*ranges[k]))
    el = float(rng.uniform(*elevation_range))
    fill = float(rng.uniform(*fill_range))
    dist = 0.5 / math.sin(fill * math.radians(fov_deg) / 2)
    a, e = math.radians(az), math.radians(el)
    C = dist * np.array([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)])
    R, t = look_at(C)
    K = intrinsics(image_size, image_size, fov_deg)
    return Camera(K, R, t, image_size, image_size, az, el)


def view_side(azimuth_deg: float) -> str:
    """Which side of the object faces the camera: front, left, back or right."""
    a = (azimuth_deg + 180.0) % 360.0 - 180.0
    if -45.0 <= a < 45.0:
        return "front"
    if 45.0 <= a < 135.0:
        return "left"
    if -135.0 <= a < -45.0:
        return "right"
    return "back"
