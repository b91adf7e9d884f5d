"""DVC stage ``rl``: one RL variant from the SFT checkpoint (Secs. 3.3-3.5, Table 3).

    accelerate launch --config_file configs/accelerate/cpu.yaml -m pointvl.stages.rl \\
        --params params.yaml --variant grca [--lam 0.15] [--seed 1] [--resume] [--max-steps N]

Variants (``rl.variant``, overridable with ``--variant``):

- ``grpo``      TRL's GRPO, broadcast r_seq                        (Eq. 16)
- ``grca``      routed per-field advantages                        (Eqs. 9-10)
- ``grca_rpc``  + RPC-shaped background, λ = ``rl.lam``             (Eq. 14)
- ``sft_budget`` SFT continued for the same optimizer steps and prompts per step

The first three run ``GRCATrainer`` and differ only in the advantage builder. Every variant
starts from ``rl.sft_checkpoint`` with the same seed, data order and budget. Outputs:
``<out_dir>/final`` (model + processor, atomic), ``<log_dir>/log.{jsonl,csv}``, the metrics
JSON (``{variant}`` is filled into the paths; ``--lam`` adds ``_lam<λ>`` and ``--seed`` adds
``_seed<S>``, so a Table 5 sweep point or a repeat with another seed gets its own folders).
``--seed`` re-seeds the RL run only (sampling, prompt order, dropout); every seed starts from
the same SFT checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from pointvl.config import ConfigError, SchemaConfig, from_dict
from pointvl.io import atomic_write_json, read_jsonl
from pointvl.stages.sft import load_configs
from pointvl.train.config import RLConfig
from pointvl.train.logs import MetricsLogger
from pointvl.train.sft import last_complete_checkpoint, save_final


def _summary(records: list[dict], frac: float = 0.2) -> dict:
    """Mean of each reward/* and spans/* metric over the first and the last ``frac`` of steps."""
    steps = [r for r in records if "reward/seq" in r]
    if not steps:
        return {}
    k = max(1, int(len(steps) * frac))
    out = {}
    for key in sorted({k_ for r in steps for k_ in r if k_.startswith(("reward/", "spans/"))}):
        first = [r[key] for r in steps[:k] if r.get(key) is not None]
        last = [r[key] for r in steps[-k:] if r.get(key) is not None]
        if first and last:
            out[f"{key}/first"] = sum(first) / len(first)
            out[f"{key}/last"] = sum(last) / len(last)
    return out


def run_suffix(lam: float | None = None, seed: int | None = None) -> str:
    """Folder suffix of a sweep point / repeat: ``_lam0.1``, ``_seed2``, ``_lam0.1_seed2``."""
    return (f"_lam{lam:g}" if lam is not None else "") + (
        f"_seed{seed}" if seed is not None else ""
    )


def run(cfg: RLConfig, schema: SchemaConfig, profile: str, resume: bool = False) -> dict:
    from pointvl.model import PointVLForConditionalGeneration, PointVLProcessor
    from pointvl.stages.sft import load_samples

    cfg.check_inputs(profile)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = PointVLForConditionalGeneration.from_pretrained(cfg.sft_checkpoint)
    processor = PointVLProcessor.from_pretrained(cfg.sft_checkpoint)
    dataset = load_samples(cfg.data_dir, cfg.qa_mode, cfg.max_train_prompts)
    log_dir = Path(cfg.log_dir)
    logger = MetricsLogger(log_dir / "log.jsonl", log_dir / "log.csv")
    checkpoint = last_complete_checkpoint(out_dir) if resume else None

    if cfg.variant == "sft_budget":
        trainer = _sft_budget_trainer(cfg, model, processor, dataset, out_dir, logger)
    else:
        from pointvl.train.rl import build_rl_trainer, grpo_args, rl_rows

        args = grpo_args(cfg, out_dir, processor)
        rows = rl_rows(dataset, processor)
        trainer = build_rl_trainer(
            model, processor, dataset, rows, cfg, args, schema.quant_bins, schema.num_keypoints,
            callbacks=[logger],
        )  # fmt: skip
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=checkpoint)
    wall = time.perf_counter() - t0
    save_final(trainer, processor, out_dir / "final")
    metrics = {
        "profile": profile,
        "variant": cfg.variant,
        "lam": cfg.lam,
        "seed": cfg.seed,
        "steps": trainer.state.global_step,
        "wall_s": wall,
        "s_per_step": wall / max(1, trainer.state.global_step),
        "resumed_from": checkpoint,
        **_summary(read_jsonl(log_dir / "log.jsonl")),
    }
    if trainer.is_world_process_zero():
        atomic_write_json(cfg.metrics, metrics)
    return metrics


def _sft_budget_trainer(cfg: RLConfig, model, processor, dataset, out_dir, logger):
    """Table 3's budget-matched row: SFT for ``max_steps`` steps of ``prompts_per_step`` samples."""
    from pointvl.train.config import SFTConfig
    from pointvl.train.sft import SFTSamples, build_sft_trainer, sft_training_args

    sft = SFTConfig(
        per_device_batch_size=cfg.prompts_per_step,
        grad_accum=cfg.grad_accum,
        learning_rate=cfg.sft_budget_lr,
        max_steps=cfg.max_steps,
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        bf16=cfg.bf16,
        gradient_checkpointing=cfg.gradient_checkpointing,
        seed=cfg.seed,
    )
    args = sft_training_args(
        sft, out_dir, lr_scheduler_type="constant", lr_scheduler_kwargs={}, warmup_steps=0
    )
    return build_sft_trainer(model, processor, SFTSamples(dataset, processor), args, [logger])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None, help="smoke | tiny | paper (default: params)")
    ap.add_argument("--variant", default=None, help="grpo | grca | grca_rpc | sft_budget")
    ap.add_argument("--lam", type=float, default=None, help="override rl.lam (Table 5 sweep)")
    ap.add_argument("--seed", type=int, default=None, help="override rl.seed (repeats)")
    ap.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    ap.add_argument("--max-steps", type=int, default=None, help="override rl.max_steps")
    args = ap.parse_args(argv)
    try:
        cfg, _, merged = load_configs(args.params, args.profile, RLConfig, "rl")
        schema = from_dict(SchemaConfig, merged.get("schema", {}), "schema")
        over = {}
        if args.variant is not None:
            over["variant"] = args.variant
        if args.max_steps is not None:
            over["max_steps"] = args.max_steps
        if args.lam is not None:
            over["lam"] = args.lam
        if args.seed is not None:
            over["seed"] = args.seed
        cfg = dataclasses.replace(cfg, **over)
        cfg.validate()
        suffix = run_suffix(args.lam, args.seed)
        if suffix:  # a sweep point or a repeat gets its own folders
            cfg = dataclasses.replace(
                cfg,
                out_dir=cfg.out_dir.replace("{variant}", "{variant}" + suffix),
                log_dir=cfg.log_dir.replace("{variant}", "{variant}" + suffix),
                metrics=cfg.metrics.replace("{variant}", "{variant}" + suffix),
            )
        cfg = cfg.resolved(merged["profile"])
        cfg.check_inputs(merged["profile"])
    except ConfigError as e:
        raise SystemExit(f"config error: {e}") from None
    metrics = run(cfg, schema, merged["profile"], resume=args.resume)
    print(json.dumps(metrics, indent=1, default=str))


if __name__ == "__main__":
    main()
