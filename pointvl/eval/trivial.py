"""Trivial 3D predictors: what a model gets without looking at anything but box statistics.

Every 3D table shows them beside the models, so a reader sees what was learned beyond
them. Each predictor returns completion *texts* written by ``schema.format_target``, so it
is scored by exactly the same parser and metric path as a model.

- ``train_mean``:          bbox3d = the training-mean 3D box; kpts3d = the training-mean
                           keypoint set (per index).
- ``centroid_mean_size``:  bbox3d = the test cloud's centroid ± half the training-mean box
                           size; kpts3d = the training-mean keypoint offsets from the box
                           centre, placed around the centroid. Needs each sample's points.
- ``cloud_aabb``:          bbox3d = the axis-aligned box of the test cloud itself (min / max of
                           its points); kpts3d = the training-mean keypoint positions relative
                           to the box (in [0, 1]^3), placed in that box. No learning at all:
                           the ceiling of IoU3D on our data, where the GT box *is* the AABB
                           of the object (only the quantization keeps it below 1).
- ``cloud_fps``:           bbox3d = the cloud's AABB; kpts3d = farthest point sampling on
                           the cloud, started at the point farthest from its centroid
                           (``sampling.farthest_point_sampling``, the rule that made the GT
                           keypoints). In ``full`` it recovers the GT keypoints exactly: the
                           ceiling of every keypoint metric. In ``view`` it sees only the
                           visible points: the floor an amodal model must beat.
- ``box_centre``:          bbox3d = the training-mean box; all M keypoints at its centre.
                           Keypoint containment (KPA-3D) is near 1.0 because the centre of
                           the normalized frame lies in almost every box, while PCK is low
                           and the spread (collapse diagnostic) is 0.

The ``cloud`` is the model's input cloud: the whole object in ``full``, the points the camera
sees in ``view`` (``pointvl.data.view``). ``probes`` measures the same predictors without
quantization, on the dataset's own columns: how much of the 3D targets the input gives away.

Only the 3D fields are predicted. The other fields are copied from the ground truth:
``bbox2d`` (so RPC is computed against the GT 2D box, the rule used for the point-only
baselines), ``kpts2d``, ``answer``, ``description``. Their 2D and language metrics are
therefore meaningless and must not be reported: ``REPORTED_METRICS`` lists the ones that are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np

from pointvl.config import Range
from pointvl.schema import DEFAULT_QUANT_BINS, format_target

__all__ = [
    "EvalTrivialConfig",
    "PREDICTORS",
    "REPORTED_METRICS",
    "box_centre",
    "centroid_mean_size",
    "cloud_aabb",
    "cloud_fps",
    "evaluate_trivial",
    "probes",
    "train_mean",
    "trivial_completions",
    "write_completion",
]

REPORTED_METRICS = ("iou3d", "kpa3d", "rpc", "pck3d", "chamfer3d", "spread3d", "parse_fail")


def _stack(targets: Sequence[Mapping[str, Any]], key: str, shape: tuple) -> np.ndarray:
    if not targets:
        raise ValueError("trivial predictors need at least one training target")
    arrs = [np.asarray(t[key], dtype=np.float64) for t in targets]
    for a in arrs:
        if a.shape[1:] != shape[1:] or a.ndim != len(shape):
            raise ValueError(f"target[{key!r}]: expected shape {shape}, got {a.shape}")
    try:
        return np.stack(arrs)  # (B, ...)
    except ValueError as err:
        raise ValueError(f"target[{key!r}] differ in shape across samples") from err


def _clouds(points: Sequence[Any] | None, test: Sequence, fn: str) -> list[np.ndarray]:
    """One (N, 3) float64 XYZ array per test sample, or a ValueError naming ``fn``."""
    if points is None or len(points) != len(test):
        raise ValueError(f"{fn}: pass points, one (N, 3) cloud per test sample")
    out = []
    for cloud in points:
        xyz = np.asarray(cloud, dtype=np.float64)
        if xyz.ndim != 2 or xyz.shape[1] < 3 or xyz.shape[0] == 0:
            raise ValueError(f"{fn}: a cloud must be (N, 3), got {xyz.shape}")
        out.append(xyz[:, :3])
    return out


def write_completion(
    box3d: np.ndarray, kpts3d: np.ndarray, target: Mapping[str, Any], quant_bins: int
) -> str:
    """A completion with the predicted 3D fields and every other field copied from GT."""
    sample = {
        "answer": str(target["answer"]),
        "description": str(target["description"]),
        "bbox2d": target["bbox2d"],
        "kpts2d": target["kpts2d"],
        "bbox3d": box3d,
        "kpts3d": kpts3d,
    }
    return format_target(sample, quant_bins)


def _mean_box_and_offsets(train: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    boxes = _stack(train, "bbox3d", (6,))  # (B, 6)
    kpts = _stack(train, "kpts3d", ("M", 3))  # (B, M, 3)
    centres = 0.5 * (boxes[:, :3] + boxes[:, 3:])  # (B, 3)
    offsets = (kpts - centres[:, None, :]).mean(0)  # (M, 3)
    return boxes.mean(0), offsets


def train_mean(
    train: Sequence[Mapping[str, Any]],
    test: Sequence[Mapping[str, Any]],
    quant_bins: int = DEFAULT_QUANT_BINS,
    points: Sequence[Any] | None = None,
) -> list[str]:
    """The training-mean 3D box and the training-mean keypoint set, for every test sample."""
    box = _stack(train, "bbox3d", (6,)).mean(0)  # (6,)
    kpts = _stack(train, "kpts3d", ("M", 3)).mean(0)  # (M, 3)
    return [write_completion(box, kpts, t, quant_bins) for t in test]


def centroid_mean_size(
    train: Sequence[Mapping[str, Any]],
    test: Sequence[Mapping[str, Any]],
    quant_bins: int = DEFAULT_QUANT_BINS,
    points: Sequence[Any] | None = None,
) -> list[str]:
    """A box of the training-mean size centred on each test cloud's centroid.

    ``points[i]`` is sample i's point cloud (N, 3) in the object frame (the XYZ columns of
    the model's input). Keypoints: the training-mean offsets from the box centre.
    """
    clouds = _clouds(points, test, "centroid_mean_size")
    mean_box, offsets = _mean_box_and_offsets(train)  # (6,), (M, 3)
    half = 0.5 * (mean_box[3:] - mean_box[:3])  # (3,)
    out = []
    for t, xyz in zip(test, clouds):
        c = xyz.mean(0)  # (3,)
        out.append(
            write_completion(np.concatenate([c - half, c + half]), c + offsets, t, quant_bins)
        )
    return out


def cloud_aabb(
    train: Sequence[Mapping[str, Any]],
    test: Sequence[Mapping[str, Any]],
    quant_bins: int = DEFAULT_QUANT_BINS,
    points: Sequence[Any] | None = None,
) -> list[str]:
    """The test cloud's own axis-aligned box; keypoints at the training-mean relative positions.

    Relative position of a keypoint: (k − box_min) / (box_max − box_min), in [0, 1]^3.
    """
    clouds = _clouds(points, test, "cloud_aabb")
    boxes = _stack(train, "bbox3d", (6,))  # (B, 6)
    kpts = _stack(train, "kpts3d", ("M", 3))  # (B, M, 3)
    size = np.maximum(boxes[:, 3:] - boxes[:, :3], 1e-9)  # (B, 3)
    rel = ((kpts - boxes[:, None, :3]) / size[:, None, :]).mean(0)  # (M, 3)
    out = []
    for t, xyz in zip(test, clouds):
        lo, hi = xyz.min(0), xyz.max(0)  # (3,), (3,)
        out.append(write_completion(np.concatenate([lo, hi]), lo + rel * (hi - lo), t, quant_bins))
    return out


def cloud_fps(
    train: Sequence[Mapping[str, Any]],
    test: Sequence[Mapping[str, Any]],
    quant_bins: int = DEFAULT_QUANT_BINS,
    points: Sequence[Any] | None = None,
) -> list[str]:
    """The test cloud's own AABB, and M keypoints by farthest point sampling on the cloud."""
    from pointvl.data.sampling import farthest_point_sampling

    clouds = _clouds(points, test, "cloud_fps")
    m = _stack(train, "kpts3d", ("M", 3)).shape[1]
    out = []
    for t, xyz in zip(test, clouds):
        kpts = xyz[farthest_point_sampling(xyz, min(m, len(xyz)))]  # (M, 3)
        out.append(write_completion(np.concatenate([xyz.min(0), xyz.max(0)]), kpts, t, quant_bins))
    return out


