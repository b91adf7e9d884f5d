"""The paper_sim rehearsal: the paper profile's values except the declared departures, its
generated pipeline, its stand-in downloads read by the paper code path, and (slow) a small
end-to-end run through DVC."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pointvl.config import ConfigError, load_params
from pointvl.rehearsal import SIM_DEPARTURES, pipeline_text, write_assets

ROOT = Path(__file__).resolve().parent.parent
KEYED = ("systems", "models", "lambda_systems", "seed_systems", "deltas", "sizes")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in KEYED:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _same(a, b) -> bool:
    """Equal once the profile's own names are set aside (data/paper vs data/paper_sim)."""
    if isinstance(a, str) and isinstance(b, str):
        return a.replace("paper_sim", "P").replace("paper", "P") == b.replace(
            "paper_sim", "P").replace("paper", "P")  # fmt: skip
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def test_paper_sim_is_paper_but_for_the_declared_departures():
    paper = _flat(load_params(ROOT / "params.yaml", "paper"))
    sim = _flat(load_params(ROOT / "params.yaml", "paper_sim"))
    assert paper.keys() == sim.keys()
    differ = {k for k in paper if not _same(paper[k], sim[k])}
    assert differ == set(SIM_DEPARTURES), sorted(differ ^ set(SIM_DEPARTURES))
    for key in ("shared.image_size", "shared.num_points", "shared.num_generations",
                "schema.quant_bins", "model.size", "model.num_groups", "model.points_per_group",
                "model.freeze_point_encoder", "rl.prompts_per_step", "rl.grad_accum",
                "sft.per_device_batch_size", "sft.grad_accum", "rl.logprob_chunk_tokens",
                "build_dataset.source", "train_tokenizer.source"):  # fmt: skip
        assert sim[key] == paper[key], key
    assert (sim["schema.quant_bins"], sim["shared.num_points"], sim["shared.image_size"]) == (
        1000, 8192, 448)  # fmt: skip


def test_the_rehearsal_pipeline_is_generated_from_dvc_yaml():
    assert (ROOT / "studies/paper_sim/dvc.yaml").read_text() == pipeline_text(ROOT), (
        "stale: python -m pointvl.rehearsal --write"
    )
    dvc = yaml.safe_load((ROOT / "studies/paper_sim/dvc.yaml").read_text())
    assert list(dvc["stages"])[0] == "rehearsal_assets"
    # notebook 05 reads the credit lab in the main pipeline; the rehearsal does not run it
    assert "credit_lab" in (ROOT / "dvc.yaml").read_text()
    assert "credit_lab" not in (ROOT / "studies/paper_sim/dvc.yaml").read_text()
    assert {"sft", "rl", "evaluate", "report", "notebooks"} <= set(dvc["stages"])
    sft = dvc["stages"]["sft"]["cmd"]
    assert sft.startswith("accelerate launch --config_file ${active.accelerate_config}")


def test_assets_are_refused_for_any_other_profile(tmp_path):
    with pytest.raises(ConfigError, match="only 'paper_sim' may write stand-in"):
        write_assets("paper", None, None, 1000, 1)


def test_stand_in_downloads_are_read_by_the_paper_code_path(tmp_path):
    """The written ShapeNet tree, Qwen2.5-VL folder and Point-BERT checkpoint load through
    the paper readers: list_models, train_tokenizer(source: backbone), build_policy(paper)."""
    from pointvl.data.build import BuildDatasetConfig
    from pointvl.data.shapenet import list_models
    from pointvl.model import ModelConfig
    from pointvl.model.point_bert import PointBertEncoder, load_point_bert_state_dict
    from pointvl.model.policy import build_policy
    from pointvl.model.tokenizer import TrainTokenizerConfig, build_tokenizer

    p = load_params(ROOT / "params.yaml", "paper_sim")
    model = dataclasses.replace(
        ModelConfig(**p["model"]), backbone=str(tmp_path / "qwen"),
        point_bert_checkpoint=str(tmp_path / "pb.pth"), num_points=256, num_groups=16,
        points_per_group=8, image_size=56,
    )  # fmt: skip
    build = BuildDatasetConfig(**{**p["build_dataset"], "shapenet_root": str(tmp_path / "sn")})
    info = write_assets("paper_sim", model, build, 1000, per_category=1)
    assert info["meshes"] == 14 and len(list_models(tmp_path / "sn").models) == 14
    report = load_point_bert_state_dict(PointBertEncoder(model.point_config()), tmp_path / "pb.pth")
    assert report.loaded and not report.missing and not report.unexpected
    tok = build_tokenizer(TrainTokenizerConfig(source="backbone", backbone=str(tmp_path / "qwen")),
                          None)  # fmt: skip
    assert "<|point_pad|>" in tok.get_vocab()
    model.check_inputs()
    policy, proc = build_policy(model, tok)
    assert type(policy.config.text_config).__name__ == "Qwen2_5_VLTextConfig"
    assert {q.dtype for q in policy.parameters()} == {torch.float32}
    assert not any(q.requires_grad for q in policy.point_encoder.parameters())
    assert proc.num_point_tokens == 17


@pytest.mark.slow
def test_a_small_rehearsal_runs_end_to_end_through_dvc(tmp_path):
    """`dvc repro` of studies/paper_sim in a copy of the repository, scaled down further (18 train
    / 2 test objects, one RL step, the grca arm and its evaluation): the paper code path
    through accelerate (2 processes, ZeRO-3), in minutes."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if files.returncode != 0 or shutil.which("dvc", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("needs a git checkout and dvc")
    dst = tmp_path / "repo"
    for rel in files.stdout.splitlines():
        if not rel.startswith("results/") and (ROOT / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dst / rel)
    raw = (dst / "params.yaml").read_text()
    # 18 objects: 17 train prompts after the val carve, >= the 16 of one optimizer step
    # (4 prompts x 2 processes x 2 accumulation); fewer would train 0 steps
    raw = raw.replace("      train_count: 20       # sim", "      train_count: 18")
    raw = raw.replace("      test_count: 6         # sim", "      test_count: 2")
    raw = raw.replace("      max_steps: 2          # sim\n      learning_rate: 0.000001",
                      "      max_steps: 1\n      learning_rate: 0.000001")  # fmt: skip
    (dst / "params.yaml").write_text(raw)
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PYTHONPATH": str(dst), "PATH": f"{bindir}:{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1",
           "TORCH_EXTENSIONS_DIR": str(ROOT / ".cache/torch_extensions")}  # fmt: skip
    env.pop("POINTVL_PROFILE", None)
    targets = ["studies/paper_sim/dvc.yaml:rl@grca", "studies/paper_sim/dvc.yaml:evaluate@grca"]
    proc = subprocess.run(["dvc", "repro", *targets], cwd=dst, env=env, capture_output=True,
                          text=True, timeout=3000)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    metrics = yaml.safe_load((dst / "results/paper_sim/metrics/rl_grca.json").read_text())
    assert metrics["processes"] == 2 and metrics["steps"] == 1
    assert metrics["max_completion_length"] > 478  # derived: Q = 1000, digits split
    ev = yaml.safe_load((dst / "results/paper_sim/metrics/eval/grca.json").read_text())
    assert ev["_meta"]["profile"] == "paper_sim" and ev["_meta"]["n"] == 2
    assert not (dst / "results/metrics").exists()  # nothing of tiny's
