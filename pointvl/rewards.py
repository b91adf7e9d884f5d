"""Rewards of one completion: per geometric field (Eq. 8), RPC (Eq. 13), format, sequence.

Inputs are a ``schema.ParsedOutput`` (values *as written*: 2D in pixels, 3D in integer
bins of the unit cube) and a ``target`` mapping of continuous ground truth::

    target["bbox2d"]  (4,)   pixels [x1, y1, x2, y2]
    target["bbox3d"]  (6,)   object frame [xmin, ymin, zmin, xmax, ymax, zmax]
    target["K"]       (3, 3) intrinsics; target["R"] (3, 3), target["t"] (3,):
                             object frame -> camera, OpenCV (see ``geometry``);
                             K and R may also be given flat, (9,) row-major (dataset rows)
    target["answer"], target["description"]  str (optional, semantic rewards only)

Contract: a malformed *prediction* never raises; a field that is missing, errored, of the
wrong shape, or non-finite earns 0 (Sec. 3.7). A malformed *target* is our own bug and
raises ``ValueError`` / ``KeyError``. Every reward lies in [0, 1] (``seq`` in
[0, 1 + format_weight]).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pointvl.geometry import iou_2d, iou_3d, keypoint_containment, reprojected_footprint
from pointvl.schema import FIELDS, GEOMETRIC_FIELDS, dequantize_3d

__all__ = [
    "Rewards",
    "answer_reward",
    "description_reward",
    "field_rewards",
    "format_reward",
    "normalize_text",
    "rpc_reward",
    "score_batch",
    "score_completion",
    "sequence_reward",
]


# ----------------------------------------------------------------------------- helpers
def _pred_array(parsed: Any, name: str, shape: tuple[int | None, ...]) -> np.ndarray | None:
    """A predicted geometric value as a finite float64 array of ``shape``, else None.

    ``None`` in ``shape`` matches any size >= 1 (the keypoint count M). Never raises.
    """
    errors = getattr(parsed, "errors", None) or {}
    values = getattr(parsed, "values", None) or {}
    if errors.get(name) is not None:
        return None
    value = values.get(name)
    if value is None or isinstance(value, str | bytes):
        return None
    try:
        if hasattr(value, "detach"):  # torch tensor
            value = value.detach().cpu().numpy()
        with np.errstate(all="ignore"):
            arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError, RuntimeError):
        return None
    if arr.ndim != len(shape):
        return None
    for got, want in zip(arr.shape, shape):
        if (want is None and got < 1) or (want is not None and got != want):
            return None
    if not np.all(np.isfinite(arr)):
        return None
    return arr


def _dequantize(bins: np.ndarray | None, quant_bins: int) -> np.ndarray | None:
    """Bins -> object frame (``schema.dequantize_3d``); None if the result is not finite."""
    if bins is None:
        return None
    with np.errstate(all="ignore"):
        x = dequantize_3d(bins, quant_bins)
    return x if np.all(np.isfinite(x)) else None


def _target_array(target: Mapping[str, Any], name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in target:
        raise KeyError(f"target lacks {name!r} (expected shape {shape})")
    value = target[name]
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value, dtype=np.float64)
    if shape == (3, 3) and arr.shape == (9,):  # a dataset row stores K and R flat, row-major
        arr = arr.reshape(3, 3)
    # -1 in ``shape`` matches any size >= 1 (the keypoint count M)
    ok = arr.ndim == len(shape) and all(
        w == g or (w == -1 and g >= 1) for w, g in zip(shape, arr.shape)
    )
    if not ok:
        raise ValueError(f"target[{name!r}]: expected shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"target[{name!r}] contains non-finite values")
    return arr


def _check_quant_bins(quant_bins: Any) -> int:
    if isinstance(quant_bins, bool) or int(quant_bins) != quant_bins or quant_bins < 2:
        raise ValueError(f"quant_bins={quant_bins!r}: expected an integer >= 2")
    return int(quant_bins)


def _unit(x: Any) -> float:
    """A reward as a plain float in [0, 1] (0 for anything non-finite)."""
    x = float(x)
    return min(max(x, 0.0), 1.0) if np.isfinite(x) else 0.0


# ----------------------------------------------------------------------------- geometric fields
def field_rewards(
    parsed: Any, target: Mapping[str, Any], quant_bins: int, keypoint_reward: str = "kpa"
) -> dict[str, float]:
    """Eq. (8): one reward in [0, 1] per geometric field, keys in ``GEOMETRIC_FIELDS`` order.

    r_bbox2d = IoU_2D(B̂_2d, B*_2d)                       (pixels)
    r_bbox3d = IoU_3D(deq(B̂_3d), B*_3d)                  (object frame)
    r_kpts2d = (1/M) sum_m 1[p̂_m in B*_2d]               (GT 2D box)
    r_kpts3d = (1/M) sum_m 1[deq(p̂_m) in B*_3d]          (GT 3D box)

    deq = ``schema.dequantize_3d`` (bin centres). A field with an error, no value, a wrong
    shape or a non-finite value earns 0 (Sec. 3.7). Predicted bins outside [0, Q) are
    de-quantized linearly (not clipped). Never raises on a malformed prediction.
    ``keypoint_reward="matched"`` replaces the two keypoint rewards by
    ``matched_keypoint_reward`` against ``target["kpts2d"]`` / ``target["kpts3d"]``.
    """
    q = _check_quant_bins(quant_bins)
    _check_keypoint_reward(keypoint_reward)
    gt2d = _target_array(target, "bbox2d", (4,))  # (4,)
    gt3d = _target_array(target, "bbox3d", (6,))  # (6,)
    box2d = _pred_array(parsed, "bbox2d", (4,))  # (4,) pixels
    box3d = _dequantize(_pred_array(parsed, "bbox3d", (6,)), q)  # (6,) object frame
    kp2d = _pred_array(parsed, "kpts2d", (None, 2))  # (M, 2) pixels
    kp3d = _dequantize(_pred_array(parsed, "kpts3d", (None, 3)), q)  # (M, 3) object frame

    def kpts(pred, box, name, d):
        if pred is None:
            return 0.0
        gt = _target_array(target, name, (-1, d)) if keypoint_reward == "matched" else None
        return _unit(_keypoint_reward(pred[None], box, gt, keypoint_reward)[0])

    return {
        "bbox2d": _unit(iou_2d(box2d, gt2d)) if box2d is not None else 0.0,
        "bbox3d": _unit(iou_3d(box3d, gt3d)) if box3d is not None else 0.0,
        "kpts2d": kpts(kp2d, gt2d, "kpts2d", 2),
        "kpts3d": kpts(kp3d, gt3d, "kpts3d", 3),
    }


def _check_keypoint_reward(kind: str) -> None:
    if kind not in KEYPOINT_REWARDS:
        raise ValueError(f"keypoint_reward={kind!r}: expected one of {KEYPOINT_REWARDS}")


def rpc_reward(parsed: Any, target: Mapping[str, Any], quant_bins: int) -> float:
    """Eq. (13): r_rpc = IoU_2D(B_proj, B̂_2d), the 2D/3D self-consistency of one output.

    B_proj (Eqs. 11-12) is the footprint of the *predicted*, de-quantized bbox3d projected
    through the ground-truth camera (``target`` K, R, t); B̂_2d is the bbox2d predicted in
    the same output. No ground-truth box enters. 0 when either box is missing / errored /
    non-finite, when the predicted 3D box is inverted (max < min on some axis; a
    degenerate, flat box is allowed), or when any corner projects at / behind the camera.
    """
    q = _check_quant_bins(quant_bins)
    K = _target_array(target, "K", (3, 3))
    R = _target_array(target, "R", (3, 3))
    t = _target_array(target, "t", (3,))
    box2d = _pred_array(parsed, "bbox2d", (4,))  # (4,) pixels
    box3d = _dequantize(_pred_array(parsed, "bbox3d", (6,)), q)  # (6,) object frame
    if box2d is None or box3d is None or np.any(box3d[3:] < box3d[:3]):
        return 0.0
    # B_proj = [min_j u_jx, min_j u_jy, max_j u_jx, max_j u_jy] over the 8 projected corners
    footprint, valid = reprojected_footprint(box3d, K, R, t)  # (4,), ()
    if not bool(valid):
        return 0.0
    return _unit(iou_2d(footprint, box2d))


KEYPOINT_REWARDS = ("kpa", "matched")
"""``kpa``: the paper's containment reward (Eq. 8); ``matched``: ``matched_keypoint_reward``."""
MATCHED_TAU = 0.1
"""PCK radius of ``matched_keypoint_reward`` as a fraction of the GT box diagonal."""


