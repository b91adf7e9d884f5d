"""Table 3 (view): seed aggregation, no paper columns, the stage CLI (pointvl.eval.view_table)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from pointvl.eval.view_table import METRICS, seed_cell

ROOT = Path(__file__).resolve().parent.parent


def test_seed_cell_one_seed_is_its_bootstrap_ci_several_a_t_interval():
    assert seed_cell([]) is None
    assert seed_cell([(0.5, 0.4, 0.6)]) == (0.5, 0.4, 0.6)
    means = [0.61, 0.55, 0.70, 0.58]
    cell = seed_cell([(m, m - 0.01, m + 0.01) for m in means])
    lo, hi = stats.t.interval(0.95, len(means) - 1, loc=np.mean(means), scale=stats.sem(means))
    assert cell["mean"] == pytest.approx(np.mean(means))
    assert (cell["lo"], cell["hi"]) == (pytest.approx(lo), pytest.approx(hi))
    assert cell["std"] == pytest.approx(np.std(means, ddof=1)) and cell["n_seeds"] == 4
    # the seeds' spread, not the per-seed sample CIs, sets the width
    assert hi - lo > 0.1


def _metrics(value: float) -> dict:
    return {m: {"mean": value, "lo": value - 0.02, "hi": value + 0.02, "n": 10} for m in METRICS}


def test_table_view_stage_writes_ours_only(tmp_path):
    mdir = tmp_path / "eval"
    mdir.mkdir()
    (mdir / "sft.json").write_text(json.dumps(_metrics(0.5)))
    for s, v in ((0, 0.6), (1, 0.7)):
        (mdir / f"grca_seed{s}.json").write_text(json.dumps(_metrics(v)))
    (mdir / "grpo_seed0.json").write_text(json.dumps(_metrics(0.55)))  # one seed of two
    (mdir / "trivial.json").write_text(json.dumps({
        "trivial: cloud AABB + FPS keypoints (no learning)": _metrics(0.69),
        "trivial: an unknown row": _metrics(0.1),
    }))  # fmt: skip
    probes = {"_meta": {}, "iou3d_cloud_aabb": {"mean": 0.893}, "kpts3d_occluded": {"mean": 0.54}}
    (mdir / "probes.json").write_text(json.dumps(probes))
    params = {"profile": "smoke", "table_view": {
        "arms": ["grpo", "grca", "grca_rpc"], "seeds": [0, 1], "metrics_dir": str(mdir),
        "probes": str(mdir / "probes.json"), "tables_dir": str(tmp_path / "tables")}}  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, "-m", "pointvl.stages.table_view", "--params"]
    cmd.append(str(tmp_path / "params.yaml"))
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)["seeds_run"] == {"sft": 1, "grpo": 1, "grca": 2, "grca_rpc": 0}
    md = (tmp_path / "tables/table3_view.md").read_text()
    assert "(paper)" not in md and "PCK-3D@0.1 (ours, 95% CI)" in md.splitlines()[4]
    lines = [line for line in md.splitlines() if line.startswith("|")]
    rows = {line.split(" | ")[0].strip("| "): line for line in lines}
    assert "0.650" in rows["GRCA"] and "(2 seeds)" in rows["GRCA"]
    assert "no run" in rows["GRCA + RPC"]
    assert "0.550 [0.530, 0.570]" in rows["GRPO (broadcast reward)"]
    assert "trivial: visible-cloud AABB + FPS" in rows and "trivial: an unknown row" not in rows
    assert "0.893 in the view frame" in md and "occluded GT keypoints 0.540" in md
    tex = (tmp_path / "tables/table3_view.tex").read_text()
    assert r"\begin{tabular}{l" + "c" * len(METRICS) + "}" in tex
    csv = (tmp_path / "tables/table3_view.csv").read_text()
    assert ",paper," not in csv


def test_table_view_config_names_a_bad_arm():
    from pointvl.config import ConfigError
    from pointvl.stages.table_view import TableViewConfig

    with pytest.raises(ConfigError, match="table_view.arms"):
        TableViewConfig(arms=["grpo", "ppo"]).validate()
    with pytest.raises(ConfigError, match="distinct"):
        TableViewConfig(seeds=[0, 0]).validate()
