"""DVC stage ``build_dataset``: the benchmark of Sec. 4.1 into ``data/<profile>/``.

    python -m pointvl.stages.build_dataset --params params.yaml [--profile smoke] [--out DIR]
        [--metrics FILE] [--figures DIR] [--workers N] [--no-progress]

Reads the ``build_dataset`` section (``BuildDatasetConfig``) and ``schema.quant_bins``,
builds the dataset with a process pool (``pointvl.data.build``: it refuses an ``--out``
folder that is neither empty nor one of our datasets, and fails naming any shortfall), writes
the dataset figures (``pointvl.viz.reprojection``) and the stage metrics (counts, skipped
meshes per reason, instances/s) to ``build_dataset.metrics``.
"""

from __future__ import annotations

from pathlib import Path

from pointvl.config import ConfigError, SchemaConfig
from pointvl.data.build import BuildDatasetConfig, build
from pointvl.io import write_metrics
from pointvl.stages._cli import Context, Flag, Stage


def _check(ctx: Context) -> None:
    cfg, schema = ctx.build_dataset, ctx.schema
    if cfg.num_keypoints != schema.num_keypoints:
        raise ConfigError(
            f"build_dataset.num_keypoints={cfg.num_keypoints} differs from "
            f"schema.num_keypoints={schema.num_keypoints}: expected the same M "
            "(both are ${shared.num_keypoints} in params.yaml)"
        )
    root = Path(cfg.shapenet_root)
    if cfg.source == "shapenet" and not (root / "taxonomy.json").is_file():
        raise ConfigError(
            f"build_dataset.shapenet_root={cfg.shapenet_root!r}: "
            + ("no taxonomy.json in it" if root.is_dir() else "no such folder")
            + " (expected a local ShapeNetCore v2 copy: taxonomy.json, <synset>/<model>/models/"
            "model_normalized.obj)"
        )


def _run(ctx: Context) -> dict:
    from pointvl.viz.reprojection import write_dataset_figures

    cfg = ctx.build_dataset
    metrics = build(cfg, cfg.out_dir, ctx.schema.quant_bins, ctx.profile, not ctx.args.no_progress)
    metrics["out_dir"] = cfg.out_dir
    if cfg.figure_samples > 0:
        metrics["figures"] = write_dataset_figures(cfg.out_dir, cfg.figures_dir, cfg.figure_samples)
    write_metrics(cfg.metrics, metrics)  # timings, paths: <stem>.run.json
    return metrics


STAGE = Stage(
    "build_dataset",
    __doc__,
    sections={"build_dataset": BuildDatasetConfig, "schema": SchemaConfig},
    flags=[
        Flag("--out", to="build_dataset.out_dir", help="output folder (default: out_dir)"),
        Flag("--metrics", to="build_dataset.metrics"),
        Flag("--figures", to="build_dataset.figures_dir"),
        Flag("--workers", to="build_dataset.workers"),
        Flag("--no-progress", action="store_true", help="no progress bar"),
    ],
    prepare=_check,
    run=_run,
)
main = STAGE.main

if __name__ == "__main__":
    main()