def matched_keypoint_reward(pred: Any, gt: Any, diag: float, tau: float = MATCHED_TAU) -> float:
    """A keypoint reward that collapse cannot win (ours, beyond the paper): soft PCK after a
    one-to-one (Hungarian) matching of predicted to GT keypoints,

        r = (1/M) sum_j max(0, 1 − |p̂_σ(j) − p_j| / (2 τ diag)),   σ = argmin_σ Σ_j |p̂_σ(j) − p_j|

    pred (M', D), gt (M, D); unmatched GT keypoints (M' < M) count 0. The paper's KPA
    (containment in the GT box) gives keypoints all at the box centre 1.0 while the quantized
    GT scores ~0.72 on our objects; here the GT scores ≈ 1 and a collapsed set scores ≈ the
    fraction of GT keypoints within 2τ·diag of that one point. Linear in the distance inside
    the radius so the group has a gradient of reward before keypoints are exactly right.
    """
    from scipy.optimize import linear_sum_assignment

    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    if p.ndim != 2 or g.ndim != 2 or p.shape[1] != g.shape[1] or not len(p) or not len(g):
        return 0.0
    if not (np.isfinite(p).all() and np.isfinite(diag) and diag > 0):
        return 0.0
    d = np.linalg.norm(p[:, None, :] - g[None, :, :], axis=-1)  # (M', M)
    rows, cols = linear_sum_assignment(d)
    credit = np.clip(1.0 - d[rows, cols] / (2.0 * tau * diag), 0.0, 1.0)  # (min(M', M),)
    return float(credit.sum() / len(g))


