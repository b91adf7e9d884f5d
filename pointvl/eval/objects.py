"""The test objects behind saved predictions, in any checkout (notebook 08, the figures).

A prediction file (``results/predictions/<system>.jsonl``) names each object by ``uid`` and
holds the question it answered; its metrics file says which profile made it
(``_meta.profile``). ``prediction_objects`` returns those exact objects: read from the built
dataset when it is there, otherwise built one by one with the *predictions'* profile config
(``data.build.build_instances``: the same plan, seeds and question pool as the full build, in
seconds). ``check_same_objects`` then refuses to pair a prediction with an object that asks
another question, so a prediction is never drawn on the wrong object.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _as_numpy_sample(sample: Mapping[str, Any]) -> dict[str, Any]:
    from pointvl.viz import as_numpy

    return {k: (as_numpy(v) if hasattr(v, "detach") else v) for k, v in sample.items()}


def prediction_objects(
    uids: Sequence[str],
    data_dir: str | os.PathLike,
    build_cfg,
    quant_bins: int,
) -> tuple[list[dict[str, Any]], str]:
    """(samples in ``uids`` order, where they came from). ``build_cfg`` is the
    ``BuildDatasetConfig`` of the profile the predictions were made on."""
    data_dir = Path(data_dir)
    if (data_dir / "manifest.json").is_file():
        from pointvl.data.dataset import PointVLDataset, read_split

        column = read_split(data_dir, "test", ["uid"]).column("uid").to_pylist()
        index = {u: i for i, u in enumerate(column)}  # rotate mode: one sample per row
        ds = PointVLDataset(data_dir, "test")
        missing = [u for u in uids if u not in index]
        if not missing:
            return [_as_numpy_sample(ds[index[u]]) for u in uids], f"read from {data_dir}"
    from pointvl.data.build import build_instances
    from pointvl.data.dataset import instance_sample

    rows = build_instances(build_cfg, quant_bins, list(uids))
    return [instance_sample(r) for r in rows], f"built here ({len(rows)} objects, no {data_dir})"


def check_same_objects(
    samples: Sequence[Mapping[str, Any]], predictions: Mapping[str, Mapping[str, Any]]
) -> None:
    """``ValueError`` when a sample and its prediction differ in uid or question (the
    prediction was made on another object, e.g. of another profile or dataset build)."""
    for s in samples:
        p = predictions.get(s["uid"])
        if p is None:
            raise ValueError(f"{s['uid']}: no prediction for this object")
        if p.get("question") is not None and p["question"] != s["question"]:
            raise ValueError(
                f"{s['uid']}: the prediction answered {p['question']!r} but this object asks "
                f"{s['question']!r}: another dataset build (profile or seed) made them"
            )


def planned_test_uids(build_cfg, n: int) -> list[str]:
    """The first ``n`` test uids of a build plan (objects to draw when nothing is saved)."""
    from pointvl.data.build import plan_instances, spec_uid

    specs, _ = plan_instances(build_cfg)
    return [spec_uid(s) for s in specs if s.split == "test"][:n]
