"""Test-set metrics of Sec. 4.3 (Tables 1-5) plus stricter keypoint metrics the paper lacks.

Inputs: completion texts and continuous ground-truth dicts (the same targets the rewards
use, see ``pointvl.rewards``)::

    target["bbox2d"] (4,) px      target["bbox3d"] (6,) object frame
    target["kpts2d"] (M, 2) px    target["kpts3d"] (M, 3) object frame
    target["K"], target["R"] (3, 3), target["t"] (3,)   camera (object frame -> OpenCV)
    target["answer"], target["description"] str
    target["question_type"]  optional, e.g. "category_mc" or "attribute"

Per-sample metrics (``per_sample_metrics``), each in [0, 1] unless said otherwise:

- ``iou2d``, ``iou3d``, ``kpa2d``, ``kpa3d``: Eq. (8) on held-out data, i.e. exactly
  ``rewards.field_rewards`` (IoU of the boxes; fraction of predicted keypoints inside the
  *ground-truth* box, boundaries inclusive).
- ``rpc``: Eq. (13), ``rewards.rpc_reward`` (IoU of the predicted 3D box's footprint under
  the GT camera with the predicted 2D box; no GT box enters).
- ``qa_acc``: normalized exact match of ``answer``: both sides go through
  ``rewards.normalize_text`` (Unicode NFKC, casefold, delete punctuation, drop the articles
  a/an/the, split on whitespace) and must give the same token list. ``qa_acc/<type>`` is
  the same value on the samples of one ``question_type`` (NaN elsewhere), so category
  multiple-choice and attribute QA are reported separately and together.
- ``parse_fail``: 1 when any of the six fields failed to parse (``not parsed.ok``);
  ``parse_fail/<field>`` per field. A failed field scores 0 in every metric above.
- ``pck2d``, ``pck3d``: PCK@τ, the fraction of *GT* keypoints that have *some* predicted
  keypoint within τ · diag, diag = diagonal of the GT box (2D box in pixels, 3D box in the
  object frame), τ = ``pck_tau`` (0.1). Set-based (no correspondence), because the
  keypoints are an unordered set. A failed field scores 0.
- ``chamfer2d``, ``chamfer3d`` (lower is better): symmetric Chamfer distance
  ½ (mean_i min_j |p̂_i − p_j| + mean_j min_i |p̂_i − p_j|) divided by the same GT box
  diagonal and capped at 1; a failed field scores the cap, 1.
- ``spread2d``, ``spread3d`` (collapse diagnostic): mean pairwise distance of the
  predicted keypoints over that of the GT keypoints. ≈ 1 for a set spread like the GT,
  → 0 when the keypoints collapse onto one point (all at the box centre gives KPA = 1 but
  spread 0). NaN (left out of the mean) when the field failed or the GT spread is 0.
  ``collapsed3d``: 1 when spread3d < ``collapse_threshold`` (0.1), NaN when undefined.

``evaluate`` turns these into {metric: mean with 95% bootstrap CI} and adds the language
metrics of ``description`` (``pointvl.eval.language``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.spatial.distance import cdist, pdist

from pointvl.eval.bootstrap import DEFAULT_N_BOOT, bootstrap_ci
from pointvl.rewards import answer_reward, field_rewards, rpc_reward
from pointvl.schema import FIELDS, dequantize_3d, parse_output

__all__ = [
    "LOWER_IS_BETTER",
    "chamfer",
    "evaluate",
    "pck",
    "per_sample_metrics",
    "spread_ratio",
]

PCK_TAU = 0.1
COLLAPSE_THRESHOLD = 0.1
LOWER_IS_BETTER = frozenset({"chamfer2d", "chamfer3d", "parse_fail"})
_FIELD_METRIC = {"bbox2d": "iou2d", "bbox3d": "iou3d", "kpts2d": "kpa2d", "kpts3d": "kpa3d"}


# ----------------------------------------------------------------------------- keypoint sets
def _check_sets(pred: Any, gt: Any, fn: str) -> tuple[np.ndarray, np.ndarray]:
    p, g = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if p.ndim != 2 or g.ndim != 2 or p.shape[1] != g.shape[1] or 0 in (p.shape[0], g.shape[0]):
        raise ValueError(
            f"{fn}: expected pred (M', D) and gt (M, D), M, M' >= 1; got {p.shape}, {g.shape}"
        )
    return p, g


def _diag(box: Any) -> float:
    """Diagonal length of a box [lo (D), hi (D)] (D = 2 or 3)."""
    b = np.asarray(box, dtype=np.float64)
    d = b.size // 2
    return float(np.linalg.norm(b[d:] - b[:d]))


def chamfer(pred: Any, gt: Any) -> float:
    """Symmetric Chamfer distance ½ (mean_i min_j |p̂_i − p_j| + mean_j min_i |p̂_i − p_j|).

    pred (M', D), gt (M, D) -> float, in the inputs' units (not squared).
    """
    p, g = _check_sets(pred, gt, "chamfer")
    d = cdist(p, g)  # (M', M)
    # CD = 1/2 (mean_i min_j d_ij + mean_j min_i d_ij)
    return float(0.5 * (d.min(1).mean() + d.min(0).mean()))


def pck(pred: Any, gt: Any, radius: float) -> float:
    """PCK: fraction of GT keypoints with some predicted keypoint within ``radius`` (≤).

    pred (M', D), gt (M, D) -> float in [0, 1]. Set-based: no correspondence is assumed.
    """
    p, g = _check_sets(pred, gt, "pck")
    d = cdist(p, g)  # (M', M)
    # PCK = (1/M) sum_j 1[min_i |p̂_i − p_j| <= r]
    return float((d.min(0) <= radius).mean())


def spread_ratio(pred: Any, gt: Any) -> float:
    """Collapse diagnostic: mean pairwise distance of pred / that of gt (NaN if undefined).

    1.0 for a set as spread out as the GT; 0.0 for keypoints all at one point. NaN when
    either set has fewer than 2 points or the GT spread is 0.
    """
    p, g = _check_sets(pred, gt, "spread_ratio")
    if p.shape[0] < 2 or g.shape[0] < 2:
        return float("nan")
    gs = pdist(g).mean()
    return float(pdist(p).mean() / gs) if gs > 0 else float("nan")


# ----------------------------------------------------------------------------- per sample
def _kpts(parsed: Any, name: str, quant_bins: int) -> np.ndarray | None:
    if parsed.errors.get(name) is not None or parsed.values.get(name) is None:
        return None
    v = np.asarray(parsed.values[name], dtype=np.float64)
    return dequantize_3d(v, quant_bins) if name == "kpts3d" else v


def _num_keypoints(target: Mapping[str, Any]) -> int:
    kp = np.asarray(target["kpts3d"])
    if kp.ndim != 2 or kp.shape[1] != 3:
        raise ValueError(f"target['kpts3d']: expected shape (M, 3), got {kp.shape}")
    return int(kp.shape[0])


def per_sample_metrics(
    texts: Sequence[str],
    targets: Sequence[Mapping[str, Any]],
    quant_bins: int,
    pck_tau: float = PCK_TAU,
    collapse_threshold: float = COLLAPSE_THRESHOLD,
) -> dict[str, np.ndarray]:
    """Every per-sample metric (see the module docstring) -> {name: (N,) float64}.

    Completions are parsed with the target's keypoint count M (a set of another size is a
    parse failure of that field, as in training). Also returns ``description`` as an
    object array of the predicted descriptions ("" where the field failed), for the
    language metrics.
    """
    if len(texts) != len(targets):
        raise ValueError(f"per_sample_metrics: {len(texts)} texts but {len(targets)} targets")
    n = len(texts)
    names = [
        "iou2d", "iou3d", "kpa2d", "kpa3d", "rpc", "qa_acc", "parse_fail",
        "pck2d", "pck3d", "chamfer2d", "chamfer3d", "spread2d", "spread3d", "collapsed3d",
    ]  # fmt: skip
    out = {k: np.zeros(n) for k in names}
    for f in FIELDS:
        out[f"parse_fail/{f}"] = np.zeros(n)
    qtypes = sorted({str(t["question_type"]) for t in targets if t.get("question_type")})
    for q in qtypes:
        out[f"qa_acc/{q}"] = np.full(n, np.nan)
    descriptions = np.empty(n, dtype=object)
    for i, (text, tg) in enumerate(zip(texts, targets)):
        parsed = parse_output(text, num_keypoints=_num_keypoints(tg))
        for f, r in field_rewards(parsed, tg, quant_bins).items():
            out[_FIELD_METRIC[f]][i] = r
        out["rpc"][i] = rpc_reward(parsed, tg, quant_bins)
        answer = parsed.values.get("answer") if parsed.errors.get("answer") is None else None
        out["qa_acc"][i] = answer_reward(answer, tg.get("answer"))
        if tg.get("question_type"):
            out[f"qa_acc/{tg['question_type']}"][i] = out["qa_acc"][i]
        out["parse_fail"][i] = 0.0 if parsed.ok else 1.0
        for f in FIELDS:
            out[f"parse_fail/{f}"][i] = 0.0 if parsed.errors.get(f) is None else 1.0
        desc = (
            parsed.values.get("description") if parsed.errors.get("description") is None else None
        )
        descriptions[i] = desc if isinstance(desc, str) else ""
        for dim, box_key in (("2d", "bbox2d"), ("3d", "bbox3d")):
            pred = _kpts(parsed, f"kpts{dim}", quant_bins)  # (M, D) or None
            gt = np.asarray(tg[f"kpts{dim}"], dtype=np.float64)  # (M, D)
            diag = _diag(tg[box_key])
            if pred is None or diag <= 0:
                out[f"pck{dim}"][i], out[f"chamfer{dim}"][i] = 0.0, 1.0
                out[f"spread{dim}"][i] = np.nan
                continue
            out[f"pck{dim}"][i] = pck(pred, gt, pck_tau * diag)
            out[f"chamfer{dim}"][i] = min(chamfer(pred, gt) / diag, 1.0)
            out[f"spread{dim}"][i] = spread_ratio(pred, gt)
        s = out["spread3d"][i]
        out["collapsed3d"][i] = np.nan if np.isnan(s) else float(s < collapse_threshold)
    out["description"] = descriptions
    return out


# ----------------------------------------------------------------------------- summary
def evaluate(
    texts: Sequence[str],
    targets: Sequence[Mapping[str, Any]],
    quant_bins: int,
    seed: int = 0,
    n_boot: int = DEFAULT_N_BOOT,
    language: bool = True,
    bertscore: bool = False,
    pck_tau: float = PCK_TAU,
) -> dict[str, dict[str, float]]:
    """Each metric's mean with a 95% percentile-bootstrap CI over the test samples.

    Returns {metric: {"mean", "lo", "hi", "n"}} (``n``: samples on which the metric is
    defined). ``language`` adds BLEU-1..4 / ROUGE-1/2/L of the predicted ``description``
    against the target's; ``bertscore`` adds BERTScore F1 (local MiniLM, not comparable with
    the paper's). Every metric uses the same ``seed`` and therefore the same resamples.
    """
    per = per_sample_metrics(texts, targets, quant_bins, pck_tau=pck_tau)
    descriptions = per.pop("description")
    result = {}
    for name, values in per.items():
        ci = bootstrap_ci(values, n_boot=n_boot, seed=seed)
        result[name] = {"mean": ci.mean, "lo": ci.lo, "hi": ci.hi, "n": ci.n}
    if language and len(texts):
        from pointvl.eval.language import language_metrics

        refs = [str(t.get("description", "")) for t in targets]
        summary, _ = language_metrics(
            list(descriptions), refs, bertscore=bertscore, n_boot=n_boot, seed=seed
        )
        for name, ci in summary.items():
            result[name] = {"mean": ci.mean, "lo": ci.lo, "hi": ci.hi, "n": ci.n}
    return result