def box_centre(
    train: Sequence[Mapping[str, Any]],
    test: Sequence[Mapping[str, Any]],
    quant_bins: int = DEFAULT_QUANT_BINS,
    points: Sequence[Any] | None = None,
) -> list[str]:
    """The training-mean box with all M keypoints at its centre (the collapse probe)."""
    box = _stack(train, "bbox3d", (6,)).mean(0)  # (6,)
    m = _stack(train, "kpts3d", ("M", 3)).shape[1]
    kpts = np.repeat((0.5 * (box[:3] + box[3:]))[None], m, axis=0)  # (M, 3)
    return [write_completion(box, kpts, t, quant_bins) for t in test]


PREDICTORS: dict[str, Callable[..., list[str]]] = {
    "trivial: train-mean box": train_mean,
    "trivial: centroid + mean size": centroid_mean_size,
    "trivial: cloud AABB (no learning)": cloud_aabb,
    "trivial: keypoints at box centre": box_centre,
    "trivial: cloud AABB + FPS keypoints (no learning)": cloud_fps,
}


def trivial_completions(
    train: Sequence[Mapping[str, Any]],
    test: Sequence[Mapping[str, Any]],
    quant_bins: int = DEFAULT_QUANT_BINS,
    points: Sequence[Any] | None = None,
) -> dict[str, list[str]]:
    """All trivial predictors -> {row label: completion texts}; those needing clouds only with
    ``points``."""
    return {
        name: fn(train, test, quant_bins, points)
        for name, fn in PREDICTORS.items()
        if points is not None or fn not in (centroid_mean_size, cloud_aabb, cloud_fps)
    }


