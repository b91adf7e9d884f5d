"""Training drawn (Secs. 3.2, 3.5, 4.2): logged curves, last values, launch commands, configs.

The curves read ``MetricsLogger`` records (``pointvl.train``: one JSON line per logged step,
namespaced keys ``reward/<field>``, ``adv/<field>_zero_std_frac``, ``spans/<field>_coverage``,
``loss/clipfrac``); the launch helpers read ``dvc.yaml`` and ``configs/accelerate``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pointvl.io import read_jsonl
from pointvl.schema import GEOMETRIC_FIELDS
from pointvl.viz.html import Html, html_table

# the per-step diagnostics every RL variant logs (pointvl.step.diagnostics), in plot order
TRAINING_CURVE_KEYS = (
    *(f"reward/{f}" for f in GEOMETRIC_FIELDS),
    "reward/rpc",
    "reward/seq",
    *(f"adv/{f}_zero_std_frac" for f in GEOMETRIC_FIELDS),
    *(f"spans/{f}_coverage" for f in GEOMETRIC_FIELDS),
    "spans/parse_fail_frac",
    "loss/clipfrac",
)
# y-axis label per key family (a key matches the first prefix / suffix rule that fits)
Y_LABELS = (
    ("reward/", "", "mean reward"),
    ("adv/", "_zero_std_frac", "groups, no spread"),
    ("spans/", "_coverage", "completions with span"),
    ("spans/", "_frac", "completions"),
    ("loss/", "clipfrac", "clipped tokens"),
    ("loss", "", "loss"),
)
LINE_STYLES = ("-", "--", ":", "-.")


def y_label(key: str) -> str:
    """The y-axis label of a logged metric (``Y_LABELS``); the key itself when none fits."""
    for prefix, suffix, label in Y_LABELS:
        if key.startswith(prefix) and key.endswith(suffix):
            return label
    return key


def dvc_commands(dvc_yaml: str | os.PathLike, variables: dict | None = None) -> dict[str, str]:
    """``{stage: cmd}`` of a dvc.yaml, ``foreach`` stages expanded as ``stage@item``;
    ``variables`` ({"active.accelerate_config": ..., "profile": ...}) are filled in."""
    import yaml

    def fill(cmd: str) -> str:
        for key, value in (variables or {}).items():
            cmd = cmd.replace("${" + key + "}", str(value))
        return cmd

    out = {}
    for name, st in yaml.safe_load(Path(dvc_yaml).read_text())["stages"].items():
        if "foreach" in st and isinstance(st["foreach"], list | dict):
            for item in st["foreach"]:
                out[f"{name}@{item}"] = fill(st["do"]["cmd"].replace("${item}", str(item)))
        elif "cmd" in st:
            out[name] = fill(st["cmd"])
    return out


def accelerate_configs_html(config_dir: str | os.PathLike) -> Html:
    """One row per ``configs/accelerate/*.yaml``: backend, processes, precision, ZeRO stage."""
    import yaml

    rows = []
    for path in sorted(Path(config_dir).glob("*.yaml")):
        c = yaml.safe_load(path.read_text())
        ds = c.get("deepspeed_config") or {}
        rows.append([path.name, c.get("distributed_type"), c.get("num_processes"),
                     c.get("mixed_precision"), "CPU" if c.get("use_cpu") else "GPU",
                     ds.get("zero_stage")])  # fmt: skip
    cols = ["--config_file", "distributed_type", "num_processes", "mixed_precision", "device",
            "ZeRO stage"]  # fmt: skip
    return html_table(rows, cols)


def read_logs(paths: Mapping[str, str | os.PathLike]) -> dict[str, list[dict]]:
    """``{run: log.jsonl path}`` -> ``{run: records}`` for the logs that exist (others dropped)."""
    logs = {name: read_jsonl(p) for name, p in paths.items()}
    return {name: recs for name, recs in logs.items() if recs}


def training_curves_figure(
    logs: Mapping[str, Sequence[Mapping]],
    keys: Sequence[str] = TRAINING_CURVE_KEYS,
    title: str = "",
    smooth: int = 1,
    ncols: int = 5,
):
    """Matplotlib grid: one panel per logged metric ``keys`` (``reward/<field>``, ...), one
    line per run of ``logs`` ({run: MetricsLogger records}); moving average over ``smooth``
    logged steps. Each panel has its y label (``y_label``); runs differ in colour *and* line
    style, so lines that overlap stay distinguishable. A metric no run logged says so."""
    import matplotlib.pyplot as plt

    nrows = -(-len(keys) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.5 * nrows), squeeze=False,
                             constrained_layout=True)  # fmt: skip
    for ax, key in zip(axes.flat, keys):
        for j, (run, recs) in enumerate(logs.items()):
            pts = [(r["step"], r[key]) for r in recs if r.get(key) is not None]
            if not pts:
                continue
            s, y = np.asarray(pts, dtype=float).T  # (S,), (S,)
            k = max(1, min(smooth, len(y)))
            ax.plot(s[k - 1 :], np.convolve(y, np.ones(k) / k, mode="valid"), label=run,
                    ls=LINE_STYLES[j % len(LINE_STYLES)], lw=1.3, alpha=0.9)  # fmt: skip
        if not ax.lines:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(key, fontsize=9)
        ax.set_ylabel(y_label(key), fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.supxlabel("optimizer step", fontsize=9)
    if title:
        fig.suptitle(title + (f" (moving average over {smooth} logged steps)" if smooth > 1
                              else ""), fontsize=10)  # fmt: skip
    return fig


def last_metrics_html(
    logs: Mapping[str, Sequence[Mapping]], keys: Sequence[str], last: int = 1
) -> Html:
    """Mean of each metric over the last ``last`` logged steps, one row per run."""
    rows = []
    for run, recs in logs.items():
        row = [run, max((r.get("step", 0) for r in recs), default=0)]
        for key in keys:
            vals = [r[key] for r in recs if r.get(key) is not None][-last:]
            row.append(float(np.mean(vals)) if vals else None)
        rows.append(row)
    return html_table(rows, ["run", "steps", *keys])
