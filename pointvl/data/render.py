"""Rendering behind a small interface: ``Renderer.render(mesh, camera, material) -> RenderOutput``.

``RaycastRenderer`` casts one ray per pixel centre with ``open3d.t.geometry.RaycastingScene``
(headless, CPU; the paper rasterized with PyTorch3D) and shades with one directional light
plus ambient (Lambert), per-category materials (a base colour per category, a shade per
part). It returns RGB, the foreground mask and the z-depth, all pixel-aligned with the
camera's K, R, t.

The paper refined its renders with Qwen-Image-Edit and FLUX.1-Krea + ControlNet (guidance
ending at 80% of the steps). That is an ``AppearanceBackend``: a callable that maps the raw
render (and its mask / depth as control signals) to a new RGB image of the same size. The
default ``identity_appearance`` keeps the raw render; a diffusion backend can be plugged
into ``build`` without touching the rest (the geometry, and so every label, is unchanged).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

os.environ.setdefault("OPEN3D_DISABLE_WEB_VISUALIZER", "true")

import numpy as np  # noqa: E402
import open3d as o3d  # noqa: E402

from pointvl.data.cameras import Camera  # noqa: E402
from pointvl.data.shapes import PartMesh  # noqa: E402

# Base colours (RGB in [0, 1]) per category: the "per-category material".
CATEGORY_COLORS: dict[str, tuple[float, float, float]] = {
    "chair": (0.62, 0.40, 0.22),
    "table": (0.55, 0.36, 0.20),
    "lamp": (0.85, 0.80, 0.55),
    "mug": (0.85, 0.85, 0.82),
    "bottle": (0.25, 0.55, 0.35),
    "bench": (0.50, 0.33, 0.18),
    "sofa": (0.35, 0.40, 0.60),
    "bookshelf": (0.60, 0.45, 0.30),
    "airplane": (0.80, 0.82, 0.86),
    "car": (0.75, 0.15, 0.15),
    "bowl": (0.90, 0.88, 0.80),
    "monitor": (0.15, 0.15, 0.17),
    "cabinet": (0.70, 0.62, 0.50),
    "bed": (0.55, 0.45, 0.40),
}
DEFAULT_COLOR = (0.6, 0.6, 0.6)
BACKGROUND = (0.94, 0.94, 0.94)
LIGHT_DIR_CAM = np.array(
    [-0.4, -0.6, -0.7]
)  # surface -> light, camera frame: up-left, near the eye
AMBIENT = 0.35


@dataclass
class Material:
    """Colours of a render: ``part_colors[i]`` (RGB in [0, 1]) for part id i."""

    part_colors: np.ndarray  # (P, 3)

    @staticmethod
    def for_mesh(mesh: PartMesh, rng: np.random.Generator | None = None) -> Material:
        """Category base colour, each part a little lighter / darker, optional instance tint."""
        base = np.asarray(CATEGORY_COLORS.get(mesh.category, DEFAULT_COLOR))
        if rng is not None:
            base = np.clip(base + rng.uniform(-0.06, 0.06, 3), 0.02, 0.98)
        p = max(1, len(mesh.part_names))  # a mesh without parts (ShapeNet) is one part
        shade = 1.0 - 0.18 * (np.arange(p) % 3) + 0.08 * (np.arange(p) % 2)  # (P,)
        return Material(np.clip(base[None] * shade[:, None], 0.0, 1.0))


@dataclass
class RenderOutput:
    """rgb (H, W, 3) uint8; mask (H, W) bool; depth (H, W) float32 z-depth, 0 on background."""

    rgb: np.ndarray
    mask: np.ndarray
    depth: np.ndarray


class Renderer(Protocol):
    """Anything that renders a mesh through a calibrated camera."""

    name: str

    def render(self, mesh: PartMesh, camera: Camera, material: Material) -> RenderOutput: ...


class AppearanceBackend(Protocol):
    """Maps a raw render to a refined RGB image of the same size (geometry unchanged)."""

    def __call__(self, render: RenderOutput, prompt: str) -> np.ndarray: ...


def identity_appearance(render: RenderOutput, prompt: str) -> np.ndarray:
    """The default backend: keep the raw render."""
    return render.rgb


class RaycastRenderer:
    """Headless ray casting with Open3D's RaycastingScene (one ray per pixel centre)."""

    name = "raycast"

    def render(self, mesh: PartMesh, camera: Camera, material: Material) -> RenderOutput:
        w, h = camera.width, camera.height
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(
            o3d.core.Tensor(np.ascontiguousarray(mesh.vertices, np.float32)),
            o3d.core.Tensor(np.ascontiguousarray(mesh.triangles, np.uint32)),
        )
        rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
            o3d.core.Tensor(camera.K, o3d.core.float64),
            o3d.core.Tensor(camera.extrinsic, o3d.core.float64),
            w,
            h,
        )
        ans = scene.cast_rays(rays)
        t_hit = ans["t_hit"].numpy()  # (H, W)
        mask = np.isfinite(t_hit)  # (H, W)
        dirs = rays.numpy()[..., 3:]  # (H, W, 3) object frame
        # z-depth = t_hit * (d . forward), forward = third row of R
        depth = np.where(mask, t_hit * (dirs @ camera.R[2]), 0.0).astype(np.float32)
        prim = ans["primitive_ids"].numpy().astype(np.int64)  # (H, W)
        normals = ans["primitive_normals"].numpy().astype(np.float64)  # (H, W, 3)
        # face the viewer: flip normals that point away from the camera
        flip = np.einsum("hwc,hwc->hw", normals, dirs) > 0
        normals[flip] *= -1
        light = camera.R.T @ (LIGHT_DIR_CAM / np.linalg.norm(LIGHT_DIR_CAM))  # object frame
        lambert = np.clip(normals @ light, 0.0, 1.0)  # (H, W) max(n . L, 0)
        intensity = AMBIENT + (1 - AMBIENT) * lambert
        part = np.where(mask, mesh.part_ids[np.where(mask, prim, 0)], 0)
        color = material.part_colors[part] * intensity[..., None]  # (H, W, 3)
        rgb = np.where(mask[..., None], color, np.asarray(BACKGROUND))
        rgb8 = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
        return RenderOutput(rgb8, mask, depth)


RENDERERS: dict[str, type] = {"raycast": RaycastRenderer}
