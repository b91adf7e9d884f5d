"""DVC stage ``build_dataset``: the benchmark of Sec. 4.1 into ``data/<profile>/``.

    python -m pointvl.stages.build_dataset --params params.yaml [--profile smoke] [--out DIR]

Reads the ``build_dataset`` section (``BuildDatasetConfig``) and ``schema.quant_bins``,
builds the dataset with a process pool (``pointvl.data.build``), and writes the stage
metrics (counts, skipped meshes per reason, instances/s) to ``build_dataset.metrics``.
"""

from __future__ import annotations

import argparse
import json
import logging

from pointvl.config import ConfigError, SchemaConfig, load_params, load_section
from pointvl.data.build import BuildDatasetConfig, build
from pointvl.data.dataset import read_manifest
from pointvl.io import write_metrics


def write_figures(data_dir, figures_dir, n: int) -> list[str]:
    """Reprojection HTML (offline) and a PNG gallery of the first ``n`` test samples."""
    from pathlib import Path

    from pointvl.data.dataset import PointVLDataset
    from pointvl.viz.reprojection import gallery_png, reprojection_figure, write_html

    split = "test" if read_manifest(data_dir)["splits"]["test"]["count"] else "train"
    ds = PointVLDataset(data_dir, split, qa_mode="first")
    samples = [ds[i] for i in range(min(n, len(ds)))]
    if not samples:
        return []
    figures_dir = Path(figures_dir)
    html = write_html(reprojection_figure(samples), figures_dir / "dataset_reprojection.html")
    png = gallery_png(samples, figures_dir / "dataset_gallery.png")
    return [str(html), str(png)]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None, help="smoke | tiny | paper (default: params)")
    ap.add_argument("--out", default=None, help="output folder (default: build_dataset.out_dir)")
    ap.add_argument("--metrics", default=None, help="metrics JSON (default: build_dataset.metrics)")
    ap.add_argument("--figures", default=None, help="figures folder (default: figures_dir)")
    ap.add_argument("--workers", type=int, default=None, help="override build_dataset.workers")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    profile = load_params(args.params, args.profile)["profile"]
    cfg = load_section(args.params, "build_dataset", BuildDatasetConfig, args.profile)
    schema = load_section(args.params, "schema", SchemaConfig, args.profile)
    if cfg.num_keypoints != schema.num_keypoints:
        raise ConfigError(
            f"build_dataset.num_keypoints={cfg.num_keypoints} differs from "
            f"schema.num_keypoints={schema.num_keypoints}: expected the same M"
        )
    if args.workers is not None:
        cfg.workers = args.workers
        cfg.validate()
    out = args.out or cfg.out_dir
    metrics = build(cfg, out, schema.quant_bins, profile, progress=not args.no_progress)
    metrics["out_dir"] = str(out)
    if cfg.figure_samples > 0:
        metrics["figures"] = write_figures(out, args.figures or cfg.figures_dir, cfg.figure_samples)
    write_metrics(args.metrics or cfg.metrics, metrics)  # timings, paths: <stem>.run.json
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main()
