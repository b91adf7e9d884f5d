"""Spread of test metrics over seeds (pointvl.seed_spread, the sft_seeds study's stage)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from pointvl.seed_spread import seed_spread, spread_markdown
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

    def params(groups):
        path = tmp_path / "params.yaml"
        path.write_text(
            json.dumps(
                {
                    "extends": base,
                    "seed_spread": {
                        "groups": groups,
                        "metrics": ["kpa3d"],
                        "out_dir": str(tmp_path / "out"),
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
