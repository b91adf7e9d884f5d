"""Build the benchmark (Sec. 4.1): meshes -> points -> camera -> render -> labels -> Parquet.

    shapes | shapenet -> sampling -> cameras -> render -> annotate -> data/<profile>/

Output layout (open without our code: pyarrow / pandas / ``datasets.load_dataset("parquet")``)::

    data/<profile>/manifest.json                 counts, category histograms, content hash,
                                                 config, column notes, skipped meshes per reason
    data/<profile>/<split>/shard-00000.parquet   one row per object instance (``COLUMNS_DOC``)

``task``: ``full`` (the paper's: the whole cloud in the object frame) or ``view`` (the cloud
the image's camera sees, amodal targets in a view frame: ``pointvl.data.view``). A ``view``
row is the ``full`` row of the same instance with its 3D geometry, camera extrinsics and depth
moved to the view frame, plus the ``VIEW_COLUMNS``; images, 2D labels and language are equal.

Every instance has its own seed (``SeedSequence([seed, split, index])``); workers share
nothing, so the same config gives byte-identical shards whatever the number of workers, and
``content_hash`` (sha256 over the shards, each shard's own sha256 in ``shard_sha256``; the
loader checks them) is the same. The build writes into a temp folder next to the output and
renames it on success: an interrupted build never leaves a folder that looks complete, and
the next run removes the temp folder a killed one left (``pointvl.io``).

Faults: a model that cannot be used (``shapenet.MeshSkip``, e.g. an out-of-range face index,
or an empty render) is counted per reason and its slot takes a replacement (the next model
of the seeded order; procedural: another seed), so split sizes hold or the build fails
naming the shortfall (``DataError``). Any other exception stops the build and names the
instance. An ``--out`` folder that is neither empty nor one of our datasets is refused.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import multiprocessing as mp
import os
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OPEN3D_DISABLE_WEB_VISUALIZER", "true")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from PIL import Image  # noqa: E402

from pointvl.config import ConfigError, DataError  # noqa: E402
from pointvl.data import annotate, shapenet, shapes  # noqa: E402
from pointvl.data.cameras import sample_camera  # noqa: E402
from pointvl.data.dataset import content_hash, shard_hashes  # noqa: E402, F401
from pointvl.data.render import RENDERERS, Material, identity_appearance  # noqa: E402
from pointvl.data.sampling import farthest_point_sampling, sample_points  # noqa: E402
from pointvl.data.view import TASKS, VIEW_BOXES, view_geometry  # noqa: E402
from pointvl.geometry import iou_2d, reprojected_footprint  # noqa: E402
from pointvl.io import atomic_dir  # noqa: E402
from pointvl.schema import format_target  # noqa: E402

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
SOURCES = ("procedural", "shapenet")
DEPTH_SCALE = 10000.0
"""depth_png stores round(z_depth * DEPTH_SCALE) as uint16 (0.1 mm units, 0 = background)."""


@dataclass
class BuildDatasetConfig:
    """Section ``build_dataset`` of params.yaml: what the benchmark builder makes."""

    source: str = "procedural"
    """Mesh source: "procedural" (our parametric families) or "shapenet" (ShapeNetCore v2)."""
    shapenet_root: str = "data/ShapeNetCore.v2"
    """Root of a local ShapeNetCore v2 copy (taxonomy.json, <synset>/<model>/...); shapenet only."""
    categories: list[str] = field(default_factory=list)
    """Categories to keep (empty: all; procedural: of ``shapes.CATEGORIES``; shapenet: names)."""
    train_count: int = 4000
    """Instances in the train split (shapenet: at most this many models)."""
    test_count: int = 400
    """Instances in the test split (the paper: 11,347 train / 1,000 test)."""
    num_points: int = 1024
    """N: Poisson-disk samples per cloud (paper profile: 8192)."""
    poisson_init_factor: int = 5
    """Open3D sample_points_poisson_disk init_factor (the paper's 5)."""
    normal_knn: int = 30
    """k of the KNN normal estimation."""
    num_keypoints: int = 16
    """M: keypoints by farthest point sampling (the paper's 16)."""
    image_size: int = 112
    """Square image side in pixels (paper profile: 448)."""
    fov_deg: float = 40.0
    """Horizontal field of view of the pinhole camera."""
    elevation_min_deg: float = 10.0
    """Lowest camera elevation above the ground plane."""
    elevation_max_deg: float = 45.0
    """Highest camera elevation."""
    renderer: str = "raycast"
    """Renderer name in ``render.RENDERERS``."""
    store_depth: bool = True
    """Also store the z-depth map (uint16 PNG, ``DEPTH_SCALE`` units per unit)."""
    seed: int = 0
    """Base seed: instance i of split s uses SeedSequence([seed, s, i])."""
    workers: int = 2
    """Processes (1 = in-process, no pool)."""
    shard_size: int = 500
    """Rows per Parquet shard."""
    out_dir: str = "data/tiny"
    """Output folder (DVC out); the CLI's --out overrides it."""
    metrics: str = "results/metrics/build_dataset.json"
    """Stage metrics JSON: counts, skipped meshes per reason, timing."""
    figures_dir: str = "results/figures"
    """Where the stage writes dataset_reprojection.html and dataset_gallery.png."""
    figure_samples: int = 8
    """Test samples shown in those figures (0: no figures)."""
    task: str = "full"
    """"full": the paper's task; "view": visible cloud in, amodal targets out (data/view.py)."""
    view_radius: float = 0.35
    """view: radius ρ of the visible cloud about its centroid, in view units (scale)."""
    view_box: str = "tight"
    """view: bbox3d = AABB of the full cloud ("tight") or of the object box's corners
    ("object_box"), in the view frame."""

    def validate(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"build_dataset.task={self.task!r}: expected one of {TASKS}")
        if not 0.0 < self.view_radius <= 0.5:
            raise ConfigError(
                f"build_dataset.view_radius={self.view_radius}: expected in (0, 0.5] (the "
                "quantized cube is [-0.5, 0.5]^3)"
            )
        if self.view_box not in VIEW_BOXES:
            raise ConfigError(
                f"build_dataset.view_box={self.view_box!r}: expected one of {VIEW_BOXES}"
            )
        if self.source not in SOURCES:
            raise ConfigError(f"build_dataset.source={self.source!r}: expected one of {SOURCES}")
        if self.source == "procedural":
            bad = [c for c in self.categories if c not in shapes.CATEGORIES]
            if bad:
                raise ConfigError(
                    f"build_dataset.categories: unknown {bad}; accepted: {list(shapes.CATEGORIES)}"
                )
            if 0 < len(self.categories) < 4:
                raise ConfigError(
                    "build_dataset.categories: need >= 4 categories (multiple-choice questions)"
                )
        for name in ("train_count", "test_count", "figure_samples"):
            if getattr(self, name) < 0:
                raise ConfigError(f"build_dataset.{name}={getattr(self, name)}: expected >= 0")
        if self.train_count + self.test_count == 0:
            raise ConfigError("build_dataset.train_count + test_count = 0: expected >= 1")
        for name in ("num_points", "poisson_init_factor", "normal_knn", "workers", "shard_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"build_dataset.{name}={getattr(self, name)}: expected >= 1")
        if not 1 <= self.num_keypoints <= self.num_points:
            raise ConfigError(
                f"build_dataset.num_keypoints={self.num_keypoints}: expected 1..num_points"
            )
        if self.image_size < 16:
            raise ConfigError(f"build_dataset.image_size={self.image_size}: expected >= 16")
        if not 1.0 < self.fov_deg < 170.0:
            raise ConfigError(f"build_dataset.fov_deg={self.fov_deg}: expected in (1, 170)")
        if not -89.0 <= self.elevation_min_deg <= self.elevation_max_deg <= 89.0:
            raise ConfigError(
                "build_dataset.elevation_min_deg / elevation_max_deg: expected "
                "-89 <= min <= max <= 89"
            )
        if self.renderer not in RENDERERS:
            raise ConfigError(
                f"build_dataset.renderer={self.renderer!r}: expected one of {list(RENDERERS)}"
            )

    def category_list(self) -> list[str]:
        return list(self.categories) if self.categories else list(shapes.CATEGORIES)


# ----------------------------------------------------------------------------- one instance
@dataclass(frozen=True)
class InstanceSpec:
    split: str
    index: int
    category: str
    seed: int
    model: shapenet.ShapeNetModel | None = None
    attempt: int = 0
    """0: the planned instance of this slot; k > 0: its k-th replacement (``replacement``)."""


def spec_uid(spec: InstanceSpec) -> str:
    """The ``uid`` column of an instance: ``<split>-<index:06d>``, or ``<synset>/<model id>``."""
    if spec.model is None:
        return f"{spec.split}-{spec.index:06d}"
    return f"{spec.model.synset}/{spec.model.model_id}"


def instance_seed(base: int, split: str, index: int, attempt: int = 0) -> int:
    """SeedSequence([base, split, index]) (and ``attempt`` for a procedural replacement)."""
    ss = np.random.SeedSequence([base, SPLITS.index(split), index] + ([attempt] if attempt else []))
    return int(ss.generate_state(1, np.uint32)[0])


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _depth_png(depth: np.ndarray, store: bool) -> bytes:
    """z-depth as uint16 PNG in 1 / ``DEPTH_SCALE`` units (b"" when not stored)."""
    if not store:
        return b""
    q = np.round(depth * DEPTH_SCALE)
    if q.max(initial=0) > 65535:
        raise ValueError(f"depth {q.max() / DEPTH_SCALE:.3f} exceeds the uint16 PNG range")
    return _png(q.clip(0, 65535).astype(np.uint16))


def _view_columns(row, points, kpt_idx, depth, camera, mesh, cfg, quant_bins) -> dict:
    """The columns ``task: view`` replaces or adds (``pointvl.data.view``; 2D and text kept)."""
    g = view_geometry(
        points, kpt_idx, row["bbox3d"], depth, camera, mesh,
        cfg.num_points, cfg.normal_knn, cfg.view_radius, cfg.view_box,
    )  # fmt: skip
    labels = {k: row[k] for k in ("bbox2d", "description")} | {
        "kpts2d": row["kpts2d"].reshape(-1, 2),
        "bbox3d": g["bbox3d"],
        "kpts3d": g["kpts3d"],
    }
    return {
        "points": g["points"].astype(np.float32).reshape(-1),
        "depth_png": _depth_png(g["depth"], cfg.store_depth),
        "R": g["R"].reshape(-1),
        "t": g["t"],
        "bbox3d": g["bbox3d"],
        "kpts3d": g["kpts3d"].reshape(-1),
        "targets": [format_target(labels | {"answer": a}, quant_bins) for a in row["answers"]],
        "bbox3d_object": row["bbox3d"],
        "kpts3d_visible": g["kpts3d_visible"].tolist(),
        "view_rotation": g["frame"].rotation.reshape(-1),
        "view_origin": g["frame"].origin,
        "view_scale": float(g["frame"].scale),
        "view_clamped": bool(g["clamped"]),
        "visible_pixels": int(g["visible_pixels"]),
    }


def _instance_mesh(spec: InstanceSpec, rng: np.random.Generator) -> tuple:
    """The normalised mesh of ``spec`` and its normalisation: (mesh, centre (3,), scale).

    Procedural: the category's family drawn from ``rng`` (its first draws); ShapeNet: the
    model loaded from disk (raises ``MeshSkip``), ``rng`` untouched.
    """
    if spec.model is None:
        raw = shapes.FAMILIES[spec.category](rng)
        mesh, centre, scale = shapes.normalize(raw)
    else:
        mesh, centre, scale = shapenet.load_mesh(spec.model)  # raises MeshSkip
    return mesh, centre, scale


def _render_instance(mesh, cfg: BuildDatasetConfig, category: str, rng, uid: str) -> tuple:
    """Draw the camera, then the material, from ``rng`` and render ``mesh``: (camera, out).

    ``out.mask`` (H, W) bool, ``out.depth`` (H, W) z-depth. An empty render raises
    ``MeshSkip("degenerate")``.
    """
    camera = sample_camera(
        category, rng, cfg.image_size, cfg.fov_deg,
        (cfg.elevation_min_deg, cfg.elevation_max_deg),
    )  # fmt: skip
    out = RENDERERS[cfg.renderer]().render(mesh, camera, Material.for_mesh(mesh, rng))
    if not out.mask.any():
        raise shapenet.MeshSkip("degenerate", f"{uid}: empty render")
    return camera, out


def _instance_labels(mesh, points, camera, mask, cfg, quant_bins, rng, pool) -> tuple:
    """Keypoints and labels: (kpt_idx (m,), geo, description, qas, targets).

    ``points`` (N, 6); ``kpt_idx`` indexes the farthest-point-sampled keypoints; ``geo`` the
    2D / 3D geometry labels (``annotate.geometry_labels``); ``qas`` (type, question, answer)
    triples drawn from ``rng`` with distractors from ``pool``; one target string per answer.
    """
    kpt_idx = farthest_point_sampling(points[:, :3], cfg.num_keypoints)
    geo = annotate.geometry_labels(points, kpt_idx, camera, mask)
    description = annotate.describe(mesh, geo["bbox3d"], camera)
    qas = annotate.question_answers(mesh, geo["bbox3d"], camera, rng, pool)
    targets = [
        format_target({**geo, "answer": a, "description": description}, quant_bins)
        for _, _, a in qas
    ]
    return kpt_idx, geo, description, qas, targets


def _camera_columns(camera, out, rgb: np.ndarray, cfg: BuildDatasetConfig) -> dict:
    """The image, mask, depth and camera columns of a row (K (9,), R (9,), t (3,))."""
    return {
        "image_png": _png(rgb),
        "mask_png": _png(out.mask),
        "depth_png": _depth_png(out.depth, cfg.store_depth),
        "K": camera.K.reshape(-1),
        "R": camera.R.reshape(-1),
        "t": camera.t,
        "width": camera.width,
        "height": camera.height,
        "azimuth_deg": camera.azimuth_deg,
        "elevation_deg": camera.elevation_deg,
    }


def _label_columns(mesh, geo: dict, description: str, qas: list, targets: list[str]) -> dict:
    """The label, language and part columns of a row (kpts2d (2m,), kpts3d (3m,))."""
    return {
        "bbox2d": geo["bbox2d"],
        "bbox3d": geo["bbox3d"],
        "kpts2d": geo["kpts2d"].reshape(-1),
        "kpts3d": geo["kpts3d"].reshape(-1),
        "description": description,
        "qa_types": [q[0] for q in qas],
        "questions": [q[1] for q in qas],
        "answers": [q[2] for q in qas],
        "targets": targets,
        "parts": list(mesh.part_names),
        "part_counts": list(mesh.part_counts),
        "attributes": json.dumps(mesh.attributes, sort_keys=True),
    }


def make_instance(
    spec: InstanceSpec,
    cfg: BuildDatasetConfig,
    quant_bins: int,
    option_pool: list[str] | None = None,
) -> dict[str, Any]:
    """Everything about one object: a row of the dataset (continuous geometry + targets).

    ``option_pool``: categories the multiple-choice question draws distractors from
    (default: ``cfg.category_list()``). The instance's ``rng`` is drawn in a fixed order:
    mesh family, camera, material, questions.
    """
    rng = np.random.default_rng(spec.seed)
    mesh, centre, scale = _instance_mesh(spec, rng)
    uid = spec_uid(spec)
    points = sample_points(mesh, cfg.num_points, spec.seed, cfg.poisson_init_factor, cfg.normal_knn)
    camera, out = _render_instance(mesh, cfg, spec.category, rng, uid)
    rgb = identity_appearance(out, "")
    pool = option_pool or cfg.category_list()
    kpt_idx, geo, description, qas, targets = _instance_labels(
        mesh, points, camera, out.mask, cfg, quant_bins, rng, pool
    )
    row = {
        "uid": uid,
        "split": spec.split,
        "index": spec.index,
        "category": spec.category,
        "points": points.reshape(-1),  # (N * 6,)
        **_camera_columns(camera, out, rgb, cfg),
        "norm_center": np.asarray(centre, np.float64),
        "norm_scale": float(scale),
        **_label_columns(mesh, geo, description, qas, targets),
    }
    if cfg.task == "view":  # the visible cloud is the back-projection of the stored depth
        depth = np.round(out.depth * DEPTH_SCALE) / DEPTH_SCALE
        row |= _view_columns(row, points, kpt_idx, depth, camera, mesh, cfg, quant_bins)
    return row


def _schema(cfg: BuildDatasetConfig) -> pa.Schema:
    f64, m = pa.float64(), cfg.num_keypoints
    view = [
        ("bbox3d_object", pa.list_(f64, 6)),
        ("kpts3d_visible", pa.list_(pa.bool_(), m)),
        ("view_rotation", pa.list_(f64, 9)),
        ("view_origin", pa.list_(f64, 3)),
        ("view_scale", f64),
        ("view_clamped", pa.bool_()),
        ("visible_pixels", pa.int64()),
    ]
    return pa.schema(
        [
            ("uid", pa.string()),
            ("split", pa.string()),
            ("index", pa.int64()),
            ("category", pa.string()),
            ("points", pa.list_(pa.float32(), cfg.num_points * 6)),
            ("image_png", pa.binary()),
            ("mask_png", pa.binary()),
            ("depth_png", pa.binary()),
            ("K", pa.list_(f64, 9)),
            ("R", pa.list_(f64, 9)),
            ("t", pa.list_(f64, 3)),
            ("width", pa.int64()),
            ("height", pa.int64()),
            ("azimuth_deg", f64),
            ("elevation_deg", f64),
            ("norm_center", pa.list_(f64, 3)),
            ("norm_scale", f64),
            ("bbox2d", pa.list_(f64, 4)),
            ("bbox3d", pa.list_(f64, 6)),
            ("kpts2d", pa.list_(f64, 2 * m)),
            ("kpts3d", pa.list_(f64, 3 * m)),
            ("description", pa.string()),
            ("qa_types", pa.list_(pa.string())),
            ("questions", pa.list_(pa.string())),
            ("answers", pa.list_(pa.string())),
            ("targets", pa.list_(pa.string())),
            ("parts", pa.list_(pa.string())),
            ("part_counts", pa.list_(pa.int64())),
            ("attributes", pa.string()),
        ]
        + (view if cfg.task == "view" else [])
    )


COLUMNS_DOC = {
    "points": "(N, 6) float32 row-major: x, y, z, nx, ny, nz in the normalized object frame",
    "image_png / mask_png / depth_png": "PNG bytes: RGB uint8, mask 1-bit, z-depth uint16",
    "K, R, t": "3x3 row-major intrinsics, 3x3 rotation, (3,) translation; X_c = R X + t (OpenCV)",
    "bbox2d": "[x1, y1, x2, y2] continuous pixels of the mask (pixel (i, j) = [j, j+1]x[i, i+1])",
    "bbox3d": "[xmin, ymin, zmin, xmax, ymax, zmax] AABB of the cloud, object frame",
    "kpts2d / kpts3d": "(M, 2) pixels / (M, 3) object frame, row-major flattened",
    "norm_center / norm_scale": "x_normalized = (x_source - norm_center) * norm_scale",
    "questions / answers / qa_types / targets": "aligned lists; targets[k] = format_target "
    "JSON with answer = answers[k]",
}
VIEW_COLUMNS_DOC = {
    "points": "(N, 6) float32: x, y, z, nx, ny, nz of the points the camera sees (back-projected "
    "depth pixels, FPS-thinned), view frame",
    "view_rotation / view_origin / view_scale": "x_view = view_scale * view_rotation @ "
    "(x_object - view_origin); rotation rows: camera right, up, toward the camera (horizontal)",
    "K, R, t": "X_c = R X + t with X in the view frame: the camera coordinates times view_scale "
    "(the same pixels)",
    "depth_png": "z-depth of those camera coordinates (view units), uint16 PNG",
    "bbox3d": "amodal: [xmin, ymin, zmin, xmax, ymax, zmax] of the full object, view frame "
    "(config view_box: tight = the full cloud's AABB; object_box = AABB of bbox3d_object's "
    "corners)",
    "kpts3d": "amodal: the full cloud's (M, 3) FPS keypoints, view frame; kpts3d_visible: "
    "seen by the camera",
    "bbox3d_object": "the full task's bbox3d (object frame)",
    "view_clamped": "the scale was reduced to keep the labels in [-0.5, 0.5]^3",
    "visible_pixels": "foreground pixels back-projected (< N: the FPS order repeats)",
}
VIEW_KEYS = ("task", "view_radius", "view_box")


# ----------------------------------------------------------------------------- the plan
MAX_RESEEDS = 3
"""procedural: a skipped slot (an empty render) is rebuilt with up to 3 other seeds."""


@dataclass
class Plan:
    """What to build: the planned instances in output order and where replacements come from."""

    specs: list[InstanceSpec]
    option_pool: list[str]
    """Categories the multiple-choice questions draw distractors from."""
    reserve: list[shapenet.ShapeNetModel] = field(default_factory=list)
    """shapenet: models not drawn for a slot, in the seeded order; a skipped model's slot takes
    the next one (procedural slots are reseeded instead)."""
    ignored: dict[str, list[str]] = field(default_factory=dict)
    """shapenet: folders ``shapenet.list_models`` ignored, per reason."""


def plan(cfg: BuildDatasetConfig) -> Plan:
    """All instance specs in output order, the question category pool and the reserve."""
    counts = {"train": cfg.train_count, "test": cfg.test_count}
    if cfg.source == "procedural":
        cats = cfg.category_list()
        specs = [
            InstanceSpec(split, i, cats[i % len(cats)], instance_seed(cfg.seed, split, i))
            for split in SPLITS
            for i in range(counts[split])
        ]
        return Plan(specs, cats)
    listing = shapenet.list_models(cfg.shapenet_root)
    models = listing.models
    if cfg.categories:
        known = sorted({m.category for m in models})
        unknown = sorted(set(cfg.categories) - set(known))
        if unknown:
            raise ConfigError(
                f"build_dataset.categories: {unknown} not among the categories of "
                f"{cfg.shapenet_root} ({known})"
            )
        models = [m for m in models if m.category in set(cfg.categories)]
    order = [models[j] for j in np.random.default_rng(cfg.seed).permutation(len(models))]
    drawn = {"test": order[: cfg.test_count]}
    drawn["train"] = order[cfg.test_count : cfg.test_count + cfg.train_count]
    specs = [
        InstanceSpec(split, i, m.category, instance_seed(cfg.seed, split, i), m)
        for split in SPLITS
        for i, m in enumerate(drawn[split])
    ]
    reserve = order[cfg.test_count + cfg.train_count :]
    return Plan(specs, sorted({m.category for m in models}), reserve, listing.ignored)


def plan_instances(cfg: BuildDatasetConfig) -> tuple[list[InstanceSpec], list[str]]:
    """All instance specs in output order, and the category pool of the questions."""
    p = plan(cfg)
    return p.specs, p.option_pool


def replacement(spec: InstanceSpec, cfg: BuildDatasetConfig, reserve) -> InstanceSpec | None:
    """The next try for a skipped slot: the next reserve model (shapenet) or another seed
    (procedural, up to ``MAX_RESEEDS``); None when there is none left."""
    if spec.model is None:
        if spec.attempt >= MAX_RESEEDS:
            return None
        a = spec.attempt + 1
        return dataclasses.replace(
            spec, seed=instance_seed(cfg.seed, spec.split, spec.index, a), attempt=a
        )
    model = next(reserve, None)
    if model is None:
        return None
    return dataclasses.replace(spec, category=model.category, model=model, attempt=spec.attempt + 1)


# ----------------------------------------------------------------------------- workers
@dataclass(frozen=True)
class Failure:
    """An unexpected exception while building one instance (not a known data fault)."""

    error: str
    traceback: str


_WORKER_CFG: tuple | None = None


def _init_worker(cfg: BuildDatasetConfig, quant_bins: int, pool: list[str]) -> None:
    global _WORKER_CFG
    _WORKER_CFG = (cfg, quant_bins, pool)


def _run(spec: InstanceSpec) -> tuple[InstanceSpec, dict | None, str | Failure | None]:
    """(spec, row, None), (spec, None, skip reason) or (spec, None, Failure)."""
    cfg, quant_bins, pool = _WORKER_CFG
    try:
        return spec, make_instance(spec, cfg, quant_bins, pool), None
    except shapenet.MeshSkip as err:
        return spec, None, err.reason
    except Exception as err:  # noqa: BLE001 - sent back whole; the build stops on it
        return spec, None, Failure(f"{type(err).__name__}: {err}", traceback.format_exc())


def describe_spec(spec: InstanceSpec) -> str:
    """'train/3 (chair)' or 'train/3 (chair, 03001627/abc)' for messages."""
    model = f", {spec.model.synset}/{spec.model.model_id}" if spec.model is not None else ""
    return f"{spec.split}/{spec.index} ({spec.category}{model}, attempt {spec.attempt})"


@contextmanager
def _mapper(cfg: BuildDatasetConfig, quant_bins: int, option_pool: list[str]):
    """An ordered ``map(_run, specs)``: in-process (workers = 1) or a spawn pool."""
    if cfg.workers == 1:
        _init_worker(cfg, quant_bins, option_pool)
        yield lambda specs: map(_run, specs)
        return
    # spawn (no fork after OpenMP), one OpenMP thread per worker process
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        ctx = mp.get_context("spawn")
        with ctx.Pool(cfg.workers, _init_worker, (cfg, quant_bins, option_pool)) as pool:
            yield lambda specs: pool.imap(_run, specs, chunksize=4)
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old


def built_rows(cfg: BuildDatasetConfig, p: Plan, run, skipped: Counter, bar) -> Iterator:
    """(spec, row) of every built instance; skipped slots get replacements in later rounds.

    Rows come in plan order, then each round's replacements in slot order: the same config
    gives the same rows in the same order whatever the number of workers. A known data fault
    (``MeshSkip``) is counted in ``skipped``; any other exception stops the build, naming
    the instance. A slot with no replacement left ends as a shortfall (``check_counts``).
    """
    pending, reserve = p.specs, iter(p.reserve)
    while pending:
        retry = []
        for spec, row, reason in run(pending):
            bar.update()
            if isinstance(reason, Failure):
                err = RuntimeError(
                    f"build_dataset: instance {describe_spec(spec)} failed: {reason.error} "
                    "(only mesh faults are skipped; the build stops)"
                )
                err.add_note(f"worker traceback:\n{reason.traceback}")
                raise err
            if row is not None:
                yield spec, row
                continue
            log.warning("skipped %s: %s", describe_spec(spec), reason)
            skipped[reason] += 1
            nxt = replacement(spec, cfg, reserve)
            if nxt is not None:
                retry.append(nxt)
        bar.total += len(retry)
        pending = retry


def check_counts(cfg: BuildDatasetConfig, hist: dict[str, Counter], skipped: Counter) -> None:
    """``DataError`` naming the shortfall when a split has fewer instances than asked."""
    for split in SPLITS:
        want, got = getattr(cfg, f"{split}_count"), sum(hist[split].values())
        if got < want:
            more = (
                f"no model of {cfg.shapenet_root} was left to replace them; lower "
                f"{split}_count or add models"
                if cfg.source == "shapenet"
                else f"each slot was retried with {MAX_RESEEDS} other seeds"
            )
            raise DataError(
                f"build_dataset: split {split!r} has {got} of {want} instances ({want - got} "
                f"short): {sum(skipped.values())} skipped {dict(sorted(skipped.items()))}, {more}"
            )


# ----------------------------------------------------------------------------- writing
class ShardWriter:
    """Rows -> ``<tmp>/<split>/shard-NNNNN.parquet`` of ``shard_size`` rows each."""

    def __init__(self, root: Path, schema: pa.Schema, shard_size: int):
        self.root, self.schema, self.shard_size = root, schema, shard_size
        self.buffers: dict[str, list[dict]] = {s: [] for s in SPLITS}
        self.shards: dict[str, list[str]] = {s: [] for s in SPLITS}

    def add(self, split: str, row: dict) -> None:
        self.buffers[split].append(row)
        if len(self.buffers[split]) >= self.shard_size:
            self.flush(split)

    def flush(self, split: str) -> None:
        rows = self.buffers[split]
        if not rows:
            return
        (self.root / split).mkdir(exist_ok=True)
        name = f"{split}/shard-{len(self.shards[split]):05d}.parquet"
        table = pa.Table.from_pylist(rows, schema=self.schema)
        pq.write_table(table, self.root / name, compression="zstd", row_group_size=len(rows))
        self.shards[split].append(name)
        self.buffers[split] = []


def _manifest_config(cfg: BuildDatasetConfig) -> dict:
    """The config as the manifest records it: workers and paths do not change the data.

    A ``full`` build leaves out the ``task`` keys, so its config block is the one written
    before the option existed.
    """
    config = dataclasses.asdict(cfg) | {"workers": None, "out_dir": None, "metrics": None}
    config |= {"figures_dir": None, "figure_samples": None}
    return {k: v for k, v in config.items() if cfg.task == "view" or k not in VIEW_KEYS}


def _view_summary(stats: list[tuple]) -> dict:
    """Manifest block of a view build: counts of clamped / padded rows, means."""
    if not stats:
        return {"clamped": 0, "padded": 0, "visible_pixels_mean": None, "kpts3d_occluded": None}
    clamped, padded, pixels, occluded = zip(*stats)
    return {
        "clamped": int(sum(clamped)),
        "padded": int(sum(padded)),
        "visible_pixels_mean": round(float(np.mean(pixels)), 3),
        "kpts3d_occluded": round(float(np.mean(occluded)), 6),
    }


def _gt_rpc(row: dict) -> float:
    box, ok = reprojected_footprint(
        row["bbox3d"], row["K"].reshape(3, 3), row["R"].reshape(3, 3), row["t"]
    )
    return float(iou_2d(box, row["bbox2d"])) if ok else 0.0


DATASET_NAME = "pointvl-3d benchmark"
"""``manifest.json``'s ``name``: what makes a folder one of our datasets."""


def check_out_dir(out: str | os.PathLike) -> None:
    """``out`` may be replaced only if absent, empty or one of our datasets (``ConfigError``)."""
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or out.is_symlink():
        raise ConfigError(f"--out {out}: exists and is not a folder; refusing to replace it")
    if not any(out.iterdir()):
        return
    try:
        name = json.loads((out / "manifest.json").read_text()).get("name")
    except (OSError, ValueError, AttributeError):
        name = None
    if name != DATASET_NAME:
        raise ConfigError(
            f"--out {out}: the folder is not empty and is not a built dataset (no manifest.json "
            f"named {DATASET_NAME!r}); refusing to replace it: choose another folder or empty it"
        )


def _manifest(cfg, p: Plan, profile, quant_bins, writer, hist, skipped, rpc, tmp) -> dict:
    hashes = shard_hashes(tmp)
    manifest = {
        "name": DATASET_NAME,
        "profile": profile,
        "format": "parquet",
        "splits": {
            s: {
                "count": sum(hist[s].values()),
                "shards": writer.shards[s],
                "category_histogram": dict(sorted(hist[s].items())),
            }
            for s in SPLITS
        },
        "skipped": dict(sorted(skipped.items())),
        "quant_bins": quant_bins,
        "points_shape": [cfg.num_points, 6],
        "num_keypoints": cfg.num_keypoints,
        "image_size": cfg.image_size,
        "depth_scale": DEPTH_SCALE,
        # workers and paths do not change the data: kept out of the manifest (and its bytes)
        "config": _manifest_config(cfg),
        "columns": COLUMNS_DOC | (VIEW_COLUMNS_DOC if cfg.task == "view" else {}),
        "gt_rpc_mean": round(float(np.mean(rpc)), 6) if rpc else None,
        "shard_sha256": hashes,
        "content_hash": content_hash(tmp, hashes),
    }
    if cfg.source == "shapenet":
        manifest["ignored"] = {k: len(v) for k, v in p.ignored.items()}
    return manifest


# ----------------------------------------------------------------------------- the build
def _view_stat(row: dict, num_points: int) -> tuple:
    """One row's view statistics: (clamped, padded, visible pixels, occluded keypoint share)."""
    return (
        row["view_clamped"],
        row["visible_pixels"] < num_points,
        row["visible_pixels"],
        1.0 - float(np.mean(row["kpts3d_visible"])),
    )


def _write_rows(cfg: BuildDatasetConfig, p: Plan, run, skipped: Counter, bar, writer) -> tuple:
    """Build every planned row and write it to its split's shards (all flushed at the end).

    Returns (hist, rpc, view_stats): per split a ``Counter`` of categories, each row's
    ground-truth reprojection IoU, and (``task: view``) each row's ``_view_stat``.
    """
    hist: dict[str, Counter] = {s: Counter() for s in SPLITS}
    rpc: list[float] = []
    view_stats: list[tuple] = []
    for spec, row in built_rows(cfg, p, run, skipped, bar):
        hist[spec.split][spec.category] += 1
        rpc.append(_gt_rpc(row))
        if cfg.task == "view":
            view_stats.append(_view_stat(row, cfg.num_points))
        writer.add(spec.split, row)
    for split in SPLITS:
        writer.flush(split)
    return hist, rpc, view_stats


def _build_metrics(
    cfg: BuildDatasetConfig, manifest: dict, profile: str, skipped: Counter, elapsed: float
) -> dict:
    """The stage's metrics: counts, skips, throughput over ``elapsed`` seconds, hashes."""
    done = sum(m["count"] for m in manifest["splits"].values())
    return {
        "profile": profile,
        "instances": done,
        "train": manifest["splits"]["train"]["count"],
        "test": manifest["splits"]["test"]["count"],
        "skipped": manifest["skipped"],
        "skipped_total": sum(skipped.values()),
        **({"ignored": manifest["ignored"]} if "ignored" in manifest else {}),
        "seconds": round(elapsed, 3),
        "instances_per_s": round(done / elapsed, 3) if elapsed > 0 else None,
        "instances_per_s_per_core": round(done / elapsed / cfg.workers, 3) if elapsed > 0 else None,
        "workers": cfg.workers,
        "gt_rpc_mean": manifest["gt_rpc_mean"],
        "content_hash": manifest["content_hash"],
    } | ({"view": manifest["view"]} if "view" in manifest else {})


def build(
    cfg: BuildDatasetConfig,
    out_dir: str | os.PathLike,
    quant_bins: int,
    profile: str = "",
    progress: bool = True,
) -> dict:
    """Build the dataset into ``out_dir`` (atomically) and return the stage's metrics.

    Raises ``ConfigError`` before any work when ``out_dir`` is a non-empty folder that is not
    one of our datasets, ``DataError`` when a split ends short of its count, and the first
    unexpected per-instance exception (naming the instance); nothing is left behind then.
    """
    from tqdm import tqdm

    cfg.validate()
    out = Path(out_dir)
    check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    p = plan(cfg)
    skipped: Counter = Counter()
    bar = tqdm(total=len(p.specs), desc="build_dataset", disable=not progress, mininterval=1)
    # built in a temporary folder that replaces ``out`` only when complete (pointvl.io)
    with atomic_dir(out) as tmp, bar, _mapper(cfg, quant_bins, p.option_pool) as run:
        writer = ShardWriter(tmp, _schema(cfg), cfg.shard_size)
        hist, rpc, view_stats = _write_rows(cfg, p, run, skipped, bar, writer)
        check_counts(cfg, hist, skipped)
        manifest = _manifest(cfg, p, profile, quant_bins, writer, hist, skipped, rpc, tmp)
        if cfg.task == "view":
            manifest["view"] = _view_summary(view_stats)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return _build_metrics(cfg, manifest, profile, skipped, time.perf_counter() - t0)


def build_instances(cfg: BuildDatasetConfig, quant_bins: int, uids: list[str]) -> list[dict]:
    """The rows with these ``uids``, exactly as ``build`` writes them under ``cfg`` (same plan,
    seeds and question pool), without building the rest. ``KeyError`` names a uid the plan
    does not hold; ShapeNet meshes that ``build`` would skip raise ``MeshSkip``."""
    specs, pool = plan_instances(cfg)
    by_uid = {spec_uid(s): s for s in specs}
    missing = [u for u in uids if u not in by_uid]
    if missing:
        raise KeyError(f"{missing[:3]}: not in the plan of this build config "
                       f"({len(by_uid)} instances, e.g. {next(iter(by_uid), None)})")  # fmt: skip
    return [make_instance(by_uid[u], cfg, quant_bins, pool) for u in uids]
