"""Launch per profile and validation before work: accelerate configs vs the machine, a frozen
encoder without weights, missing local models and datasets, fp32 master weights, devices."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pointvl.config import PROFILES, ConfigError, load_params
from pointvl.model.config import ModelConfig
from pointvl.train.launch import LaunchConfig, check_launch, read_launch

ROOT = Path(__file__).resolve().parent.parent
CFG = {name: str(ROOT / f"configs/accelerate/{name}.yaml")
       for name in ("cpu", "ddp", "zero2", "zero3", "cpu_zero3")}  # fmt: skip


def test_accelerate_configs_say_what_they_launch():
    got = {k: read_launch(v) for k, v in CFG.items()}
    assert (got["cpu"].num_processes, got["cpu"].device, got["cpu"].zero_stage) == (1, "cpu", None)
    assert (got["ddp"].distributed_type, got["ddp"].num_processes) == ("MULTI_GPU", 4)
    assert got["zero2"].zero_stage == 2 and got["zero3"].zero_stage == 3
    assert {got[k].mixed_precision for k in ("ddp", "zero2", "zero3")} == {"bf16"}
    sim = got["cpu_zero3"]
    assert (sim.num_processes, sim.device, sim.zero_stage, sim.mixed_precision) == (
        2, "cpu", 3, "no")  # fmt: skip


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_launches_what_its_sections_expect(profile):
    """On the hardware each profile is meant for, ``check_launch`` accepts sft and rl."""
    p = load_params(ROOT / "params.yaml", profile)
    launch = LaunchConfig(**{**p["launch"], "accelerate_config": str(ROOT / p["launch"]["accelerate_config"])})  # fmt: skip
    n = read_launch(launch.accelerate_config).num_processes
    gpus = n if read_launch(launch.accelerate_config).device == "cuda" else 0
    for section in ("sft", "rl"):
        check_launch(launch, p[section]["bf16"], section, cuda_devices=gpus, launched=n)
    expected = {"smoke": "cpu", "tiny": "cpu", "paper": "zero3", "paper_sim": "cpu_zero3"}
    assert Path(p["launch"]["accelerate_config"]).stem == expected[profile]


def test_a_launch_that_does_not_match_the_machine_is_one_line_naming_the_field():
    zero3 = LaunchConfig(accelerate_config=CFG["zero3"])
    with pytest.raises(ConfigError, match=r"launch.accelerate_config=.*zero3.yaml.*needs 4 CUDA "
                       r"device\(s\), this machine has 0") as err:  # fmt: skip
        check_launch(zero3, True, "rl", cuda_devices=0, launched=4)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="needs 1 CUDA"):  # run directly, no GPU
        check_launch(zero3, True, "rl", cuda_devices=0, launched=1)
    with pytest.raises(ConfigError, match=r"sft.bf16=true with launch.accelerate_config"):
        check_launch(LaunchConfig(accelerate_config=CFG["cpu"]), True, "sft", 0, 1)
    with pytest.raises(ConfigError, match=r"rl.bf16=false but .*mixed_precision: bf16"):
        check_launch(LaunchConfig(accelerate_config=CFG["ddp"]), False, "rl", 4, 4)
    with pytest.raises(ConfigError, match=r"launch.accelerate_config='nope.yaml': no such file"):
        check_launch(LaunchConfig(accelerate_config="nope.yaml"), False, "sft", 0, 1)
    check_launch(LaunchConfig(accelerate_config=CFG["ddp"]), True, "sft", 4, 4)


def test_frozen_encoder_without_weights_and_missing_local_models_are_refused(tmp_path):
    paper = load_params(ROOT / "params.yaml", "paper")["model"]
    cfg = ModelConfig(**paper)
    frozen = dataclasses.replace(cfg, point_bert_checkpoint=None)
    with pytest.raises(ConfigError, match=r"model.point_bert_checkpoint=null with "
                       r"model.freeze_point_encoder=true: the frozen Point-BERT would stay"):  # fmt: skip
        frozen.check_inputs()
    dataclasses.replace(frozen, freeze_point_encoder=False, size="tiny").check_inputs()
    with pytest.raises(ConfigError, match=r"model.point_bert_checkpoint='models/Point-BERT.pth': "
                       r"no such file"):  # fmt: skip
        cfg.check_inputs()
    ckpt = tmp_path / "pb.pth"
    ckpt.write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"model.backbone='.*nowhere': no such local folder"):
        dataclasses.replace(cfg, point_bert_checkpoint=str(ckpt),
                            backbone=str(tmp_path / "nowhere")).check_inputs()  # fmt: skip
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="model.backbone=.*has no config.json"):
        dataclasses.replace(cfg, point_bert_checkpoint=str(ckpt),
                            backbone=str(tmp_path / "empty")).check_inputs()  # fmt: skip


def _stage(module: str, *args: str, profile: str = "paper"):
    env = {"POINTVL_PROFILE": profile, "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_paper_stages_on_this_machine_stop_before_work_naming_the_field(tmp_path):
    """Without the downloads: one line each, exit 2, nothing written."""
    tok = _stage("pointvl.stages.train_tokenizer", "--out", str(tmp_path / "tok"))
    assert tok.returncode == 2 and tok.stderr.count("\n") == 1, tok.stderr
    assert "train_tokenizer.backbone='models/Qwen2.5-VL-3B-Instruct': no such local" in tok.stderr
    build = _stage("pointvl.stages.build_dataset", "--out", str(tmp_path / "data"))
    assert build.returncode == 2 and "build_dataset.shapenet_root=" in build.stderr
    assert not (tmp_path / "tok").exists() and not (tmp_path / "data").exists()


def test_sft_prepare_checks_model_and_launch(tmp_path, smoke_data):
    """The sft stage's prepare: dataset and tokenizer, then the model's files, then the launch."""
    import yaml

    from pointvl.model.tokenizer import train_bpe_tokenizer
    from pointvl.stages import sft

    tok = train_bpe_tokenizer(["a b c"] * 10, vocab_size=300)
    tok.save_pretrained(tmp_path / "tok")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["overrides"]["paper"]["sft"].update(data_dir=str(smoke_data),
                                            tokenizer_dir=str(tmp_path / "tok"))  # fmt: skip
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    manifest = smoke_data / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text.replace('"profile": "smoke"', '"profile": "paper"'))
    try:
        with pytest.raises(SystemExit, match="model.point_bert_checkpoint='models/Point-BERT.pth'"):
            sft.main(["--params", str(params), "--profile", "paper"])
        raw["overrides"]["paper"]["model"]["freeze_point_encoder"] = False
        raw["overrides"]["paper"]["model"]["point_bert_checkpoint"] = None
        raw["overrides"]["paper"]["model"]["size"] = "tiny"
        params.write_text(yaml.safe_dump(raw))
        if torch.cuda.device_count() < 1:
            with pytest.raises(SystemExit, match=r"launch.accelerate_config='configs/accelerate/"
                               r"zero3.yaml'.*needs 1 CUDA device"):  # fmt: skip
                sft.main(["--params", str(params), "--profile", "paper"])
    finally:
        manifest.write_text(text)


# ----------------------------------------------------------------------------- weights, devices
def test_rl_loads_sft_weights_in_fp32_whatever_they_were_saved_in(tmp_path):
    from pointvl.model import ModelConfig, build_tiny_policy, train_bpe_tokenizer
    from pointvl.train.rl import load_sft_policy

    tok = train_bpe_tokenizer(["a chair", '{"answer": 1}'] * 20, vocab_size=300)
    cfg = ModelConfig(image_size=56, num_points=64, num_groups=8, points_per_group=8)
    model, proc = build_tiny_policy(tok, cfg)
    model.to(torch.bfloat16).save_pretrained(tmp_path / "ckpt")  # a ZeRO-3 save is bf16
    proc.save_pretrained(tmp_path / "ckpt")
    loaded, _ = load_sft_policy(tmp_path / "ckpt", attn_implementation="eager")
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    assert loaded.config._attn_implementation == "eager"
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(b, a.to(b.dtype), rtol=0, atol=0, msg=k)


def test_inference_runs_on_the_gpu_in_bf16_else_cpu_fp32():
    from pointvl.eval.generate import inference_device
    from pointvl.eval.zeroshot_table import ZeroShotConfig, model_spec

    dev, dtype = inference_device("auto")
    spec = model_spec(ZeroShotConfig(), "m", "/x")
    if torch.cuda.is_available():
        assert (dev.type, dtype, spec.device, spec.dtype) == (
            "cuda",
            torch.bfloat16,
            "cuda",
            "bfloat16",
        )
    else:
        assert (dev.type, dtype, spec.device, spec.dtype) == (
            "cpu",
            torch.float32,
            "cpu",
            "float32",
        )
    assert inference_device("cpu") == (torch.device("cpu"), torch.float32)
    assert inference_device("cuda:1")[1] == torch.bfloat16
