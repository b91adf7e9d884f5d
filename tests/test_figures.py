"""Figure 3 builder, the routed-group pipeline, and the ``figures`` stage on the smoke profile."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pointvl.config import ConfigError
from pointvl.credit import ADVANTAGE_BUILDERS, CreditConfig, CreditInputs
from pointvl.data.dataset import PointVLDataset, list_texts
from pointvl.demo import demo_completions, demo_target
from pointvl.rewards import rpc_reward, score_batch
from pointvl.schema import parse_output
from pointvl.spans import field_token_ids
from pointvl.stages.figures import FiguresConfig
from pointvl.step import Scoring
from pointvl.viz.figure3 import figure3, figure3_png, view_prediction
from pointvl.viz.pagecheck import check_page, chromium
from pointvl.viz.routed_group import route_group

ROOT = Path(__file__).resolve().parent.parent
RPC_LINE = re.compile(r"RPC = IoU\(B_proj, B̂_2d\) = ([0-9.]+)")


@pytest.fixture(scope="module")
def test_split(smoke_data):
    return PointVLDataset(smoke_data, "test")


def _noisy(target_json: str) -> str:
    """The GT JSON with a shifted 2D box: a well-formed prediction with RPC strictly in (0, 1)."""
    obj = json.loads(target_json)
    obj["bbox2d"] = [v + 3 for v in obj["bbox2d"]]
    return json.dumps(obj)


def _drawn_texts(fig) -> str:
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_figure3_rpc_panel_prints_rpc_reward(test_split, tmp_path):
    s = test_split[0]
    text = _noisy(s["target"])
    fig, info = figure3(s, text, test_split.quant_bins)
    want = rpc_reward(parse_output(text, num_keypoints=16), s, test_split.quant_bins)
    printed = RPC_LINE.findall(_drawn_texts(fig))
    assert printed == [f"{want:.4f}"] and info["rpc"] == want and 0 < want < 1
    assert all(e is None for e in info["errors"].values())
    assert "Parse: all six fields OK" in info["texts"]["qa"]
    info = figure3_png(tmp_path / "f3.png", s, text, test_split.quant_bins)
    assert (tmp_path / "f3.png").stat().st_size > 10_000


def test_figure3_malformed_prediction_says_which_field_failed(test_split):
    s = test_split[1]
    good = json.loads(s["target"])
    bad = s["target"].replace(json.dumps(good["bbox3d"]), "[1, 2,, 3]")
    fig, info = figure3(s, bad, test_split.quant_bins)
    drawn = _drawn_texts(fig)
    assert info["errors"]["bbox3d"] == "malformed" and info["rpc"] == 0.0
    assert "ours: bbox3d failed to parse (malformed)" in info["texts"]["3d"]
    assert "ours: bbox3d failed to parse (malformed)" in info["texts"]["rpc"]
    assert "Parse failed: bbox3d (malformed)" in drawn
    assert RPC_LINE.findall(drawn) == ["0.0000"]
    # no JSON at all: every panel says so, nothing raises
    fig, info = figure3(s, "I cannot see any object.", test_split.quant_bins)
    assert set(info["errors"].values()) == {"no_json"}
    assert "bbox2d failed to parse (no_json)" in info["texts"]["2d"]


def test_view_prediction_dequantizes_like_metrics(test_split):
    s = test_split[2]
    view = view_prediction(s["target"], test_split.quant_bins, 16)
    # GT written then de-quantized: within half a bin of the continuous GT
    assert np.abs(view.values["bbox3d"] - s["bbox3d"].numpy()).max() <= 0.5 / 100 + 1e-12
    assert np.abs(view.values["kpts2d"] - s["kpts2d"].numpy()).max() <= 0.5 + 1e-9


def test_route_group_matches_credit_on_scripted_completions(bpe_tokenizer):
    target = demo_target(0)
    texts = demo_completions(target, 100, seed=0)
    eos = bpe_tokenizer.convert_tokens_to_ids("<|im_end|>")
    encs = [bpe_tokenizer(t, add_special_tokens=False, return_offsets_mapping=True) for t in texts]
    ids = [e["input_ids"] + [eos] for e in encs]
    cfg = CreditConfig(background="seq", lam=0.15)
    group = route_group(ids, bpe_tokenizer, target, cfg, Scoring(100, 16))
    assert group.scored.texts == texts  # decoding gives back the written text
    # direct: parse, score, fast-tokenizer offsets (another offset path), then pointvl.credit
    parsed = [parse_output(t, 16) for t in texts]
    scores = score_batch(parsed, [target] * len(texts), 100)
    T = max(len(r) for r in ids)
    fids = torch.zeros(len(texts), T, dtype=torch.long)  # (G, T)
    for i, (p, e, t) in enumerate(zip(parsed, encs, texts)):
        off = e["offset_mapping"] + [(len(t), len(t))]
        fids[i, : len(off)] = torch.from_numpy(field_token_ids(p.char_spans, off))
    batch = CreditInputs(scores["per_field_rewards"], scores["seq"], scores["rpc"], fids, len(ids))
    assert torch.equal(group.field_ids, fids)
    for v in ("grpo", "grca", "grca_rpc"):
        want = ADVANTAGE_BUILDERS[v](batch, cfg)  # (G, T)
        got = group.advantages[v]
        torch.testing.assert_close(got[group.mask], want[group.mask], rtol=0, atol=0)
    assert len({round(float(x), 6) for x in group.advantages["grca"][group.mask]}) > 8


def test_config_validation_names_bad_values():
    with pytest.raises(ConfigError, match="num_generations=1"):
        FiguresConfig(num_generations=1).validate()
    with pytest.raises(ConfigError, match=r"sample_index=8: out of range .*\[0, 8\)"):
        FiguresConfig(sample_index=8).validate(num_test=8)
    with pytest.raises(ConfigError, match="background='mean'"):
        FiguresConfig(background="mean").validate()
    FiguresConfig(group_index=7).validate(num_test=8)


def _tiny_checkpoint(smoke_data, path: Path) -> Path:
    """A random-init tiny policy + processor (as tests/test_stage_evaluate.py)."""
    from pointvl.model import ModelConfig, build_tiny_policy, train_bpe_tokenizer

    tok = train_bpe_tokenizer(list_texts(smoke_data), vocab_size=400)
    cfg = ModelConfig(image_size=56, num_points=128, num_groups=8, points_per_group=16)
    model, processor = build_tiny_policy(tok, cfg)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def test_figures_stage_smoke(smoke_data, test_split, tmp_path):
    ckpt = _tiny_checkpoint(smoke_data, tmp_path / "ckpt")
    rows = []
    for i in range(len(test_split)):
        s = test_split[i]
        text = _noisy(s["target"]) if i != 1 else s["target"][:-40]  # sample 1: truncated
        rows.append({"uid": s["uid"], "question": s["question"], "completion": text})
    preds = tmp_path / "pred/grca_rpc.jsonl"
    preds.parent.mkdir()
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["profile"] = "smoke"
    smoke = raw.setdefault("overrides", {}).setdefault("smoke", {}) or {}
    raw["overrides"]["smoke"] = smoke
    smoke.setdefault("figures", {}).update(
        data_dir=str(smoke_data), predictions=str(preds), policy_checkpoint=str(ckpt),
        checkpoint=str(ckpt), sample_index=1, html_samples=3, out_dir=str(tmp_path / "fig"),
        metrics=str(tmp_path / "m/figures.json"),
    )  # fmt: skip
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    cmd = [sys.executable, "-m", "pointvl.stages.figures", "--params", str(params)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "fig"
    names = ("figure3.png", "figure3_reprojection.html", "reprojection_test.html",
             "routed_advantages_real.png",
             "routed_advantages_real.html", "routed_group.json")  # fmt: skip
    # the pages link one shared plotly.js: beside them here, results/_static in the repo
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "_static"])
    metrics = json.loads((tmp_path / "m/figures.json").read_text())
    for key in ("figure3/rpc", "figure3/parse_fail_fields", "figure3/html_samples",
                "group/size", "reward/bbox3d", "reward/rpc", "grca/tokens_changed_vs_grpo_frac",
                "grca_rpc/sign_flips_vs_grpo_frac", "adv/bbox2d_zero_std_frac"):  # fmt: skip
        assert key in metrics, key
    run = json.loads((tmp_path / "m/figures.run.json").read_text())  # timings: not metrics
    assert "wall_s" in run and "group/generate_s" in run and "wall_s" not in metrics
    assert metrics["group/size"] == 2 and metrics["figure3/html_samples"] == 3
    # every test object with a prediction is reachable in the explorer page, and it draws
    assert metrics["reprojection/objects"] == len(rows) == len(test_split)
    page = (out / "reprojection_test.html").read_text()
    assert all(f'<option value="{r["uid"]} | ' in page for r in rows)  # each one searchable
    if chromium() is not None:
        report = check_page(out / "reprojection_test.html")
        assert report.ok and report.figures == 1, report.summary()
    assert metrics["figure3/parse_fail_fields"] >= 1  # the truncated completion
    group = json.loads((out / "routed_group.json").read_text())
    assert len(group["completions"]) == 2 and set(group["advantages"]) == {
        "grpo", "grca", "grca_rpc"
    }  # fmt: skip
    assert set(group["rewards"]) >= {"bbox2d", "bbox3d", "kpts2d", "kpts3d", "rpc", "seq"}
    html = (out / "figure3_reprojection.html").read_text()
    assert "ours" in html and "<script" in html and 'src="https://cdn.plot.ly' not in html
    bad = params.with_name("bad.yaml")
    raw["overrides"]["smoke"]["figures"]["group_index"] = 99
    bad.write_text(yaml.safe_dump(raw))
    res = subprocess.run(cmd[:-1] + [str(bad)], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode != 0 and "figures.group_index=99" in res.stderr
