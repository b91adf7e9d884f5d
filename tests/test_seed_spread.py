"""Spread of test metrics over seeds (pointvl.seed_spread, the sft_seeds study's stage)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from pointvl.seed_spread import (
    paired_markdown,
    paired_over_seeds,
    seed_means,
    seed_spread,
    spread_markdown,
)
from pointvl.stages import seed_spread as stage


def _write(tmp_path, name, **metrics):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({m: {"mean": v, "lo": v, "hi": v} for m, v in metrics.items()}))
    return path


def test_spread_is_the_sample_sd_and_t_interval_over_seeds(tmp_path):
    vals = [0.52, 0.55, 0.61]
    files = [_write(tmp_path, f"s{i}", kpa3d=v, iou3d=0.7) for i, v in enumerate(vals)]
    s = seed_spread({"sft": files}, ["kpa3d", "iou3d"])["sft"]
    assert s["kpa3d"]["seeds"] == 3 and s["kpa3d"]["mean"] == pytest.approx(np.mean(vals))
    assert s["kpa3d"]["sd"] == pytest.approx(np.std(vals, ddof=1))
    lo, hi = stats.t.interval(0.95, 2, loc=np.mean(vals), scale=stats.sem(vals))
    assert (s["kpa3d"]["ci_lo"], s["kpa3d"]["ci_hi"]) == (pytest.approx(lo), pytest.approx(hi))
    assert (s["kpa3d"]["min"], s["kpa3d"]["max"]) == (0.52, 0.61)
    assert s["iou3d"]["sd"] == pytest.approx(0.0)
    md = spread_markdown({"sft": s}, "t")
    assert "| sft (3) | 0.560 ± 0.046 [0.520, 0.610] | 0.700 ± 0.000 [0.700, 0.700] |" in md


def test_paired_difference_is_the_t_interval_of_per_seed_differences(tmp_path):
    """A - B seed by seed (file k of A with file k of B), then the t-interval over seeds of
    the differences: the shared SFT draw cancels inside a pair (here B is A minus a nearly
    constant 0.1, so the interval is narrow although A itself spreads widely)."""
    a = [0.50, 0.70, 0.60]
    b = [0.41, 0.60, 0.49]
    groups = {
        "grca": [_write(tmp_path, f"a{i}", kpa3d=v) for i, v in enumerate(a)],
        "sft": [_write(tmp_path, f"b{i}", kpa3d=v) for i, v in enumerate(b)],
    }
    means = seed_means(groups, ["kpa3d"])
    assert means["grca"]["kpa3d"] == a
    d = paired_over_seeds(means, {"grca - sft": ["grca", "sft"]}, ["kpa3d"])["grca - sft"]["kpa3d"]
    diffs = np.subtract(a, b)
    assert d["per_seed"] == pytest.approx(list(diffs)) and d["seeds"] == 3
    lo, hi = stats.t.interval(0.95, 2, loc=diffs.mean(), scale=stats.sem(diffs))
    assert (d["ci_lo"], d["ci_hi"]) == (pytest.approx(lo), pytest.approx(hi))
    assert d["ci_hi"] - d["ci_lo"] < 0.05  # the spread of A alone gives a CI wider than 0.4
    md = paired_markdown({"grca - sft": {"kpa3d": d}}, "t")
    assert f"| grca - sft (3) | {diffs.mean():+.3f} [{lo:+.3f}, {hi:+.3f}] |" in md
    with pytest.raises(ValueError, match="'x': grca has 3 seeds, short has 2"):
        short = {**means, "short": {"kpa3d": b[:2]}}
        paired_over_seeds(short, {"x": ["grca", "short"]}, ["kpa3d"])
    with pytest.raises(KeyError, match="names group 'nope'"):
        paired_over_seeds(means, {"x": ["grca", "nope"]}, ["kpa3d"])


def test_a_missing_run_or_metric_is_an_error_naming_it(tmp_path):
    a = _write(tmp_path, "a", kpa3d=0.5)
    with pytest.raises(FileNotFoundError, match="sft: .*nope.json"):
        seed_spread({"sft": [a, tmp_path / "nope.json"]}, ["kpa3d"])
    with pytest.raises(KeyError, match="'pck3d' missing"):
        seed_spread({"sft": [a, a]}, ["pck3d"])


def test_stage_writes_json_and_markdown_and_refuses_one_seed_groups(tmp_path):
    root = Path(stage.__file__).resolve().parents[2]
    files = [str(_write(tmp_path, f"s{i}", kpa3d=0.5 + i / 10)) for i in range(3)]
    base = os.path.relpath(root / "params.yaml", tmp_path)

    def params(groups, paired=None):
        path = tmp_path / "params.yaml"
        path.write_text(
            json.dumps(
                {
                    "extends": base,
                    "seed_spread": {
                        "groups": groups,
                        "metrics": ["kpa3d"],
                        "out_dir": str(tmp_path / "out"),
                        "paired": paired or {},
                    },
                }
            )
        )
        return str(path)

    stage.main(["--params", params({"sft": files})])
    out = json.loads((tmp_path / "out/seed_spread.json").read_text())
    assert out["spread"]["sft"]["kpa3d"]["mean"] == pytest.approx(0.6)
    assert "| sft (3) |" in (tmp_path / "out/seed_spread.md").read_text()
    with pytest.raises(SystemExit, match="seed_spread.groups: .*'sft': 1"):
        stage.main(["--params", params({"sft": files[:1]})])
    stage.main(["--params", params({"sft": files, "rl": files[::-1]}, {"d": ["rl", "sft"]})])
    out = json.loads((tmp_path / "out/seed_spread.json").read_text())
    assert out["differences"]["d"]["kpa3d"]["per_seed"] == pytest.approx([0.2, 0.0, -0.2])
    assert "| d (3) | +0.000 [" in (tmp_path / "out/seed_spread.md").read_text()
    with pytest.raises(SystemExit, match=r"seed_spread.paired.d=\['rl', 'x'\]: expected"):
        stage.main(["--params", params({"sft": files, "rl": files}, {"d": ["rl", "x"]})])
    with pytest.raises(SystemExit, match=r"paired.d=\['rl', 'rl'\]: expected .* two different"):
        stage.main(["--params", params({"sft": files, "rl": files}, {"d": ["rl", "rl"]})])
    with pytest.raises(SystemExit, match="the groups list 2 and 3 files; expected as many"):
        stage.main(["--params", params({"sft": files, "rl": files[:2]}, {"d": ["rl", "sft"]})])


def test_a_mean_that_is_not_finite_is_an_error_naming_the_file(tmp_path):
    a = _write(tmp_path, "a", kpa3d=0.5)
    nan = _write(tmp_path, "nan", kpa3d=float("nan"))
    with pytest.raises(ValueError, match="'kpa3d' has no finite mean in .*nan.json"):
        seed_means({"sft": [a, nan]}, ["kpa3d"])
    none = tmp_path / "none.json"
    none.write_text(json.dumps({"kpa3d": {"mean": None}}))
    with pytest.raises(ValueError, match="no finite mean in .*none.json"):
        seed_spread({"sft": [a, none]}, ["kpa3d"])
