"""report stage: tables put paper numbers only in (paper) columns; claims come from our runs."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from scipy import stats

from pointvl.eval.metrics import evaluate
from pointvl.eval.targets import load_targets
from pointvl.schema import format_target

ROOT = Path(__file__).resolve().parent.parent


def _write_system(pred, met, system, targets, texts, q):
    (pred / f"{system}.jsonl").write_text(
        "".join(
            json.dumps({"uid": t["uid"], "completion": c}) + "\n" for t, c in zip(targets, texts)
        )
    )
    (met / f"{system}.json").write_text(
        json.dumps(evaluate(texts, targets, q, n_boot=100, language=False))
    )


def _run_report(tmp_path, smoke_data, pred, met, **extra):
    """Run the report stage on a params file holding only a ``report`` section."""
    section = {
        "data_dir": str(smoke_data),
        "metrics_dir": str(met),
        "predictions_dir": str(pred),
        "tables_dir": str(tmp_path / "tables"),
        "figures_dir": str(tmp_path / "fig"),
        "train_logs": str(tmp_path / "none_{variant}.jsonl"),
        "n_boot": 200,
        **extra,
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"profile": "smoke", "report": section}))
    subprocess.run([sys.executable, "-m", "pointvl.stages.report", "--params",
                    str(tmp_path / "params.yaml"), "--reported", str(ROOT / "paper/reported.yaml")],
                   check=True, cwd=ROOT, timeout=300)  # fmt: skip


CLAIMS = [["grca", "grpo", "kpa3d"], ["grpo", "sft", "kpa3d"], ["grca_rpc", "grca", "rpc"]]


def test_report_stage(smoke_data, tmp_path):
    targets, _, q = load_targets(smoke_data, "test")
    perfect = [format_target(t, q) for t in targets]
    collapsed = [format_target({**t, "kpts3d": [t["bbox3d"][:3] - 0.2] * 16}, q) for t in targets]
    pred, met = tmp_path / "pred", tmp_path / "metrics"
    pred.mkdir(), met.mkdir()
    for system, texts in (("grca", perfect), ("grpo", collapsed)):
        _write_system(pred, met, system, targets, texts, q)
    aabb = {m: {"mean": 0.964, "lo": 0.962, "hi": 0.965, "n": 4} for m in ("iou3d", "kpa3d")}
    (met / "trivial.json").write_text(json.dumps({"trivial: cloud AABB (no learning)": aabb}))
    _run_report(tmp_path, smoke_data, pred, met, claims=CLAIMS)
    # every 3D table carries the non-learned floor; Table 5 says where the λ sweep is
    t5 = (tmp_path / "tables/table5.md").read_text()
    aabb_row = next(line for line in t5.splitlines() if line.startswith("| trivial: cloud AABB"))
    assert "0.964 [0.962, 0.965]" in aabb_row
    assert "No λ sweep in this pipeline" in t5
    t3 = (tmp_path / "tables/table3.md").read_text()
    row = {line.split("|")[1].strip(): line for line in t3.splitlines() if line.startswith("| ")}
    assert "no run" in row["SFT"] and "0.640" in row["SFT"]  # the paper's SFT KPA-3D, labelled
    assert "1.000 [1.000, 1.000]" in row["GRCA"]  # our perfect predictions
    claims = (tmp_path / "tables/claims.md").read_text()
    # perfect keypoints vs keypoints collapsed outside the box, one seed each: the bootstrap
    # over test samples, and no verdict (a one-seed comparison holds no seed variance)
    line = next(c for c in claims.splitlines() if "GRCA − GRPO on KPA-3D" in c)
    assert "(one seed, bootstrap over test samples)" in line
    diff = float(re.search(r"ours ([+-][0-9.]+) \[", line).group(1))
    assert diff > 0.5 and "-> inconclusive (one seed" in line
    assert "GRPO − SFT on KPA-3D (no run): ours: no run" in claims
    found = json.loads((tmp_path / "tables/claims.json").read_text())
    assert {c["verdict"] for c in found} == {"inconclusive"}
    for ext in ("md", "csv", "tex"):
        assert (tmp_path / f"tables/table1.{ext}").is_file()


def test_report_seeds_baselines_and_zeroshot(smoke_data, tmp_path):
    """Several seeds: mean over seeds with a t-interval over the per-seed means; claims from
    per-seed differences; baselines fill Table 2; a zero-shot row that was not run shows the
    paper's number only, with the reason."""
    targets, _, q = load_targets(smoke_data, "test")
    perfect = [format_target(t, q) for t in targets]
    half = [format_target({**t, "kpts3d": [t["bbox3d"][:3] - 0.2] * 16}, q) if i % 2 else p
            for i, (t, p) in enumerate(zip(targets, perfect))]  # fmt: skip
    collapsed = [format_target({**t, "kpts3d": [t["bbox3d"][:3] - 0.2] * 16}, q) for t in targets]
    pred, met = tmp_path / "pred", tmp_path / "metrics"
    pred.mkdir(), met.mkdir()
    for system, texts in (("grca", perfect), ("grca_seed1", half), ("grpo", collapsed),
                          ("grpo_seed1", collapsed), ("pointnet", half), ("grca_rpc", perfect)):  # fmt: skip
        _write_system(pred, met, system, targets, texts, q)
    (met / "zeroshot.json").write_text(json.dumps(
        {"Qwen2.5-VL-7B": {"status": "not run: no local weights (path is null)"}}))  # fmt: skip
    _run_report(tmp_path, smoke_data, pred, met, claims=CLAIMS,
                seed_systems={"grca": ["grca_seed1"], "grpo": ["grpo_seed1"]},
                baselines={"PointNet": "pointnet", "PointBert": "pointbert"},
                zeroshot=str(met / "zeroshot.json"))  # fmt: skip

    def rows(name):
        text = (tmp_path / f"tables/{name}.md").read_text()
        return text, {
            ln.split("|")[1].strip(): ln for ln in text.splitlines() if ln.startswith("| ")
        }

    _, t3 = rows("table3")
    kpa = [
        evaluate(x, targets, q, n_boot=100, language=False)["kpa3d"]["mean"]
        for x in (perfect, half)
    ]
    mean = sum(kpa) / 2  # mean over the two seeds
    lo, hi = stats.t.interval(0.95, 1, loc=mean, scale=np.std(kpa, ddof=1) / np.sqrt(2))
    lo, hi = max(lo, 0.0), min(hi, 1.0)  # cut at KPA's range
    assert f"{mean:.3f} [{lo:.3f}, {hi:.3f}]" in t3["GRCA"] and "(2 seeds)" in t3["GRCA"]
    assert "± 0.000 (2 seeds)" in t3["GRPO (broadcast reward)"]  # identical seeds: std 0
    claims = (tmp_path / "tables/claims.md").read_text()
    line = next(c for c in claims.splitlines() if c.startswith("- GRCA − GRPO on KPA-3D"))
    c = evaluate(collapsed, targets, q, n_boot=100, language=False)["kpa3d"]["mean"]
    assert "(2 seeds, t over per-seed differences)" in line
    assert f"(per seed {kpa[0] - c:+.3f}, {kpa[1] - c:+.3f})" in line
    _, t2 = rows("table2")
    iou3d = evaluate(half, targets, q, n_boot=100, language=False)["iou3d"]["mean"]
    assert t2["PointNet"].split("|")[2].strip().startswith(f"{iou3d:.3f} [")  # ours, with CI
    assert t2["PointBert"].split("|")[2].strip() == "no run"  # no metrics file: no number
    t1_text, t1 = rows("table1")
    assert t1["Qwen2.5-VL-7B"].split("|")[2].strip() == "no run" and "0.780" in t1["Qwen2.5-VL-7B"]
    assert "Qwen2.5-VL-7B: the paper's number only; not run: no local weights" in t1_text
    # one run on one side: each seed of the other against that run
    line = next(c for c in claims.splitlines() if c.startswith("- GRCA + RPC − GRCA on RPC"))
    assert "(one run of GRCA + RPC vs 2 seeds of GRCA)" in line