def _box_diagonal(box: np.ndarray) -> float:
    """Diagonal length of a [min..., max...] box (2D or 3D)."""
    d = len(box) // 2
    return float(np.linalg.norm(box[d:] - box[:d]))


def _keypoint_reward(points, box, gt_points, kind: str) -> np.ndarray:
    """(n, M, D) predicted keypoints of one target -> (n,) rewards of the chosen kind."""
    if kind == "kpa":
        return np.clip(keypoint_containment(points, box), 0, 1)
    diag = _box_diagonal(box)
    return np.array([matched_keypoint_reward(p, gt_points, diag) for p in points])


# ----------------------------------------------------------------------------- semantic fields
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_text(text: str) -> list[str]:
    """SQuAD-style normalization -> tokens (memoized: a group repeats the same strings).

    Rule, in order: Unicode NFKC; lower-case (``str.casefold``); delete every punctuation
    character (Unicode category P*, so "t-shirt" -> "tshirt", "chair." -> "chair");
    drop the articles "a", "an", "the" as whole words; split on whitespace (which also
    collapses runs of spaces).
    """
    return list(_normalize_cached(text))


@functools.lru_cache(maxsize=1 << 16)
def _normalize_cached(text: str) -> tuple[str, ...]:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(c for c in text if not unicodedata.category(c).startswith("P"))
    text = _ARTICLES.sub(" ", text)
    return tuple(text.split())


def answer_reward(pred: Any, gt: Any) -> float:
    """Exact match after ``normalize_text``: 1.0 or 0.0; 0.0 if either side is not a str."""
    if not isinstance(pred, str) or not isinstance(gt, str):
        return 0.0
    return 1.0 if normalize_text(pred) == normalize_text(gt) else 0.0


