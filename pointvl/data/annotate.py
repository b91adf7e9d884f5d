"""Annotations (Sec. 4.1.3): boxes, keypoints, a description and QA pairs per instance.

Geometry (continuous, before ``schema.format_target`` quantizes it):

- ``bbox3d``: the AABB of the *point cloud* in the normalized object frame. The 16 3D
  keypoints are cloud points, so they lie in it (ground-truth KPA-3D = 1).
- ``kpts3d``: 16 keypoints by farthest point sampling on the cloud (``sampling.py``).
- ``bbox2d``: the tight box of the foreground mask in continuous pixel coordinates: a
  foreground pixel (row i, column j) covers [j, j+1] x [i, i+1], so
  bbox2d = [min j, min i, max j + 1, max i + 1].
- ``kpts2d`` rule: project each 3D keypoint with K, R, t; if it lands on a foreground pixel
  keep the sub-pixel projection, else snap it to the centre (j + 0.5, i + 0.5) of the
  nearest foreground pixel (Euclidean distance transform of the mask). Every 2D keypoint is
  therefore on the object's silhouette and inside bbox2d (ground-truth KPA-2D = 1). Occluded
  keypoints keep their projected position (they are on the silhouette's interior).

Language (the paper used GPT-5; ours is a deterministic template engine over the category,
its parts, the box proportions and the view): one description and QA pairs of the types
``QA_TYPES``; the multiple-choice category question lists 4 options in a seeded order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import distance_transform_edt

from pointvl.data.cameras import Camera, view_side
from pointvl.data.shapes import CATEGORIES, SYMMETRIC, PartMesh
from pointvl.geometry import box_from_points, project_points

QA_TYPES = ("category_mc", "category_open", "part_count", "attribute", "proportion", "orientation")

# Part counted per category for "How many ... does it have?" (attribute key, noun).
COUNT_QUESTIONS: dict[str, tuple[str, str]] = {
    "chair": ("legs", "legs"),
    "table": ("legs", "legs"),
    "bench": ("legs", "legs"),
    "sofa": ("cushions", "seat cushions"),
    "bookshelf": ("shelves", "shelves"),
    "airplane": ("engines", "engines"),
    "car": ("wheels", "wheels"),
    "cabinet": ("drawers", "drawers"),
    "bed": ("pillows", "pillows"),
}
# Yes/no feature per category (attribute key, question).
YESNO_QUESTIONS: dict[str, tuple[str, str]] = {
    "chair": ("has_armrests", "Does the chair have armrests?"),
    "table": ("round_top", "Is the tabletop round?"),
    "lamp": ("tall", "Is it a tall floor lamp?"),
    "mug": ("has_handle", "Does the mug have a handle?"),
    "bottle": ("has_cap", "Does the bottle have a cap?"),
    "bench": ("has_backrest", "Does the bench have a backrest?"),
    "sofa": ("has_armrests", "Does the sofa have armrests?"),
    "bookshelf": ("shelves", None),
    "airplane": ("engines", None),
    "car": ("has_spoiler", "Does the car have a rear spoiler?"),
    "bowl": ("has_foot", "Does the bowl stand on a foot ring?"),
    "monitor": ("widescreen", "Is the monitor a widescreen?"),
    "cabinet": ("has_legs", "Does the cabinet stand on legs?"),
    "bed": ("has_footboard", "Does the bed have a footboard?"),
}
NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight")


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight continuous box [x1, y1, x2, y2] of a non-empty boolean mask (H, W)."""
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        raise ValueError("mask_box: empty foreground mask")
    return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], np.float64)


def keypoints_2d(kpts3d: np.ndarray, camera: Camera, mask: np.ndarray) -> np.ndarray:
    """The kpts2d rule (module docstring): project, keep if on the mask, else snap. (M, 2)."""
    uv, valid = project_points(kpts3d, camera.K, camera.R, camera.t)  # (M, 2), (M,)
    h, w = mask.shape
    col = np.clip(np.floor(uv[:, 0]).astype(np.int64), 0, w - 1)
    row = np.clip(np.floor(uv[:, 1]).astype(np.int64), 0, h - 1)
    inside = valid & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    on_mask = inside & mask[row, col]
    # nearest foreground pixel of every pixel: EDT of the background
    _, (near_r, near_c) = distance_transform_edt(~mask, return_indices=True)
    snapped = np.stack([near_c[row, col] + 0.5, near_r[row, col] + 0.5], 1).astype(np.float64)
    return np.where(on_mask[:, None], uv, snapped)