def test_study_reads_seed_zero_from_the_base_folders(smoke_data, tmp_path):
    """The RL study writes its runs under results/study/ and reads seed 0 of every arm from
    the default pipeline's folders (``report.base_*``): the default report never sees the
    study's files, the study's report sees both."""
    targets, _, q = load_targets(smoke_data, "test")
    perfect = [format_target(t, q) for t in targets]
    half = [format_target({**t, "kpts3d": [t["bbox3d"][:3] - 0.2] * 16}, q) if i % 2 else p
            for i, (t, p) in enumerate(zip(targets, perfect))]  # fmt: skip
    base_pred, base_met = tmp_path / "base/pred", tmp_path / "base/metrics"
    pred, met = tmp_path / "study/pred", tmp_path / "study/metrics"
    for d in (base_pred, base_met, pred, met):
        d.mkdir(parents=True)
    _write_system(base_pred, base_met, "grca", targets, perfect, q)  # seed 0: default pipeline
    _write_system(pred, met, "grca_seed1", targets, half, q)  # seed 1: the study
    log = tmp_path / "base/train/rl_grca/log.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text(json.dumps({"step": 1, "spans/parse_fail_frac": 0.25}) + "\n")
    seeds = {"grca": ["grca_seed1"]}
    _run_report(tmp_path, smoke_data, pred, met, seed_systems=seeds, systems=["grca"],
                base_metrics_dir=str(base_met), base_predictions_dir=str(base_pred),
                base_train_logs=str(tmp_path / "base/train/rl_{variant}/log.jsonl"))  # fmt: skip
    t3 = (tmp_path / "tables/table3.md").read_text()
    row = next(ln for ln in t3.splitlines() if ln.startswith("| GRCA |"))
    assert "(2 seeds)" in row
    from pointvl.eval.results import ReportConfig

    cfg = ReportConfig(train_logs=str(tmp_path / "study/train/rl_{variant}/log.jsonl"),
                       base_train_logs=str(log).replace("rl_grca", "rl_{variant}"))  # fmt: skip
    assert cfg.train_log("grca") == log  # the study has no seed-0 log: the base one
    assert dataclasses.replace(cfg, base_train_logs="").train_log("grca") != log
    # without the base folders, seed 0 has no run: the study's seed alone is not GRCA
    _run_report(tmp_path, smoke_data, pred, met, seed_systems=seeds, systems=["grca"])
    t3 = (tmp_path / "tables/table3.md").read_text()
    row = next(ln for ln in t3.splitlines() if ln.startswith("| GRCA |"))
    assert "(2 seeds)" not in row


