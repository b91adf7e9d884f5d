"""DVC stage ``credit_lab``: GRPO vs GDPO vs GRCA on a text-only JSON task, many seeds.

    python -m pointvl.stages.credit_lab --params params.yaml

Runs ``pointvl.train.lab.run_lab`` (base SFT, every arm x seed with the real
``RoutedGRPOTrainer``, the gradient-variance measurement) and writes ``<out_dir>/``:
``summary.json`` (per arm: seeds, final held-out reward and samples to threshold with 95%
t-intervals over seeds; GRCA/GRPO sample ratios with bootstrap CIs), ``runs.json`` (every
learning curve), ``variance.json`` (Sec. 3.6 terms per field) and ``credit_lab.png``.
"""

from __future__ import annotations

import json
import tempfile
import time

from pointvl.io import atomic_dir
from pointvl.stages._cli import Flag, Stage
from pointvl.train.lab import LabConfig, run_lab, summarize
from pointvl.viz.credit_lab import lab_figure


def run(cfg: LabConfig, progress: bool = True) -> dict:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="credit_lab_") as work:
        runs, variance = run_lab(cfg, work, progress)
    summary = summarize(cfg, runs)
    summary["wall_s"] = time.perf_counter() - t0
    with atomic_dir(cfg.out_dir) as out:
        (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        (out / "runs.json").write_text(json.dumps(runs) + "\n")
        (out / "variance.json").write_text(json.dumps(variance, indent=2, sort_keys=True) + "\n")
        lab_figure(runs, summary, variance, out / "credit_lab.png")
    return summary


STAGE = Stage(
    "credit_lab",
    __doc__,
    sections={"credit_lab": LabConfig},
    flags=[Flag("--no-progress", action="store_true", help="no progress bars")],
    run=lambda ctx: run(ctx.credit_lab, progress=not ctx.args.no_progress),
    show=lambda summary: summary["arms"],
)
main = STAGE.main

if __name__ == "__main__":
    main()
