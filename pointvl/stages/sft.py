"""DVC stage ``sft``: supervised warm-up on the target JSON (Sec. 3.2, Eq. 5).

    accelerate launch --config_file configs/accelerate/cpu.yaml -m pointvl.stages.sft \\
        --params params.yaml [--profile tiny] [--resume] [--max-steps N]

params -> ``SFTConfig`` (section ``sft``) + ``ModelConfig`` (section ``model``) ->
``pointvl.train.sft.run_sft``: tokenizer (tiny/smoke: the BPE of ``train_tokenizer``; paper:
the backbone's) -> policy -> ``Trainer`` (completion-only loss, cosine schedule) ->
``<out_dir>/final`` (model + processor, atomic), ``<log_dir>/log.{jsonl,csv}``, the metrics.

``--resume`` continues from the newest complete ``checkpoint-N`` in ``out_dir`` (same seed:
same final weights as an uninterrupted run). Bad configs fail before any work (exit 2).
"""

from __future__ import annotations

from pointvl.model import ModelConfig
from pointvl.stages._cli import Context, Flag, Stage
from pointvl.train.config import SFTConfig
from pointvl.train.launch import LaunchConfig, check_launch
from pointvl.train.sft import build_sft_trainer, load_samples, run_sft  # noqa: F401

__all__ = ["STAGE", "load_samples", "main"]


def _resolve(ctx: Context) -> None:
    """Before any weight is read: the dataset and tokenizer, the model's local files, the
    launch against this machine (``pointvl.train.launch.check_launch``)."""
    ctx.configs["sft"] = ctx.sft.resolved(ctx.profile)
    ctx.sft.check_inputs(ctx.profile)
    ctx.model.check_inputs()
    check_launch(ctx.launch, ctx.sft.bf16, "sft")


STAGE = Stage(
    "sft",
    __doc__,
    sections={"sft": SFTConfig, "model": ModelConfig, "launch": LaunchConfig},
    flags=[
        Flag("--resume", action="store_true", help="continue from the last complete checkpoint"),
        Flag("--max-steps", to="sft.max_steps"),
    ],
    prepare=_resolve,
    run=lambda ctx: run_sft(
        ctx.sft,
        ctx.model,
        ctx.profile,
        resume=ctx.args.resume,
        attn_implementation=ctx.launch.attn_implementation,
    ),  # fmt: skip
)
main = STAGE.main

if __name__ == "__main__":
    main()
