"""DVC stage ``rl``: one RL variant from the SFT checkpoint (Secs. 3.3-3.5, Table 3).

    accelerate launch --config_file <launch.accelerate_config> -m pointvl.stages.rl \\
        --params params.yaml --variant grca [--lam 0.15] [--seed 1] [--resume] [--max-steps N]

Variants (``rl.variant``, overridable with ``--variant``):

- ``grpo``      TRL's GRPO, broadcast r_seq                               (Eq. 16)
- ``gdpo``      TRL's GDPO: per-field normalize-then-sum, broadcast       (ours, not in the paper)
- ``grca``      routed per-field advantages                               (Eqs. 9-10)
- ``grca_bg0``  routed, background advantage 0                            (ours)
- ``grca_rpc``  + RPC-shaped background, λ = ``rl.lam``                    (Eq. 14)
- ``sft_budget`` SFT continued for the same optimizer steps and the same sequences per step
  (prompts_per_step x G), i.e. the same number of sequences as an RL arm; lr ``sft_budget_lr``

The RL variants run ``GRCATrainer`` and differ only in rewards and routing.
``--keypoint-reward matched`` swaps the paper's keypoint reward for the collapse-proof one
(suffix ``_kpm``). Every variant starts from ``rl.sft_checkpoint`` with the same seed, data
order and budget. Before the first step and every ``rl.val_every`` steps the first
``rl.val_prompts`` prompts of the val split (carved from train) are sampled and scored
(``val/*`` records in the log). Outputs: ``<out_dir>/final`` (model + processor, atomic),
``<log_dir>/log.{jsonl,csv}``, the metrics JSON (``{variant}`` is filled into the paths;
``--lam`` adds ``_lam<λ>``, ``--seed`` adds ``_seed<S>``, so every sweep point and repeat gets
its own folders). ``--seed`` re-seeds the RL run only (sampling, prompt order); every seed
starts from the same SFT checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

from pointvl.config import ConfigError, SchemaConfig
from pointvl.io import atomic_write_json, read_jsonl
from pointvl.stages._cli import Context, Flag, Stage
from pointvl.train.allocator import keep_heap
from pointvl.train.config import RLConfig
from pointvl.train.launch import LaunchConfig, check_launch, processes_launched, set_cpu_threads
from pointvl.train.logs import MetricsLogger
from pointvl.train.sft import last_complete_checkpoint, save_final


def _summary(records: list[dict], frac: float = 0.2) -> dict:
    """Mean of each rollout reward/* and spans/* metric over the first and the last ``frac``
    of steps; each validation metric at the first and last validation, with the slope of
    the validation curve (per 100 steps, OLS with a t-interval)."""
    from pointvl.eval.stats import slope_ci

    out = {}
    steps = [r for r in records if "reward/seq" in r]
    if steps:
        k = max(1, int(len(steps) * frac))
        for key in sorted({k_ for r in steps for k_ in r if k_.startswith(("reward/", "spans/"))}):
            first = [r[key] for r in steps[:k] if r.get(key) is not None]
            last = [r[key] for r in steps[-k:] if r.get(key) is not None]
            if first and last:
                out[f"{key}/first"] = sum(first) / len(first)
                out[f"{key}/last"] = sum(last) / len(last)
    val = [r for r in records if "val/n" in r]
    for key in sorted({k_ for r in val for k_ in r if k_.startswith("val/") and k_ != "val/n"}):
        pts = [(r["step"], r[key]) for r in val if r.get(key) is not None]
        if not pts:
            continue
        out[f"{key}/first"], out[f"{key}/last"] = pts[0][1], pts[-1][1]
        fit = slope_ci([p[0] for p in pts], [p[1] for p in pts])
        for name in ("slope", "lo", "hi"):
            out[f"{key}/slope_per_100/{name}"] = 100 * fit[name]
    # JSON has no NaN: a value that cannot be computed (one validation point, no parsed
    # completion) is null
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


def run_suffix(lam: float | None = None, seed: int | None = None, keypoints: str = "kpa") -> str:
    """Folder suffix of a sweep point / repeat / arm: ``_kpm``, ``_lam0.1``, ``_seed2``, ...
    (seed 0 is the base run: no suffix)."""
    return (
        ("_kpm" if keypoints == "matched" else "")
        + (f"_lam{lam:g}" if lam is not None else "")
        + (f"_seed{seed}" if seed else "")
    )


def run(
    cfg: RLConfig,
    schema: SchemaConfig,
    profile: str,
    resume: bool = False,
    attn_implementation: str | None = None,
) -> dict:
    """One RL arm (``cfg`` resolved: paths filled, ``max_completion_length`` an integer),
    from the SFT weights in float32 (``pointvl.train.rl.load_sft_policy``)."""
    from pointvl.train.rl import load_sft_policy
    from pointvl.train.sft import load_samples

    cfg.check_inputs(profile)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, processor = load_sft_policy(cfg.sft_checkpoint, attn_implementation)
    dataset = load_samples(cfg.data_dir, cfg.qa_mode, cfg.max_train_prompts)
    log_dir = Path(cfg.log_dir)
    logger = MetricsLogger(log_dir / "log.jsonl", log_dir / "log.csv")
    checkpoint = last_complete_checkpoint(out_dir) if resume else None

    if cfg.variant == "sft_budget":
        trainer = _sft_budget_trainer(cfg, model, processor, dataset, out_dir)
    else:
        from pointvl.train.rl import build_rl_trainer, grpo_args, rl_rows

        args = grpo_args(cfg, out_dir, processor)
        rows = rl_rows(dataset, processor)
        trainer = build_rl_trainer(
            model, processor, dataset, rows, cfg, args, schema.quant_bins, schema.num_keypoints
        )
    if cfg.val_prompts > 0:
        trainer.add_callback(_validation(cfg, trainer, processor, schema, logger))
    trainer.add_callback(logger)  # last: the validation's final record precedes the log's close
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=checkpoint)
    wall = time.perf_counter() - t0
    if trainer.state.global_step == 0:  # never a finished run (check_prompts should catch it)
        raise RuntimeError(f"rl {cfg.variant}: the trainer took 0 optimizer steps; no output")
    save_final(trainer, processor, out_dir / "final")
    metrics = {
        "profile": profile,
        "variant": cfg.variant,
        "keypoint_reward": cfg.keypoint_reward,
        "lam": cfg.lam,
        "seed": cfg.seed,
        "steps": trainer.state.global_step,
        "max_completion_length": cfg.max_completion_length,
        "processes": trainer.accelerator.num_processes,
        "wall_s": wall,
        "s_per_step": wall / max(1, trainer.state.global_step),
        "resumed_from": checkpoint,
        **_summary(read_jsonl(log_dir / "log.jsonl")),
    }
    if trainer.is_world_process_zero():
        atomic_write_json(cfg.metrics, metrics)
    return metrics


def _validation(cfg: RLConfig, trainer, processor, schema: SchemaConfig, logger):
    """The val-split sampler of this run: the rollout distribution, a fixed seed (0) for every
    arm and RL seed; ``sft_budget`` is sampled the same way, so its curve is comparable."""
    from pointvl.data.dataset import PointVLDataset
    from pointvl.train.rl import rollout_sampling, scoring_of, validation_set
    from pointvl.train.validation import ValidationSampler

    val = PointVLDataset(cfg.data_dir, "val", qa_mode=cfg.qa_mode)
    return ValidationSampler(
        trainer,
        validation_set(val, processor, cfg.val_prompts),
        scoring_of(cfg, schema.quant_bins, schema.num_keypoints),
        rollout_sampling(cfg, processor),
        processor.tokenizer,
        num_generations=cfg.val_generations,
        every=cfg.val_every,
        logger=logger,
    )


def _sft_budget_trainer(cfg: RLConfig, model, processor, dataset, out_dir):
    """Table 3's budget-matched row: SFT for ``max_steps`` optimizer steps of
    ``prompts_per_step x num_generations`` sequences (an RL step's sequences)."""
    from pointvl.train.config import SFTConfig
    from pointvl.train.sft import SFTSamples, build_sft_trainer, sft_training_args

    sft = SFTConfig(
        per_device_batch_size=cfg.prompts_per_step * cfg.num_generations,
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
    return build_sft_trainer(model, processor, SFTSamples(dataset, processor), args)


def check_prompts(cfg: RLConfig, train_prompts: int, processes: int) -> None:
    """Refuse a run that cannot take one optimizer step: each takes ``prompts_per_step x
    grad_accum x processes`` distinct train prompts (TRL's sampler yields no batch from
    fewer, and the trainer stopped at step 0 with exit 0). ``sft_budget`` batches sequences,
    not prompt groups, and is not limited."""
    need = cfg.prompts_per_step * cfg.grad_accum * processes
    if cfg.variant == "sft_budget" or train_prompts >= need:
        return
    limit = f" (rl.max_train_prompts={cfg.max_train_prompts})" if cfg.max_train_prompts else ""
    raise ConfigError(
        f"rl.prompts_per_step={cfg.prompts_per_step} x rl.grad_accum={cfg.grad_accum} x "
        f"{processes} process(es) = {need} prompts per optimizer step, but {cfg.data_dir} gives "
        f"{train_prompts} train prompt(s){limit}: lower prompts_per_step / grad_accum or use "
        "more prompts"
    )


def _train_prompts(cfg: RLConfig) -> int:
    """Train prompts the run draws from: the train split, cut to ``max_train_prompts``."""
    from pointvl.data.dataset import PointVLDataset

    n = len(PointVLDataset(cfg.data_dir, "train", qa_mode=cfg.qa_mode))
    return min(n, cfg.max_train_prompts) if cfg.max_train_prompts > 0 else n


def _prepare(ctx: Context) -> None:
    """Before any weight is read: the run's folders (``{variant}`` + suffix), its inputs, the
    launch against this machine, and the generation budget against the longest valid target
    (``pointvl.budget``; ``auto`` becomes the budget)."""
    from transformers import AutoTokenizer

    from pointvl.budget import dataset_target_length, resolve_budget

    cfg, args = ctx.rl, ctx.args
    suffix = run_suffix(
        cfg.lam if args.lam is not None else None,
        cfg.seed if args.seed is not None else None,
        cfg.keypoint_reward,
    )
    if suffix:  # a sweep point or a repeat gets its own folders
        cfg = dataclasses.replace(
            cfg, **{k: getattr(cfg, k).replace("{variant}", "{variant}" + suffix)
                    for k in ("out_dir", "log_dir", "metrics")},
        )  # fmt: skip
    cfg = cfg.resolved(ctx.profile)
    cfg.check_inputs(ctx.profile)
    launch = check_launch(ctx.launch, cfg.bf16, "rl")
    set_cpu_threads(ctx.launch, launch)
    if launch.device == "cpu":
        keep_heap()  # glibc keeps its heap between decoding steps (no values change)
    check_prompts(cfg, _train_prompts(cfg), processes_launched())
    tok = AutoTokenizer.from_pretrained(cfg.sft_checkpoint)
    budget = resolve_budget(
        "rl.max_completion_length",
        cfg.max_completion_length,
        dataset_target_length(cfg.data_dir, tok),
    )
    ctx.configs["rl"] = dataclasses.replace(cfg, max_completion_length=budget)


STAGE = Stage(
    "rl",
    __doc__,
    sections={"rl": RLConfig, "schema": SchemaConfig, "launch": LaunchConfig},
    flags=[
        Flag("--variant", to="rl.variant", help="grpo | gdpo | grca | grca_rpc | sft_budget"),
        Flag("--lam", to="rl.lam", help="override rl.lam (Table 5 sweep; suffix _lam<λ>)"),
        Flag("--seed", to="rl.seed", help="override rl.seed (repeats; suffix _seed<S>)"),
        Flag(
            "--keypoint-reward",
            to="rl.keypoint_reward",
            help="kpa | matched (the collapse-proof arm, suffix _kpm)",
        ),
        Flag("--max-steps", to="rl.max_steps"),
        Flag("--resume", action="store_true", help="continue from the last complete checkpoint"),
    ],  # fmt: skip
    prepare=_prepare,
    run=lambda ctx: run(
        ctx.rl,
        ctx.schema,
        ctx.profile,
        resume=ctx.args.resume,
        attn_implementation=ctx.launch.attn_implementation,
    ),  # fmt: skip
)
main = STAGE.main

if __name__ == "__main__":
    main()
