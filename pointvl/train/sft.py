"""Supervised warm-up (Sec. 3.2, Eq. 5) with transformers' ``Trainer``; resumable checkpoints.

Eq. (5): L_SFT = −Σ_t log π_θ(y*_t | x, y*_<t), t over the *target* tokens only: the
processor sets ``labels`` to -100 on every prompt position (point / image placeholders and
the question), so the model's own cross-entropy is the completion-only loss.

Schedule: AdamW, linear warm-up, cosine decay from ``learning_rate`` to
``learning_rate x min_lr_rate`` (paper: 2e-5 -> 2e-6), via ``cosine_with_min_lr``.

Checkpoints: ``Trainer`` writes ``checkpoint-N/`` every ``save_steps``; ``CompleteMarker``
adds ``COMPLETE`` once everything of that step is on disk, and ``last_complete_checkpoint``
resumes only from a marked folder (a run killed while saving leaves an unmarked one, which
is ignored and removed). The final model is written with ``save_final`` into a temporary
folder renamed into place (``save_final``).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments

from pointvl.train.config import COMPLETE_MARKER

_CKPT = re.compile(r"^checkpoint-(\d+)$")


class SFTSamples(torch.utils.data.Dataset):
    """Sample dicts (``points``, ``image``, ``question``, ``target`` JSON) -> processor features."""

    def __init__(self, samples: Sequence[Mapping[str, Any]], processor):
        self.samples = samples
        self.processor = processor

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        s = self.samples[i]
        feats = self.processor(s["points"], s["image"], s["question"], s["target"])
        feats.pop("prompt_length", None)
        return feats


class EpochPermutationSampler(torch.utils.data.Sampler):
    """A random order that depends only on (seed, epoch), never on the global RNG.

    transformers' default ``RandomSampler`` draws its seed from the global torch RNG when the
    epoch starts; a resumed run reaches that point with another RNG state, so it would skip
    the right *number* of batches of a *different* order. Here the order of epoch e is
    ``randperm(n, generator=seed + e)`` in every run.
    """

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


class LoadByFromPretrained:
    """Trainer mixin: resume model weights with ``from_pretrained`` instead of a raw state dict.

    transformers' ``_load_from_checkpoint`` reads ``model.safetensors`` and calls
    ``load_state_dict(strict=False)``. Our policy saves Qwen2.5-VL's legacy key layout
    (``model.layers.*``; the conversion mapping is reversed on save), so the raw load silently
    skips the language model and a resumed run would continue from its *initial* LM weights.
    ``from_pretrained`` applies the key mapping; the result is loaded strictly.
    """

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        model = model if model is not None else self.model
        target = self.accelerator.unwrap_model(model)
        if self.is_deepspeed_enabled or not isinstance(target, PreTrainedModel):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        loaded = type(target).from_pretrained(resume_from_checkpoint, dtype=target.dtype)
        target.load_state_dict(loaded.state_dict(), strict=True)
        del loaded


class ResumableTrainer(LoadByFromPretrained, Trainer):
    """``Trainer`` whose data order is a function of (seed, epoch) (see ``EpochPermutationSampler``)."""

    def _get_train_sampler(self, train_dataset=None):
        ds = train_dataset if train_dataset is not None else self.train_dataset
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return EpochPermutationSampler(len(ds), seed)


class CompleteMarker(TrainerCallback):
    """Mark ``checkpoint-N/`` complete after the Trainer has saved all of it."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                (ckpt / COMPLETE_MARKER).write_text(f"{state.global_step}\n")


class StopAfter(TrainerCallback):
    """Stop training (as a crash would) once ``step`` optimizer steps are done (tests)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            raise KeyboardInterrupt(f"stopped after step {state.global_step}")


def last_complete_checkpoint(out_dir: str | Path, clean: bool = True) -> str | None:
    """Newest ``checkpoint-N`` holding the ``COMPLETE`` marker; unmarked newer ones are removed."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return None
    ckpts = sorted(
        (int(m.group(1)), p) for p in out_dir.iterdir() if (m := _CKPT.match(p.name)) and p.is_dir()
    )
    for _, path in reversed(ckpts):
        if (path / COMPLETE_MARKER).is_file():
            return str(path)
        if clean:
            shutil.rmtree(path, ignore_errors=True)
    return None


