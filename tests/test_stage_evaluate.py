"""evaluate stage: checkpoint -> generation -> predictions -> metrics, and back from predictions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from pointvl.data.dataset import list_texts
from pointvl.model import ModelConfig, build_tiny_policy, train_bpe_tokenizer

ROOT = Path(__file__).resolve().parent.parent


def test_evaluate_stage_round_trip(smoke_data, tmp_path):
    tok = train_bpe_tokenizer(list_texts(smoke_data), vocab_size=400)
    cfg = ModelConfig(image_size=56, num_points=128, num_groups=8, points_per_group=16)
    model, processor = build_tiny_policy(tok, cfg)
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    processor.save_pretrained(ckpt)
    section = {
        "systems": {"random_init": str(ckpt)},
        "data_dir": str(smoke_data),
        "limit": 4,
        "batch_size": 2,
        "max_new_tokens": 12,
        "n_boot": 100,
        "predictions_dir": str(tmp_path / "pred"),
        "metrics_dir": str(tmp_path / "metrics"),
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"profile": "smoke", "evaluate": section}))
    cmd = [
        sys.executable,
        "-m",
        "pointvl.stages.evaluate",
        "--params",
        str(tmp_path / "params.yaml"),
        "--system",
        "random_init",
    ]
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=600, capture_output=True)
    rows = (tmp_path / "pred/random_init.jsonl").read_text().splitlines()
    assert len(rows) == 4 and all("completion" in json.loads(r) for r in rows)
    first = json.loads((tmp_path / "metrics/random_init.json").read_text())
    # 12 random tokens never make a complete JSON object: everything fails to parse, scores 0
    assert first["parse_fail"]["mean"] == 1.0 and first["iou3d"]["mean"] == 0.0
    assert first["_meta"]["n"] == 4
    subprocess.run(cmd + ["--from-predictions"], check=True, cwd=ROOT, timeout=600)
    again = json.loads((tmp_path / "metrics/random_init.json").read_text())
    again["_meta"].pop("generate_s"), first["_meta"].pop("generate_s")
    assert again == first
    bad = cmd[:-1] + ["nope"]
    res = subprocess.run(bad, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode != 0 and "unknown system 'nope'" in res.stderr
