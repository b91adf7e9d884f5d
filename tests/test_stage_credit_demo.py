"""The credit_demo DVC stage, run as a subprocess on the smoke profile."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from pointvl.credit import standardize_in_groups
from pointvl.schema import GEOMETRIC_FIELDS
from pointvl.viz.pagecheck import check_page, chromium

ROOT = Path(__file__).resolve().parent.parent


def test_credit_demo_stage(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["credit_demo"]["out_dir"] = str(tmp_path / "out")
    params["credit_demo"]["metrics"] = str(tmp_path / "metrics.json")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pointvl.stages.credit_demo",
            "--params",
            str(tmp_path / "params.yaml"),
            "--profile",
            "smoke",
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
        timeout=300,
    )
    out = tmp_path / "out"
    html = (out / "advantages.html").read_text()
    assert "Plotly.newPlot" in html and "_static/plotly.min.js" in html  # the shared copy
    assert not re.search(r"<script[^>]*src=\"https?://", html)
    if chromium() is not None:  # what a reader's browser shows: drawn, no error
        report = check_page(out / "advantages.html")
        assert report.ok and report.figures == 1, report.summary()
    assert (out / "advantages.png").stat().st_size > 10_000
    group = json.loads((out / "group.json").read_text())
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    G = len(group["completions"])
    ids = [np.asarray(r) for r in group["field_ids"]]
    adv = {v: [np.asarray(r) for r in rows] for v, rows in group["advantages"].items()}
    rewards = np.asarray(group["rewards"]["per_field_rewards"])

    # broadcast GRPO: one value per completion, equal to its standardized sequence reward
    seq_adv = standardize_in_groups(group["rewards"]["seq"], G).numpy()
    for i in range(G):
        assert np.allclose(adv["grpo"][i], seq_adv[i])
    # GRCA: a field's tokens carry exactly that field's standardized reward (Eqs. 9-10)
    field_adv = standardize_in_groups(rewards, G).numpy()
    for i in range(G):
        for k in range(len(GEOMETRIC_FIELDS)):
            sel = ids[i] == k + 1
            assert np.allclose(adv["grca"][i][sel], field_adv[i, k])
        assert np.allclose(adv["grca"][i][ids[i] == 0], seq_adv[i])  # background = Â_seq
    # the duplicated bbox3d (case 4) has no bbox3d tokens and reward 0 (Sec. 3.7)
    dup = group["cases"].index("duplicate_bbox3d")
    assert group["errors"][dup]["bbox3d"] == "duplicate"
    assert not np.any(ids[dup] == 2) and rewards[dup, 1] == 0.0
    # RPC only moves background tokens
    for i in range(G):
        geo = ids[i] > 0
        assert np.allclose(adv["grca_rpc"][i][geo], adv["grca"][i][geo])
    assert metrics["tokens"] == sum(len(r) for r in ids)
    assert 0 < metrics["grca/tokens_changed_vs_grpo_frac"] <= 1
