"""Ground truth for evaluation, read from a built split through the dataset loader.

``question_type`` groups the dataset's QA types the way Sec. 4.3 reports QA accuracy:
``category_mc`` (multiple-choice category prediction) and ``attribute`` (every other
question: open category, part count, yes/no attribute, proportion, orientation).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from pointvl.data.dataset import PointVLDataset


def question_group(qa_type: str) -> str:
    """The dataset's QA type -> the paper's two groups ("category_mc" or "attribute")."""
    return "category_mc" if qa_type == "category_mc" else "attribute"


def load_targets(
    data_dir: str | os.PathLike, split: str = "test", qa_mode: str = "rotate"
) -> tuple[list[dict[str, Any]], list[np.ndarray], int]:
    """(targets, point clouds (N, 3) each, quant_bins) of one split, in dataset order."""
    ds = PointVLDataset(data_dir, split, qa_mode=qa_mode)
    targets, points = [], []
    for i in range(len(ds)):
        s = ds[i]
        targets.append(
            {
                "uid": s["uid"],
                "category": s["category"],
                "answer": s["answer"],
                "description": s["description"],
                "question": s["question"],
                "question_type": question_group(s["qa_type"]),
                **{
                    k: s[k].numpy() for k in ("bbox2d", "bbox3d", "kpts2d", "kpts3d", "K", "R", "t")
                },
            }
        )
        points.append(s["points"][:, :3].numpy())
    return targets, points, ds.quant_bins