def geometry_labels(points: np.ndarray, kpt_idx: np.ndarray, camera: Camera, mask: np.ndarray):
    """bbox3d (6,), kpts3d (M, 3), bbox2d (4,), kpts2d (M, 2), all float64, continuous."""
    xyz = np.asarray(points[:, :3], np.float64)
    kpts3d = xyz[kpt_idx]
    return {
        "bbox3d": box_from_points(xyz),
        "kpts3d": kpts3d,
        "bbox2d": mask_box(mask),
        "kpts2d": keypoints_2d(kpts3d, camera, mask),
    }


# ----------------------------------------------------------------------------- language
def _largest_dimension(bbox3d: np.ndarray) -> str:
    ext = bbox3d[3:] - bbox3d[:3]  # x width, y height, z depth
    return ("width", "height", "depth")[int(np.argmax(ext))]


def _proportion_phrase(bbox3d: np.ndarray) -> str:
    w, h, d = bbox3d[3:] - bbox3d[:3]
    if h >= max(w, d):
        return "taller than it is wide"
    if w >= d:
        return "wider than it is tall"
    return "deeper than it is wide"


def _count(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def _plural(noun: str) -> str:
    if noun.endswith("f"):
        return noun[:-1] + "ves"
    return noun + ("es" if noun.endswith(("sh", "ch", "s")) else "s")


def describe(mesh: PartMesh, bbox3d: np.ndarray, camera: Camera) -> str:
    """One-sentence template description of parts, proportions and the view."""
    cat = mesh.category
    parts = [
        f"{_count(n)} {_plural(name)}" if n > 1 else f"a {name}"
        for name, n in zip(mesh.part_names, mesh.part_counts)
    ]
    if parts:
        part_text = (
            " with " + ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]
        )
    else:
        part_text = ""
    view = "from above" if camera.elevation_deg >= 30 else "from slightly above"
    side = "" if cat in SYMMETRIC else f" its {view_side(camera.azimuth_deg)} side,"
    return (
        f"{'An' if cat[:1] in 'aeiou' else 'A'} {cat}{part_text}; it is {_proportion_phrase(bbox3d)}."
        f" The camera sees{side} {view}."
    )


def question_answers(
    mesh: PartMesh, bbox3d: np.ndarray, camera: Camera, rng: np.random.Generator,
    categories: Sequence[str] = CATEGORIES,
) -> list[tuple[str, str, str]]:  # fmt: skip
    """(qa_type, question, answer) triples, category multiple choice first.

    Meshes without part attributes (ShapeNet) get the category, proportion and orientation
    questions only. ``categories`` is the pool of multiple-choice distractors.
    """
    cat, attrs = mesh.category, mesh.attributes
    others = [c for c in categories if c != cat]
    k = min(3, len(others))
    options = [cat] + [others[i] for i in rng.choice(len(others), k, replace=False)]
    options = [options[i] for i in rng.permutation(len(options))]
    qas = [
        (
            "category_mc",
            f"Which category does this object belong to? Options: {', '.join(options)}.",
            cat,
        ),
        ("category_open", "What kind of object is this?", cat),
    ]
    if cat in COUNT_QUESTIONS and COUNT_QUESTIONS[cat][0] in attrs:
        key, noun = COUNT_QUESTIONS[cat]
        qas.append(("part_count", f"How many {noun} does the {cat} have?", str(attrs[key])))
    key, q = YESNO_QUESTIONS.get(cat, (None, None))
    if q is not None and key in attrs:
        qas.append(("attribute", q, "yes" if attrs[key] else "no"))
    qas.append(
        (
            "proportion",
            f"Which dimension of the {cat} is the largest: width, height or depth?",
            _largest_dimension(bbox3d),
        )
    )
    if cat in SYMMETRIC:
        qas.append(
            (
                "orientation",
                "Is the camera looking down on the object steeply or from a low angle?",
                "steeply" if camera.elevation_deg >= 30 else "low angle",
            )
        )
    else:
        qas.append(
            (
                "orientation",
                f"Which side of the {cat} faces the camera: front, back, left or right?",
                view_side(camera.azimuth_deg),
            )
        )
    return qas