# ----------------------------------------------------------------------------- probes
PROBE_COLUMNS = ("points", "bbox3d", "kpts3d")
VIEW_PROBE_COLUMNS = ("bbox3d_object", "kpts3d_visible", "view_rotation", "view_origin",
                      "view_scale")  # fmt: skip


def probe_row(row: Mapping[str, Any], num_points: int) -> dict[str, float]:
    """Continuous probes of one dataset row (``build.make_instance`` columns), no quantization.

    ``iou3d_cloud_aabb`` = IoU3D(AABB(cloud), bbox3d); ``pck3d_cloud_fps@τ`` = PCK@τ of FPS on
    the cloud against kpts3d (radius τ · diag(bbox3d), τ = 0.1, 0.05); ``cloud_fps_exact`` = 1
    when FPS returns the GT keypoints exactly. A ``view`` row adds
    ``iou3d_cloud_aabb_object_frame`` (the visible cloud's AABB in the object frame against
    the full task's box: what an object-aligned frame would give away) and
    ``kpts3d_occluded`` (the fraction of GT keypoints the camera does not see).
    """
    from pointvl.data.sampling import farthest_point_sampling
    from pointvl.data.view import ViewFrame
    from pointvl.eval.metrics import pck
    from pointvl.geometry import box_from_points, iou_3d

    xyz = np.asarray(row["points"], np.float64).reshape(num_points, 6)[:, :3]  # (N, 3)
    box = np.asarray(row["bbox3d"], np.float64)  # (6,)
    kpts = np.asarray(row["kpts3d"], np.float64).reshape(-1, 3)  # (M, 3)
    fps = xyz[farthest_point_sampling(xyz, len(kpts))]  # (M, 3)
    diag = float(np.linalg.norm(box[3:] - box[:3]))
    out = {
        "iou3d_cloud_aabb": float(iou_3d(box_from_points(xyz), box)),
        "pck3d_cloud_fps@0.1": pck(fps, kpts, 0.1 * diag),
        "pck3d_cloud_fps@0.05": pck(fps, kpts, 0.05 * diag),
        "cloud_fps_exact": float(np.array_equal(np.unique(fps, axis=0), np.unique(kpts, axis=0))),
    }
    if row.get("view_rotation") is not None:
        obj = box_from_points(ViewFrame.from_row(row).to_object(xyz))  # (6,) object frame
        out["iou3d_cloud_aabb_object_frame"] = float(iou_3d(obj, row["bbox3d_object"]))
        out["kpts3d_occluded"] = 1.0 - float(np.mean(row["kpts3d_visible"]))
    return out


