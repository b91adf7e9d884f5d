"""Table 3 (view): the Table 3 arms on the ``view`` task, beside its non-learned floors.

The paper has no such task (it is ours, issue 16; ``pointvl.data.view``), so the table has no
"(paper)" columns. Rows: SFT and the RL arms (each over its seeds), then the trivial
predictors of ``eval_trivial`` on the same test split: the training-mean box, the visible
cloud's AABB, the visible cloud's AABB with FPS keypoints, keypoints at the box centre.
Columns: the primary keypoint metrics of ``view`` first (PCK-3D@0.1 and Chamfer-3D: where
the targets are amodal, KPA, containment in the GT box, is won by collapsing the keypoints
into it), then KPA-3D, the keypoint spread, IoU3D, RPC, the 2D metrics and parse failures.

A cell of one seed is the test-set mean with its 95% bootstrap CI over samples. A cell of
k > 1 seeds is the mean over seeds with a 95% t-interval over the k per-seed means
(mean ± t_{0.975, k−1} · std / √k, so the spread between seeds is in the interval) and the
std over seeds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pointvl.eval.report import write_table

__all__ = ["ARM_NAMES", "METRICS", "TRIVIAL_ROWS", "seed_cell", "view_table"]

ARM_NAMES = {
    "sft": "SFT",
    "grpo": "GRPO (broadcast reward)",
    "gdpo": "GDPO (normalize-then-sum; ours)",
    "grca": "GRCA",
    "grca_bg0": "GRCA, background 0 (ours)",
    "grca_rpc": "GRCA + RPC",
}
METRICS = ("pck3d", "chamfer3d", "kpa3d", "spread3d", "iou3d", "rpc", "iou2d", "kpa2d",
           "parse_fail")  # fmt: skip
TRIVIAL_ROWS = {  # eval_trivial row -> its name on the view task (the cloud is the visible one)
    "trivial: train-mean box": "trivial: train-mean box and keypoints",
    "trivial: cloud AABB (no learning)": "trivial: visible-cloud AABB",
    "trivial: cloud AABB + FPS keypoints (no learning)": "trivial: visible-cloud AABB + FPS",
    "trivial: keypoints at box centre": "trivial: keypoints at the box centre",
}
TRIVIAL_METRICS = ("pck3d", "chamfer3d", "kpa3d", "spread3d", "iou3d", "rpc", "parse_fail")


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _mean_ci(result: Mapping[str, Any] | None, metric: str) -> tuple[float, float, float] | None:
    if not result or metric not in result or result[metric]["mean"] is None:
        return None
    r = result[metric]
    return None if math.isnan(r["mean"]) else (r["mean"], r["lo"], r["hi"])


def seed_cell(per_seed: Sequence[tuple[float, float, float]], metric: str = "") -> Any:
    """One seed: its (mean, lo, hi). k > 1 seeds: mean over seeds, the 95% t-interval over
    the seeds' means cut at the metric's range, std (``Results.cell``'s rule)."""
    from pointvl.eval.results import clip_to_range
    from pointvl.eval.stats import t_interval

    if not per_seed:
        return None
    if len(per_seed) == 1:
        return tuple(per_seed[0])
    means = [float(c[0]) for c in per_seed]  # (k,)
    ci = t_interval(means)  # mean ± t_{0.975, k-1} · s / √k
    lo, hi = clip_to_range(metric, ci["lo"], ci["hi"])
    return {"mean": ci["mean"], "lo": lo, "hi": hi, "std": float(np.std(means, ddof=1)),
            "n_seeds": len(means)}  # fmt: skip


def view_table(
    metrics_dir: str | Path,
    tables_dir: str | Path,
    arms: Sequence[str],
    seeds: Sequence[int],
    probes: Mapping[str, Any] | None = None,
) -> dict:
    """Write ``tables_dir/table3_view.{md,csv,tex}``; returns {"rows": ..., "paths": ...}.

    Reads ``metrics_dir/sft.json``, ``metrics_dir/<arm>_seed<s>.json`` (missing seeds are
    left out and counted; an arm with none shows "no run") and ``metrics_dir/trivial.json``.
    ``probes``: ``trivial.probes`` output, summarised in the notes.
    """
    mdir = Path(metrics_dir)
    rows: dict[str, dict] = {}
    ran: dict[str, int] = {}
    for arm in ("sft", *arms):
        names = ["sft"] if arm == "sft" else [f"{arm}_seed{s}" for s in seeds]
        results = [r for r in (_load(mdir / f"{n}.json") for n in names) if r]
        ran[arm] = len(results)
        cells = {}
        for m in METRICS:
            per = [c for c in (_mean_ci(r, m) for r in results) if c is not None]
            cells[m] = seed_cell(per, m) if len(per) == len(results) else None
        rows[ARM_NAMES.get(arm, arm)] = cells
    trivial = _load(mdir / "trivial.json") or {}
    for key, name in TRIVIAL_ROWS.items():
        if key in trivial:
            rows[name] = {m: _mean_ci(trivial[key], m) for m in TRIVIAL_METRICS}
    notes = [
        "The view task (ours, not in the paper): input = the points the camera sees, targets "
        "= the whole object's box and keypoints in a view frame (paper/departures.md).",
        "One seed: mean [95% bootstrap CI over test samples]. Several seeds: mean over seeds "
        "[95% t-interval over the per-seed means, cut at the metric's range] ± std over seeds "
        "(n seeds). Seeds run: "
        + ", ".join(f"{ARM_NAMES.get(a, a)} {n}" for a, n in ran.items())
        + ".",
        "Trivial predictors: 3D columns only (their 2D fields are copied from the ground "
        "truth); their RPC uses the GT 2D box.",
    ]
    if probes:
        p = {k: v["mean"] for k, v in probes.items() if not k.startswith("_")}
        notes.append(
            "Unquantized probes on the test split (eval_trivial): visible-cloud AABB IoU3D "
            f"{p.get('iou3d_cloud_aabb', float('nan')):.3f} in the view frame, "
            f"{p.get('iou3d_cloud_aabb_object_frame', float('nan')):.3f} in the object frame; "
            f"FPS on the visible cloud PCK@0.1 {p.get('pck3d_cloud_fps@0.1', float('nan')):.3f}"
            f", PCK@0.05 {p.get('pck3d_cloud_fps@0.05', float('nan')):.3f}; occluded GT "
            f"keypoints {p.get('kpts3d_occluded', float('nan')):.3f}."
        )
    paths = write_table(
        "table3_view", rows, {}, tables_dir, list(METRICS), notes=notes,
        caption="Table 3 (view): the ablation on the single-view amodal task",
        paper_columns=False,
    )  # fmt: skip
    return {"rows": rows, "seeds_run": ran, "paths": {k: str(v) for k, v in paths.items()}}
