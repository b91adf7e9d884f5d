"""How much a metric moves between seeds of one system (e.g. SFT seeds 0, 1, 2), beside how
much it moves between RL seeds of an arm: the variance a single SFT checkpoint hides.

    groups = {"sft": [sft.json, sft_seed1.json, sft_seed2.json], "grca": [...]}
    seed_spread(groups, ["kpa3d", "pck3d"])
      -> {"sft": {"kpa3d": {"seeds": 3, "mean", "sd", "min", "max", "ci_lo", "ci_hi"}, ...}}

Each file is an evaluation JSON (``pointvl.stages.evaluate``: ``{metric: {"mean": ...}}``);
``sd`` is the sample standard deviation over seeds (ddof 1) and ``ci_lo``/``ci_hi`` the 95%
t-interval of the mean over seeds (few seeds: wide, as it should be).

    paired_over_seeds(seed_means(groups, metrics), {"grca - sft": ("grca_per_sft", "sft")}, ...)
      -> {"grca - sft": {"kpa3d": {"seeds", "mean", "ci_lo", "ci_hi", "per_seed"}}}

A paired difference takes two groups whose files are aligned seed by seed (file k of each
group comes from the same SFT seed k), the per-seed difference A_k - B_k, and the t-interval
over seeds of those differences (``stats.paired_seed_difference``): the SFT draw is shared
inside a pair and varies between pairs, so the interval includes the SFT-seed variance that an
interval over RL seeds of one SFT checkpoint leaves out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pointvl.eval.stats import paired_seed_difference, t_interval


def _known(v: float) -> float | None:
    """None for a NaN (JSON has none: a bound one seed cannot give), else the value."""
    return None if math.isnan(v) else v


def _spread(values: Sequence[float]) -> dict:
    """Mean, SD (ddof 1) and 95% t-interval over seeds (``stats.t_interval``); None where one
    seed cannot give them."""
    ci = t_interval(values)
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {"seeds": len(values), "mean": ci["mean"], "sd": sd, "min": min(values),
            "max": max(values), "ci_lo": _known(ci["lo"]), "ci_hi": _known(ci["hi"])}  # fmt: skip


def seed_means(
    groups: Mapping[str, Sequence[str | Path]], metrics: Sequence[str]
) -> dict[str, dict[str, list[float]]]:
    """{group: {metric: [test-set mean of each file, in file order]}}. A missing file or
    metric, or a mean that is null / NaN, is an error naming it: a spread over fewer seeds
    than listed would mislead."""
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
            values = [r[m]["mean"] for r in runs]
            bad = [str(f) for f, v in zip(files, values) if v is None or not math.isfinite(v)]
            if bad:
                raise ValueError(f"seed_spread: metric {m!r} has no finite mean in {bad}")
            out[group][m] = [float(v) for v in values]
    return out


def spread_of_means(means: Mapping[str, Mapping[str, Sequence[float]]]) -> dict:
    """{group: {metric: spread over its seeds}} from ``seed_means``' output."""
    return {g: {m: _spread(v) for m, v in row.items()} for g, row in means.items()}


def seed_spread(groups: Mapping[str, Sequence[str | Path]], metrics: Sequence[str]) -> dict:
    """{group: {metric: spread over the group's files}} (module docstring)."""
    return spread_of_means(seed_means(groups, metrics))


def paired_over_seeds(
    means: Mapping[str, Mapping[str, Sequence[float]]],
    pairs: Mapping[str, Sequence[str]],
    metrics: Sequence[str],
) -> dict:
    """{name: {metric: A - B per seed and its t-interval over seeds}} for each ``name: (A, B)``
    of ``pairs``; ``means`` as ``seed_means`` returns it. A and B must list as many seeds."""
    out = {}
    for name, (a, b) in pairs.items():
        for g in (a, b):
            if g not in means:
                raise KeyError(f"seed_spread.paired: {name!r} names group {g!r}, not in groups")
        if len(means[a][metrics[0]]) != len(means[b][metrics[0]]):
            raise ValueError(
                f"seed_spread.paired: {name!r}: {a} has {len(means[a][metrics[0]])} seeds, "
                f"{b} has {len(means[b][metrics[0]])}: expected files aligned seed by seed"
            )
        out[name] = {}
        for m in metrics:
            d = paired_seed_difference(dict(enumerate(means[a][m])), dict(enumerate(means[b][m])))
            out[name][m] = {"seeds": d["n"], "mean": d["mean"], "ci_lo": _known(d["lo"]),
                            "ci_hi": _known(d["hi"]), "per_seed": d["per_seed"]}  # fmt: skip
    return out


def _table(title: str, first: str, rows: Mapping[str, Mapping[str, dict]], cell) -> str:
    """A markdown table: one row per entry of ``rows`` (``name (seeds)``), one column per
    metric, each cell ``cell(entry)``."""
    metrics = list(next(iter(rows.values())))
    lines = [f"### {title}", "", f"| {first} (seeds) | " + " | ".join(metrics) + " |",
             "|---|" + "---|" * len(metrics)]  # fmt: skip
    for name, row in rows.items():
        n = next(iter(row.values()))["seeds"]
        lines.append(f"| {name} ({n}) | " + " | ".join(cell(row[m]) for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def spread_markdown(spread: Mapping[str, Mapping[str, dict]], title: str) -> str:
    """One row per group, one column per metric: ``mean ± sd [min, max]`` over seeds."""

    def cell(s: dict) -> str:
        sd = f" ± {s['sd']:.3f}" if s["sd"] is not None else ""
        return f"{s['mean']:.3f}{sd} [{s['min']:.3f}, {s['max']:.3f}]"

    return _table(title, "system", spread, cell)


def paired_markdown(paired: Mapping[str, Mapping[str, dict]], title: str) -> str:
    """One row per difference, one column per metric: ``mean [ci_lo, ci_hi]`` over seeds."""

    def cell(d: dict) -> str:
        ci = f" [{d['ci_lo']:+.3f}, {d['ci_hi']:+.3f}]" if d["ci_lo"] is not None else ""
        return f"{d['mean']:+.3f}{ci}"

    return _table(title, "difference", paired, cell)