def probes(data_dir: str, split: str = "test", n_boot: int = 1000, seed: int = 0) -> dict:
    """``probe_row`` over a split: {probe: {mean, lo, hi, n}} (95% bootstrap CI) + ``_meta``."""
    from pointvl.data.dataset import read_manifest, read_split
    from pointvl.eval.bootstrap import bootstrap_ci

    manifest = read_manifest(data_dir)
    task = manifest["config"].get("task", "full")
    cols = PROBE_COLUMNS + (VIEW_PROBE_COLUMNS if task == "view" else ())
    rows = read_split(data_dir, split, list(cols)).to_pylist()
    per = [probe_row(r, manifest["points_shape"][0]) for r in rows]
    out: dict[str, Any] = {"_meta": {"data_dir": str(data_dir), "split": split, "task": task}}
    for name in per[0] if per else ():
        ci = bootstrap_ci(np.array([p[name] for p in per]), n_boot=n_boot, seed=seed)
        out[name] = {"mean": ci.mean, "lo": ci.lo, "hi": ci.hi, "n": ci.n}
    return out


# ----------------------------------------------------------------------------- the stage's run
@dataclass
class EvalTrivialConfig:
    """Section ``eval_trivial`` of params.yaml (the ``eval_trivial`` stage)."""

    data_dir: str = "data/{profile}"
    """The built benchmark ({profile} is replaced by the active profile)."""
    n_boot: Annotated[int, Range(ge=100)] = 1000
    """Bootstrap resamples for the 95% CIs."""
    seed: int = 0
    """Seeds the bootstrap."""
    metrics: str = "results/metrics/eval/trivial.json"
    """Output: {predictor: {metric: {mean, lo, hi, n}}}."""
    probes: str = "results/metrics/eval/trivial_probes.json"
    """Output: {probe: {mean, lo, hi, n}} of ``probes`` on the test split."""


def evaluate_trivial(cfg: EvalTrivialConfig, profile: str) -> dict:
    """Every trivial predictor on the test split, scored by the model metric path (95% CIs);
    only ``REPORTED_METRICS`` are kept. Writes ``cfg.metrics`` and ``cfg.probes`` (``probes``:
    the same predictors unquantized), each atomically, and returns the metrics."""
    from pointvl.eval.metrics import evaluate
    from pointvl.eval.targets import load_targets
    from pointvl.io import atomic_write_json

    data_dir = cfg.data_dir.format(profile=profile)
    train, _, _ = load_targets(data_dir, "train")
    test, points, quant_bins = load_targets(data_dir, "test")
    out = {}
    for name, texts in trivial_completions(train, test, quant_bins, points).items():
        res = evaluate(texts, test, quant_bins, seed=cfg.seed, n_boot=cfg.n_boot, language=False)
        out[name] = {m: res[m] for m in REPORTED_METRICS if m in res}
    atomic_write_json(cfg.metrics, out)
    atomic_write_json(cfg.probes, probes(data_dir, "test", n_boot=cfg.n_boot, seed=cfg.seed))
    return out
