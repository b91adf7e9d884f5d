"""The credit-assignment lab: statistics helpers, and the stage end to end on smoke settings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pointvl.train.lab import LabConfig, ratio_ci, samples_to_threshold, summarize, t_interval


def test_samples_to_threshold_interpolates_and_censors():
    assert samples_to_threshold([0, 10, 20], [0.5, 0.7, 0.9], 0.8) == pytest.approx(15.0)
    assert samples_to_threshold([0, 10], [0.9, 0.95], 0.8) == 0.0
    assert samples_to_threshold([0, 10], [0.5, 0.6], 0.8) is None


def test_t_interval_and_ratio():
    ci = t_interval([1.0, 2.0, 3.0])
    assert ci["mean"] == 2.0 and ci["ci_lo"] < 2.0 < ci["ci_hi"]
    assert ci["ci_hi"] - ci["mean"] == pytest.approx(4.303 / np.sqrt(3), rel=1e-3)
    r = ratio_ci([1.0, 1.2, 0.8], [2.0, 2.0, 2.0])
    assert r["mean"] == pytest.approx(0.5) and r["ci_lo"] <= 0.5 <= r["ci_hi"]


def test_summary_counts_censored_runs_at_the_budget():
    cfg = LabConfig(arms=("grpo", "grca"), seeds=2, rl_steps=2, prompts_per_step=1,
                    num_generations=2, threshold=0.8)  # fmt: skip
    runs = [
        {"arm": "grpo", "seed": 0, "samples": [0, 4], "accuracy": [[0.5] * 4, [0.6] * 4]},
        {"arm": "grpo", "seed": 1, "samples": [0, 4], "accuracy": [[0.5] * 4, [0.9] * 4]},
        {"arm": "grca", "seed": 0, "samples": [0, 4], "accuracy": [[0.5] * 4, [1.0] * 4]},
        {"arm": "grca", "seed": 1, "samples": [0, 4], "accuracy": [[0.5] * 4, [1.0] * 4]},
    ]
    s = summarize(cfg, runs)
    assert s["arms"]["grpo"]["samples_to_threshold"]["censored"] == 1
    assert s["arms"]["grpo"]["samples_to_threshold"]["mean"] == pytest.approx((4 + 3) / 2)
    assert s["arms"]["grca"]["final_reward"]["mean"] == 1.0
    assert set(s) >= {"arms", "threshold"} and s["threshold"] == 0.8
    assert "grca/grpo" in s["samples_to_threshold_ratio"]


@pytest.mark.slow
def test_stage_writes_the_summary_the_issue_specifies(tmp_path, monkeypatch):
    """smoke profile: 2 arms x 2 seeds x 2 RL steps, one process."""
    from pointvl.stages import credit_lab

    monkeypatch.setenv("POINTVL_PROFILE", "smoke")
    out = tmp_path / "lab"
    params = tmp_path / "params.yaml"
    text = open("params.yaml").read().replace("out_dir: results/credit_lab", f"out_dir: {out}")
    params.write_text(text)
    credit_lab.main(["--params", str(params), "--no-progress"])
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["arms"]) == {"grpo", "grca"}
    for arm in summary["arms"].values():
        assert arm["seeds"] == 2
        for key in ("final_reward", "samples_to_threshold"):
            assert {"mean", "ci_lo", "ci_hi"} <= set(arm[key])
    assert isinstance(summary["threshold"], float)
    var = json.loads((out / "variance.json").read_text())
    for terms in var["fields"].values():  # Eq. (26) with its finite-sample correction, exactly
        assert terms["measured"] == pytest.approx(
            terms["predicted"] + terms["correction"], abs=1e-6
        )
    assert (out / "credit_lab.png").stat().st_size > 10_000
