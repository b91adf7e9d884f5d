"""DVC stage ``baseline``: a point-only regressor of Table 2, trained and scored (Sec. 4.3).

    python -m pointvl.stages.baseline --params params.yaml --name pointnet [--profile smoke]
        [--no-progress] [--from-predictions]

``--name``: ``pointnet`` | ``pointnet2`` (SSG) | ``pointbert``; sections ``baselines`` and
``model`` (the per-point channels and Point-BERT's size). ``pointvl.baselines.experiment``:
train on ``train``, predict ``test`` as completion texts, score them with the VLM's metrics.
``--from-predictions`` recomputes the metrics from the saved predictions without training.
"""

from __future__ import annotations

from pointvl.baselines.experiment import BASELINE_NAMES, BaselineConfig, run_baseline
from pointvl.model.config import ModelConfig
from pointvl.stages._cli import Flag, Stage

SUMMARY = ("iou3d", "kpa3d", "pck3d", "chamfer3d", "spread3d", "rpc")

STAGE = Stage(
    "baseline",
    __doc__,
    sections={"baselines": BaselineConfig, "model": ModelConfig},
    flags=[
        Flag("--name", required=True, choices=BASELINE_NAMES, help="which regressor"),
        Flag("--no-progress", action="store_true", help="no tqdm progress bar"),
        Flag(
            "--from-predictions",
            action="store_true",
            help="recompute the metrics from <predictions_dir>/<name>.jsonl (no training)",
        ),
    ],  # fmt: skip
    run=lambda ctx: run_baseline(
        ctx.baselines,
        ctx.args.name,
        ctx.profile,
        ctx.model,
        ctx.args.from_predictions,
        not ctx.args.no_progress,
    ),  # fmt: skip
    show=lambda out: {
        "name": out["_meta"]["system"],
        **{k: round(out[k]["mean"], 4) for k in SUMMARY if k in out},
        "train_s": out["_meta"].get("train_s"),
    },
)
main = STAGE.main

if __name__ == "__main__":
    main()
