"""The train_tokenizer stage: in-process on synthetic texts; as a subprocess on data/smoke."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from transformers import AutoTokenizer

from pointvl.config import ConfigError, from_dict
from pointvl.model.tokenizer import TrainTokenizerConfig, special_token_ids
from pointvl.model.tokenizer import train_tokenizer as run
from pointvl.schema import format_target

ROOT = Path(__file__).resolve().parent.parent


def _texts(n: int = 30) -> list[str]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        lo, hi = rng.uniform(-0.45, -0.05, 3), rng.uniform(0.05, 0.45, 3)
        target = {
            "answer": "mug",
            "description": "a mug with a handle",
            "bbox2d": [5.0, 6.0, 50.0, 60.0],
            "bbox3d": np.r_[lo, hi],
            "kpts2d": rng.uniform(5, 50, (16, 2)),
            "kpts3d": rng.uniform(lo, hi, (16, 3)),
        }
        out += [format_target(target), "What is this object?", "mug"]
    return out


def test_run_trains_saves_and_measures(tmp_path):
    cfg = TrainTokenizerConfig(
        vocab_size=400, out_dir=str(tmp_path / "tok"), metrics=str(tmp_path / "m.json")
    )
    texts = _texts()
    metrics = run(cfg, texts)
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert len(tok) == metrics["vocab_size"] <= 400
    assert special_token_ids(tok) == metrics["special_token_ids"]
    assert tok.chat_template is not None
    assert tok.decode(tok(texts[0])["input_ids"]) == texts[0]
    assert metrics["num_targets"] == 30 and metrics["target_tokens_mean"] > 0
    written = json.loads((tmp_path / "m.json").read_text())  # the numbers; names: .run.json
    assert {**written, **json.loads((tmp_path / "m.run.json").read_text())} == metrics
    with pytest.raises(ConfigError, match="train_tokenizer.source='sentencepiece'"):
        from_dict(TrainTokenizerConfig, {"source": "sentencepiece"}, "train_tokenizer")


def test_stage_runs_on_a_smoke_dataset(tmp_path):
    """build_dataset (smoke, into tmp) -> train_tokenizer as a subprocess, as DVC runs it."""
    data = tmp_path / "data"
    subprocess.run(
        [
            sys.executable, "-m", "pointvl.stages.build_dataset", "--profile", "smoke",
            "--out", str(data), "--metrics", str(tmp_path / "build.json"),
            "--figures", str(tmp_path / "fig"), "--no-progress",
        ],
        check=True, cwd=ROOT, capture_output=True, timeout=300,
    )  # fmt: skip
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train_tokenizer"]["metrics"] = str(tmp_path / "m.json")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(
        [
            sys.executable, "-m", "pointvl.stages.train_tokenizer",
            "--params", str(tmp_path / "params.yaml"), "--profile", "smoke",
            "--data", str(data), "--out", str(tmp_path / "tok"),
        ],
        check=True, cwd=ROOT, capture_output=True, timeout=300,
    )  # fmt: skip
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["num_targets"] > 0 and metrics["vocab_size"] == len(tok) <= 512
    assert (
        tok.convert_tokens_to_ids("<|point_pad|>") == metrics["special_token_ids"]["point_token_id"]
    )