def common_training_kwargs(cfg) -> dict:
    """The arguments SFT and RL share: checkpoints, logging, precision, seeds, device."""
    return dict(
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        bf16=cfg.bf16,
        gradient_checkpointing=cfg.gradient_checkpointing,
        report_to=_report_to(),
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False,  # a progress bar with ETA on every training run
    )


def sft_training_args(cfg, out_dir: str | Path, max_steps: int | None = None, **overrides):
    """``TrainingArguments`` of the SFT recipe (section ``sft``); ``overrides`` win."""
    kw = dict(
        output_dir=str(out_dir),
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": cfg.min_lr_rate},
        warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        num_train_epochs=cfg.epochs,
        max_steps=max_steps if max_steps is not None else cfg.max_steps,
        dataloader_num_workers=cfg.num_workers,
        remove_unused_columns=False,
        **common_training_kwargs(cfg),
    )
    kw.update(overrides)
    return TrainingArguments(**kw)


def _report_to() -> list[str]:
    try:
        import tensorboard  # noqa: F401

        return ["tensorboard"]
    except ImportError:
        return []


def build_sft_trainer(model, processor, train_dataset, args: TrainingArguments, callbacks=()):
    """HF ``Trainer`` on processor features; the model's loss is Eq. (5) (labels -100 on prompts)."""
    return ResumableTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        data_collator=processor.collate,
        callbacks=[CompleteMarker(), *callbacks],
    )


def save_final(trainer, processor, path: str | Path) -> Path:
    """Model + processor into ``path``, atomically, from any number of processes.

    Every process takes part in ``trainer.save_model`` (under ZeRO-3 it gathers the sharded
    parameters); the main process writes into ``<path>.tmp`` and renames it into place.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    acc = trainer.accelerator
    if acc.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    acc.wait_for_everyone()
    trainer.save_model(str(tmp))
    if acc.is_main_process:
        processor.save_pretrained(tmp)
        old = path.with_name(path.name + ".old")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
    return path


# ----------------------------------------------------------------------------- the stage's run
def load_samples(data_dir: str, qa_mode: str, limit: int = 0, split: str = "train"):
    """One split of the built dataset as a torch Dataset (the first ``limit`` samples if > 0)."""
    from pointvl.data.dataset import PointVLDataset

    ds = PointVLDataset(data_dir, split, qa_mode=qa_mode)
    if limit and limit < len(ds):
        return torch.utils.data.Subset(ds, range(limit))
    return ds


def run_sft(
    cfg, model_cfg, profile: str, resume: bool = False, attn_implementation: str | None = None
) -> dict:
    """Eq. (5) SFT from the initial policy (``model.policy.build_policy``): the ``sft`` stage.

    ``cfg``: ``SFTConfig`` with paths resolved; ``model_cfg``: ``ModelConfig``;
    ``attn_implementation``: ``launch.attn_implementation``. Writes
    ``<out_dir>/checkpoint-N`` (resumable; ``resume`` continues from the newest complete one),
    ``<out_dir>/final`` (atomic), ``<log_dir>/log.{jsonl,csv}`` (``train.logs.MetricsLogger``:
    a failed run never truncates the old log) and the metrics JSON.
    """
    import time

    from transformers import AutoTokenizer

    from pointvl.io import atomic_write_json
    from pointvl.model.policy import build_policy
    from pointvl.train.logs import MetricsLogger

    cfg.check_inputs(profile)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, processor = build_policy(
        model_cfg, AutoTokenizer.from_pretrained(cfg.tokenizer_dir), seed=cfg.seed,
        attn_implementation=attn_implementation,
    )  # fmt: skip
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