def test_seed_intervals_are_cut_at_the_metric_range():
    from pointvl.eval.results import clip_to_range

    assert clip_to_range("pck3d", 0.93, 1.03) == (0.93, 1.0)
    assert clip_to_range("parse_fail", -0.02, 0.05) == (0.0, 0.05)
    assert clip_to_range("spread3d", -0.1, 1.4) == (0.0, 1.4)  # no upper bound
    assert clip_to_range("chamfer3d", 0.1, 2.5) == (0.1, 2.5)
    assert clip_to_range("iou3d", None, float("nan")) == (None, None)


def test_claims_name_the_budget_matched_sft_as_such():
    """Labels lose their notes in claims ("GDPO (per-field ...)" -> "GDPO"), but the
    budget-matched SFT keeps its qualifier: "GRCA − SFT" would name another system."""
    from pointvl.eval.results import Claim, claim_text

    d = {"kind": "one seed", "diff": 0.2, "lo": 0.1, "hi": 0.3, "per_seed": [0.2], "seeds": 1}
    text = claim_text(Claim("grca", "sft_budget", "kpa3d"), d, None, "ours only", "-")
    assert text.startswith("GRCA − SFT (budget-matched) on KPA-3D")
    text = claim_text(Claim("gdpo", "sft", "kpa3d"), d, None, "ours only", "-")
    assert text.startswith("GDPO − SFT on KPA-3D")