def description_reward(pred: Any, gt: Any) -> float:
    """Unigram F1 of ``normalize_text`` tokens (multiset overlap, as SQuAD's F1).

    F1 = 2 P R / (P + R), P = overlap / |pred|, R = overlap / |gt|. Both empty -> 1.0,
    exactly one empty -> 0.0; 0.0 if either side is not a str.
    """
    if not isinstance(pred, str) or not isinstance(gt, str):
        return 0.0
    p, g = normalize_text(pred), normalize_text(gt)
    if not p or not g:
        return 1.0 if p == g else 0.0
    overlap = sum((Counter(p) & Counter(g)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(p), overlap / len(g)
    return 2 * precision * recall / (precision + recall)


# ----------------------------------------------------------------------------- format, sequence
def format_reward(parsed: Any) -> float:
    """Fraction of the six ``FIELDS`` that parsed cleanly (error None and a value present).

    0.0 when no JSON object was found (every error is "no_json").
    """
    errors = getattr(parsed, "errors", None) or {}
    values = getattr(parsed, "values", None) or {}
    ok = [f for f in FIELDS if f in errors and errors[f] is None and values.get(f) is not None]
    return len(ok) / len(FIELDS)


def sequence_reward(
    field_r: Mapping[str, float],
    format_r: float,
    weights: Mapping[str, float] | None = None,
    format_weight: float = 0.1,
) -> float:
    """Eq. (10b): r_seq, the scalar vanilla GRPO broadcasts to every token.

    r_seq = sum_k w_k r_k / sum_k w_k + format_weight * r_format, k over
    ``GEOMETRIC_FIELDS`` (equal weights by default, i.e. the mean).
    **[reconstruction]**: the paper only says "mean of the field rewards plus a
    format/validity term"; the weights, the format weight (0.1) and leaving the semantic
    rewards (answer, description) out of r_seq are our choices. Range
    [0, 1 + format_weight]; Eq. (9) standardizes inside a group, so the scale is immaterial.
    """
    missing = [k for k in GEOMETRIC_FIELDS if k not in field_r]
    if missing:
        raise ValueError(f"sequence_reward: field_r lacks {missing}; expected {GEOMETRIC_FIELDS}")
    w = {k: 1.0 for k in GEOMETRIC_FIELDS} if weights is None else dict(weights)
    unknown = sorted(set(w) - set(GEOMETRIC_FIELDS))
    if unknown:
        raise ValueError(f"sequence_reward: unknown weight keys {unknown}; use {GEOMETRIC_FIELDS}")
    ws = np.array([float(w.get(k, 0.0)) for k in GEOMETRIC_FIELDS])  # (F,)
    if np.any(ws < 0) or not np.isfinite(ws).all() or ws.sum() <= 0:
        raise ValueError(f"sequence_reward: weights must be finite, >= 0, not all 0; got {w}")
    r = np.array([float(field_r[k]) for k in GEOMETRIC_FIELDS])  # (F,)
    # r_seq = sum_k w_k r_k / sum_k w_k + format_weight * r_format
    return float(ws @ r / ws.sum() + format_weight * float(format_r))


# ----------------------------------------------------------------------------- scoring
@dataclass
class Rewards:
    """All rewards of one completion."""

    fields: dict[str, float] = field(default_factory=dict)
    """Eq. (8) per geometric field, keys in ``GEOMETRIC_FIELDS`` order."""
    rpc: float = 0.0
    """Eq. (13) reprojection consistency."""
    format: float = 0.0
    """Fraction of the six fields that parsed cleanly."""
    seq: float = 0.0
    """Eq. (10b) sequence reward (vanilla GRPO's scalar)."""
    answer: float = 0.0
    """Normalized exact match of ``answer`` (0 when the target has no answer)."""
    description: float = 0.0
    """Unigram F1 of ``description`` (0 when the target has no description)."""


def score_completion(
    parsed: Any,
    target: Mapping[str, Any],
    quant_bins: int,
    format_weight: float = 0.1,
    weights: Mapping[str, float] | None = None,
    keypoint_reward: str = "kpa",
) -> Rewards:
    """Every reward of one parsed completion against its target. Never raises on the prediction."""
    values = getattr(parsed, "values", None) or {}
    errors = getattr(parsed, "errors", None) or {}

    def semantic(name: str) -> Any:
        return values.get(name) if errors.get(name) is None else None

    fields = field_rewards(parsed, target, quant_bins, keypoint_reward)
    fmt = format_reward(parsed)
    return Rewards(
        fields=fields,
        rpc=rpc_reward(parsed, target, quant_bins),
        format=fmt,
        seq=sequence_reward(fields, fmt, weights=weights, format_weight=format_weight),
        answer=answer_reward(semantic("answer"), target.get("answer")),
        description=description_reward(semantic("description"), target.get("description")),
    )


def score_batch(
    parsed_list: Sequence[Any],
    targets: Sequence[Mapping[str, Any]],
    quant_bins: int,
    format_weight: float = 0.1,
    weights: Mapping[str, float] | None = None,
    keypoint_reward: str = "kpa",
) -> dict[str, np.ndarray]:
    """``score_completion`` over a batch -> arrays, vectorized per group of shared targets.

    Returns ``per_field_rewards`` (B, F) in ``GEOMETRIC_FIELDS`` order, and ``rpc``,
    ``seq``, ``format``, ``answer``, ``description``, each (B,), all float64. Rows whose
    ``target`` is the same object (the G completions of one prompt) are scored with one
    numpy call per field; the result equals ``score_completion`` row by row (tested).
    """
    B = len(parsed_list)
    if B != len(targets):
        raise ValueError(f"score_batch: {B} completions but {len(targets)} targets; expected equal")
    q = _check_quant_bins(quant_bins)
    _check_keypoint_reward(keypoint_reward)
    per_field = np.zeros((B, len(GEOMETRIC_FIELDS)), dtype=np.float64)  # (B, F)
    rpc = np.zeros(B, dtype=np.float64)  # (B,)
    groups: dict[int, list[int]] = {}
    for i, tg in enumerate(targets):
        groups.setdefault(id(tg), []).append(i)
    for rows in groups.values():
        _score_group(parsed_list, targets[rows[0]], rows, q, per_field, rpc, keypoint_reward)
    fmt = np.array([format_reward(p) for p in parsed_list], dtype=np.float64)  # (B,)
    seq = np.array(
        [
            sequence_reward(dict(zip(GEOMETRIC_FIELDS, r)), f, weights, format_weight)
            for r, f in zip(per_field, fmt)
        ],
        dtype=np.float64,
    )  # (B,)

    def semantic(p: Any, name: str) -> Any:
        errors = getattr(p, "errors", None) or {}
        return (getattr(p, "values", None) or {}).get(name) if errors.get(name) is None else None

    answer = [
        answer_reward(semantic(p, "answer"), t.get("answer")) for p, t in zip(parsed_list, targets)
    ]
    desc = [
        description_reward(semantic(p, "description"), t.get("description"))
        for p, t in zip(parsed_list, targets)
    ]
    return {
        "per_field_rewards": per_field,
        "rpc": rpc,
        "seq": seq,
        "format": fmt,
        "answer": np.asarray(answer, dtype=np.float64),
        "description": np.asarray(desc, dtype=np.float64),
    }


def _stack(parsed_list: Sequence[Any], rows: list[int], name: str, shape: tuple) -> tuple:
    """Predicted values of ``rows`` stacked (n, *shape) with NaN where unusable, and a mask."""
    out = np.full((len(rows), *shape), np.nan)
    ok = np.zeros(len(rows), dtype=bool)
    for j, i in enumerate(rows):
        a = _pred_array(parsed_list[i], name, shape)
        if a is not None:
            out[j], ok[j] = a, True
    return out, ok


def _score_group(parsed_list, target, rows, q, per_field, rpc, keypoint_reward="kpa") -> None:
    """Eqs. (8) and (13) for the rows sharing one target; writes into per_field / rpc."""
    gt2d = _target_array(target, "bbox2d", (4,))  # (4,)
    gt3d = _target_array(target, "bbox3d", (6,))  # (6,)
    K = _target_array(target, "K", (3, 3))
    R = _target_array(target, "R", (3, 3))
    t = _target_array(target, "t", (3,))
    idx = np.asarray(rows)
    box2d, ok2 = _stack(parsed_list, rows, "bbox2d", (4,))  # (n, 4)
    bins3d, ok3 = _stack(parsed_list, rows, "bbox3d", (6,))  # (n, 6)
    with np.errstate(all="ignore"):
        box3d = dequantize_3d(bins3d, q)  # (n, 6)
    ok3 &= np.isfinite(box3d).all(-1)
    per_field[idx, 0] = np.where(ok2, np.clip(np.nan_to_num(iou_2d(box2d, gt2d)), 0, 1), 0.0)
    per_field[idx, 1] = np.where(ok3, np.clip(np.nan_to_num(iou_3d(box3d, gt3d)), 0, 1), 0.0)
    for k, name, d, box in ((2, "kpts2d", 2, gt2d), (3, "kpts3d", 3, gt3d)):
        by_m: dict[int, list[int]] = {}
        arrays = {}
        for j, i in enumerate(rows):
            a = _pred_array(parsed_list[i], name, (None, d))
            if a is not None and d == 3:
                with np.errstate(all="ignore"):
                    a = dequantize_3d(a, q)
                a = a if np.isfinite(a).all() else None
            if a is not None:
                by_m.setdefault(a.shape[0], []).append(j)
                arrays[j] = a
        gt = _target_array(target, name, (-1, d)) if keypoint_reward == "matched" else None
        for js in by_m.values():
            pts = np.stack([arrays[j] for j in js])  # (n_m, M, d)
            per_field[idx[js], k] = _keypoint_reward(pts, box, gt, keypoint_reward)
    # RPC: predicted 3D box through the camera vs the predicted 2D box (no GT box)
    ok = ok2 & ok3 & np.all(np.nan_to_num(box3d[:, 3:] - box3d[:, :3], nan=-1.0) >= 0, axis=-1)
    if ok.any():
        footprint, valid = reprojected_footprint(box3d[ok], K, R, t)  # (n_ok, 4), (n_ok,)
        iou = np.clip(np.nan_to_num(iou_2d(footprint, box2d[ok])), 0, 1)  # (n_ok,)
        rpc[idx[ok]] = np.where(valid, iou, 0.0)
