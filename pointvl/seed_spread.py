"""How much a metric moves between seeds of one system (e.g. SFT seeds 0, 1, 2), beside how
much it moves between RL seeds of an arm: the variance a single SFT checkpoint hides.

    groups = {"sft": [sft.json, sft_seed1.json, sft_seed2.json], "grca": [...]}
    seed_spread(groups, ["kpa3d", "pck3d"])
      -> {"sft": {"kpa3d": {"seeds": 3, "mean", "sd", "min", "max", "ci_lo", "ci_hi"}, ...}}

Each file is an evaluation JSON (``pointvl.stages.evaluate``: ``{metric: {"mean": ...}}``);
``sd`` is the sample standard deviation over seeds (ddof 1) and ``ci_lo``/``ci_hi`` the 95%
t-interval of the mean over seeds (few seeds: wide, as it should be).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pointvl.eval.stats import t_interval


def _spread(values: Sequence[float]) -> dict:
    """Mean, SD (ddof 1) and 95% t-interval over seeds (``stats.t_interval``); None where one
    seed cannot give them."""
    ci = t_interval(values)
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
    known = lambda v: None if math.isnan(v) else v  # noqa: E731
    return {"seeds": len(values), "mean": ci["mean"], "sd": sd, "min": min(values),
            "max": max(values), "ci_lo": known(ci["lo"]), "ci_hi": known(ci["hi"])}  # fmt: skip


def seed_spread(groups: Mapping[str, Sequence[str | Path]], metrics: Sequence[str]) -> dict:
    """{group: {metric: spread over the group's files}} (module docstring). A missing file
    or metric is an error naming it: a spread over fewer seeds than listed would mislead."""
    out = {}
    for group, files in groups.items():
        runs = []
        for f in files:
            if not Path(f).is_file():
                raise FileNotFoundError(f"seed_spread: {group}: {f} does not exist (run it first)")
            runs.append(json.loads(Path(f).read_text()))
        out[group] = {}
        for m in metrics:
            missing = [str(f) for f, r in zip(files, runs) if m not in r]
            if missing:
                raise KeyError(f"seed_spread: metric {m!r} missing in {missing}")
            out[group][m] = _spread([float(r[m]["mean"]) for r in runs])
    return out


def spread_markdown(spread: Mapping[str, Mapping[str, dict]], title: str) -> str:
    """One row per group, one column per metric: ``mean ± sd [min, max]`` over seeds."""
    metrics = list(next(iter(spread.values())))
    lines = [f"### {title}", "", "| system (seeds) | " + " | ".join(metrics) + " |",
             "|---|" + "---|" * len(metrics)]  # fmt: skip
    for group, row in spread.items():
        n = next(iter(row.values()))["seeds"]
        cells = []
        for m in metrics:
            s = row[m]
            sd = f" ± {s['sd']:.3f}" if s["sd"] is not None else ""
            cells.append(f"{s['mean']:.3f}{sd} [{s['min']:.3f}, {s['max']:.3f}]")
        lines.append(f"| {group} ({n}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
