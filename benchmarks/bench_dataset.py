"""Throughput of the dataset builder: instances per second per core, tiny and paper settings.

    python benchmarks/bench_dataset.py [--instances 28] [--full-tiny]

One core (affinity + one OpenMP thread, in-process build, no pool): a handful of procedural
instances with the ``tiny`` settings (params.yaml) and with the ``paper`` settings (8,192
points, 448 x 448; procedural meshes stand in for ShapeNet, which is not on this machine),
with a per-stage time breakdown. The full ``tiny`` build time is estimated from the
one-core rate and the pool size; ``--full-tiny`` also measures it (builds into a temp dir).
Writes results/bench/dataset.json. Target: tiny >= 5 instances/s per core.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("OPEN3D_DISABLE_WEB_VISUALIZER", "true")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's pointvl

from pointvl.config import SchemaConfig, load_section  # noqa: E402
from pointvl.data import annotate, build, shapes  # noqa: E402
from pointvl.data.cameras import sample_camera  # noqa: E402
from pointvl.data.render import Material, RaycastRenderer  # noqa: E402
from pointvl.data.sampling import farthest_point_sampling, sample_points  # noqa: E402
from pointvl.io import atomic_write_json  # noqa: E402
from pointvl.schema import format_target  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TARGET = 5.0


def stage_breakdown(cfg: build.BuildDatasetConfig, n: int, quant_bins: int) -> dict:
    """Seconds per instance for each pipeline step (same calls as build.make_instance)."""
    t = defaultdict(float)
    cats = cfg.category_list()
    for i in range(n):
        seed = build.instance_seed(cfg.seed, "train", i)
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        mesh = shapes.make_shape(cats[i % len(cats)], rng)
        t1 = time.perf_counter()
        pts = sample_points(mesh, cfg.num_points, seed, cfg.poisson_init_factor, cfg.normal_knn)
        t2 = time.perf_counter()
        cam = sample_camera(mesh.category, rng, cfg.image_size, cfg.fov_deg)
        out = RaycastRenderer().render(mesh, cam, Material.for_mesh(mesh, rng))
        t3 = time.perf_counter()
        idx = farthest_point_sampling(pts[:, :3], cfg.num_keypoints)
        geo = annotate.geometry_labels(pts, idx, cam, out.mask)
        desc = annotate.describe(mesh, geo["bbox3d"], cam)
        qas = annotate.question_answers(mesh, geo["bbox3d"], cam, rng, cats)
        for _, _, a in qas:
            format_target({**geo, "answer": a, "description": desc}, quant_bins)
        t4 = time.perf_counter()
        build._png(out.rgb), build._png(out.mask)
        t5 = time.perf_counter()
        for k, (a, b) in {"mesh": (t0, t1), "poisson_normals": (t1, t2), "render": (t2, t3),
                          "annotate": (t3, t4), "png_encode": (t4, t5)}.items():  # fmt: skip
            t[k] += (b - a) / n
    return dict(t)


def bench_setting(name: str, cfg: build.BuildDatasetConfig, n: int, quant_bins: int) -> dict:
    cfg = dataclasses.replace(cfg, source="procedural", train_count=n, test_count=0, workers=1)
    with tempfile.TemporaryDirectory() as tmp:
        build.build(cfg, Path(tmp) / name, quant_bins, name, progress=False)  # warm-up
        t0 = time.perf_counter()
        m = build.build(cfg, Path(tmp) / name, quant_bins, name, progress=False)
        seconds = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in (Path(tmp) / name).rglob("*.parquet"))
    return {
        "num_points": cfg.num_points,
        "image_size": cfg.image_size,
        "instances": m["instances"],
        "seconds": round(seconds, 3),
        "instances_per_s_per_core": round(m["instances"] / seconds, 2),
        "bytes_per_instance": int(size / max(m["instances"], 1)),
        "seconds_per_instance_by_step": {
            k: round(v, 5) for k, v in stage_breakdown(cfg, min(n, 14), quant_bins).items()
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=28)
    ap.add_argument("--full-tiny", action="store_true", help="also time the full tiny build")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench" / "dataset.json"))
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    params = ROOT / "params.yaml"
    tiny = load_section(params, "build_dataset", build.BuildDatasetConfig, "tiny")
    paper = load_section(params, "build_dataset", build.BuildDatasetConfig, "paper")
    q_tiny = load_section(params, "schema", SchemaConfig, "tiny").quant_bins
    q_paper = load_section(params, "schema", SchemaConfig, "paper").quant_bins
    res_tiny = bench_setting("tiny", tiny, args.instances, q_tiny)
    res_paper = bench_setting("paper", paper, max(4, args.instances // 4), q_paper)
    n_tiny = tiny.train_count + tiny.test_count
    rate = res_tiny["instances_per_s_per_core"]
    result = {
        "machine": platform.machine(),
        "cores_used": 1,
        "target_instances_per_s_per_core_tiny": TARGET,
        "meets_target": rate >= TARGET,
        "tiny": res_tiny,
        "paper_settings_procedural_meshes": res_paper,
        "tiny_full_build": {
            "instances": n_tiny,
            "workers": tiny.workers,
            "estimated_seconds": round(n_tiny / (rate * tiny.workers) + 5.0, 1),
            "estimate_rule": "instances / (one-core rate x workers) + ~5 s pool start-up",
        },
        "paper_full_build_estimated_hours_2_workers": round(
            (paper.train_count + paper.test_count)
            / (res_paper["instances_per_s_per_core"] * 2)
            / 3600,
            2,
        ),  # fmt: skip
    }
    if args.full_tiny:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            m = build.build(tiny, Path(tmp) / "tiny", q_tiny, "tiny", progress=False)
            result["tiny_full_build"]["measured_seconds"] = round(time.perf_counter() - t0, 1)
            result["tiny_full_build"]["content_hash"] = m["content_hash"]
            result["tiny_full_build"]["gt_rpc_mean"] = m["gt_rpc_mean"]
    atomic_write_json(args.out, result)
    print(result)


if __name__ == "__main__":
    main()
