"""DVC stage ``sft``: supervised warm-up on the target JSON (Sec. 3.2, Eq. 5).

    accelerate launch --config_file configs/accelerate/cpu.yaml -m pointvl.stages.sft \\
        --params params.yaml [--profile tiny] [--resume] [--max-steps N]

params -> ``SFTConfig`` (section ``sft``) + ``ModelConfig`` (section ``model``) -> tokenizer
(tiny/smoke: a BPE trained on the dataset's texts; paper: the backbone's) -> policy ->
``Trainer`` (completion-only loss, cosine schedule) -> ``<out_dir>/final`` (model +
processor, atomic), ``<log_dir>/log.{jsonl,csv}``, the metrics JSON.

``--resume`` continues from the newest complete ``checkpoint-N`` in ``out_dir`` (same seed:
same final weights as an uninterrupted run). Bad configs fail before any work.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from pointvl.config import ConfigError, from_dict, load_params
from pointvl.io import atomic_write_json
from pointvl.model import ModelConfig
from pointvl.train.config import SFTConfig
from pointvl.train.logs import MetricsLogger
from pointvl.train.sft import (
    SFTSamples,
    build_sft_trainer,
    last_complete_checkpoint,
    save_final,
    sft_training_args,
)


def load_configs(params: str, profile: str | None, section_cls=SFTConfig, section="sft"):
    """(stage config, model config, merged params); validates both, names bad fields."""
    merged = load_params(params, profile)
    cfg = from_dict(section_cls, merged.get(section, {}), section)
    cfg.validate()
    model_cfg = from_dict(ModelConfig, merged.get("model", {}), "model")
    if hasattr(model_cfg, "validate"):
        model_cfg.validate()
    return cfg, model_cfg, merged


def build_initial_policy(model_cfg: ModelConfig, tokenizer_dir: str, seed: int):
    """The policy SFT starts from: tiny = random init sized for the tokenizer; paper =
    Qwen2.5-VL backbone + Point-BERT checkpoint (``PointVLForConditionalGeneration.from_backbone``)."""
    from transformers import AutoConfig, AutoTokenizer

    from pointvl.model import (
        PointVLForConditionalGeneration,
        PointVLProcessor,
        paper_pointvl_config,
    )
    from pointvl.model.policy import build_tiny_policy

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    if model_cfg.size == "tiny":
        return build_tiny_policy(tok, model_cfg, seed=seed)
    config = paper_pointvl_config(
        AutoConfig.from_pretrained(model_cfg.backbone),
        model_cfg,
        point_token_id=tok.convert_tokens_to_ids("<|point_pad|>"),
    )
    model, _ = PointVLForConditionalGeneration.from_backbone(
        model_cfg.backbone, config, model_cfg.point_bert_checkpoint
    )
    return model, PointVLProcessor.for_model(tok, config, image_size=model_cfg.image_size)


def load_samples(data_dir: str, qa_mode: str, limit: int = 0, split: str = "train"):
    from pointvl.data.dataset import PointVLDataset

    ds = PointVLDataset(data_dir, split, qa_mode=qa_mode)
    if limit and limit < len(ds):
        return torch.utils.data.Subset(ds, range(limit))
    return ds


def run(cfg: SFTConfig, model_cfg: ModelConfig, profile: str, resume: bool = False) -> dict:
    cfg.check_inputs(profile)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, processor = build_initial_policy(model_cfg, cfg.tokenizer_dir, cfg.seed)
    train = SFTSamples(load_samples(cfg.data_dir, cfg.qa_mode, cfg.max_train_samples), processor)
    checkpoint = last_complete_checkpoint(out_dir) if resume else None
    log_dir = Path(cfg.log_dir)
    logger = MetricsLogger(log_dir / "log.jsonl", log_dir / "log.csv")
    trainer = build_sft_trainer(model, processor, train, sft_training_args(cfg, out_dir), [logger])
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    wall = time.perf_counter() - t0
    save_final(trainer, processor, out_dir / "final")
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    metrics = {
        "profile": profile,
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "final_logged_loss": losses[-1] if losses else None,
        "train_samples": len(train),
        "wall_s": wall,
        "samples_per_s": result.metrics.get("train_samples_per_second"),
        "resumed_from": checkpoint,
        "params": sum(p.numel() for p in model.parameters()),
    }
    if trainer.is_world_process_zero():
        atomic_write_json(cfg.metrics, metrics)
    return metrics


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None, help="smoke | tiny | paper (default: params)")
    ap.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    ap.add_argument("--max-steps", type=int, default=None, help="override sft.max_steps")
    args = ap.parse_args(argv)
    try:
        cfg, model_cfg, merged = load_configs(args.params, args.profile)
        if args.max_steps is not None:
            cfg.max_steps = args.max_steps
            cfg.validate()
        cfg = cfg.resolved(merged["profile"])
        cfg.check_inputs(merged["profile"])
    except ConfigError as e:
        raise SystemExit(f"config error: {e}") from None
    metrics = run(cfg, model_cfg, merged["profile"], resume=args.resume)
    print(json.dumps(metrics, indent=1, default=str))


if __name__ == "__main__":
    main()
