"""RL on the PointVL policy: dataset rows for ``GRCATrainer``, its arguments, and the
budget-matched SFT baseline.

Rows are small: ``prompt`` (text with the point / image placeholders), ``target`` (the reward
target of ``pointvl.rewards``: boxes, keypoints, camera, answer, description) and ``index``
into the ``PointVLDataset``. ``PointVLInputs`` turns a batch of rows into the policy's extra
inputs (``point_clouds`` (B, N, C), ``pixel_values`` (B * patches, d), ``image_grid_thw``
(B, 3)) by looking the sample up, so point clouds never pass through Arrow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from trl import GRPOConfig

from pointvl.credit import CreditConfig
from pointvl.step import Scoring
from pointvl.train.grca_trainer import GRCATrainer

TARGET_KEYS = ("bbox2d", "bbox3d", "kpts2d", "kpts3d", "K", "R", "t")


def load_sft_policy(path, attn_implementation: str | None = None):
    """(policy, processor) of the SFT checkpoint every RL arm starts from, in float32
    (``pointvl.train.launch.MASTER_DTYPE``) whatever it was saved in: a ZeRO-3 save is bf16, and
    AdamW must update fp32 weights (lr 1e-6 steps round away in bf16)."""
    from pointvl.model import PointVLForConditionalGeneration, PointVLProcessor
    from pointvl.train.launch import MASTER_DTYPE

    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = PointVLForConditionalGeneration.from_pretrained(path, dtype=MASTER_DTYPE, **kwargs)
    return model, PointVLProcessor.from_pretrained(path)


def reward_target(sample: Mapping[str, Any]) -> dict:
    """The continuous ground truth a completion is scored against (JSON-able lists)."""
    out = {k: torch.as_tensor(sample[k]).tolist() for k in TARGET_KEYS}
    out["answer"] = str(sample.get("answer", ""))
    out["description"] = str(sample.get("description", ""))
    return out


def rl_rows(dataset, processor, limit: int = 0) -> list[dict]:
    """One row per dataset sample (the first ``limit`` if > 0)."""
    n = len(dataset) if not limit else min(limit, len(dataset))
    rows = []
    for i in range(n):
        s = dataset[i]
        rows.append(
            {"prompt": processor.prompt_text(s["question"]), "target": reward_target(s), "index": i}
        )
    return rows


class PointVLInputs:
    """rows -> B-first extra inputs of the PointVL policy, looked up by ``row["index"]``."""

    keys = ("point_clouds", "pixel_values", "image_grid_thw")
    concat_keys = ("pixel_values", "image_grid_thw")

    def __init__(self, dataset, processor, cache_size: int = 512):
        self.dataset = dataset
        self.processor = processor
        self.cache_size = cache_size
        self._cache: dict[int, dict[str, torch.Tensor]] = {}

    def one(self, index: int) -> dict[str, torch.Tensor]:
        if index not in self._cache:
            if len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))  # oldest first
            s = self.dataset[index]
            img = self.processor.prepare_image(
                s["image"].numpy() if torch.is_tensor(s["image"]) else s["image"]
            )
            self._cache[index] = {
                "point_clouds": self.processor.prepare_points(s["points"]),  # (N, C)
                "pixel_values": img["pixel_values"],  # (patches, d)
                "image_grid_thw": img["image_grid_thw"],  # (1, 3)
            }
        return self._cache[index]

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        per_row = [self.one(int(r["index"])) for r in rows]
        return {k: torch.stack([p[k] for p in per_row]) for k in self.keys}  # (B, ...)


def grpo_args(cfg, out_dir, processor=None, **overrides) -> GRPOConfig:
    """``GRPOConfig`` of the RL recipe (section ``rl``): G, clip ε, β, constant lr, T; with a
    ``PointVLProcessor``, the placeholders suppressed exactly as in evaluation
    (``generate.suppressed_ids``; a text-only model has none). ``overrides`` win
    (``generation_kwargs`` entries are merged)."""
    from pointvl.eval.generate import suppressed_ids
    from pointvl.train.sft import common_training_kwargs

    gen = {"suppress_tokens": list(suppressed_ids(processor))} if processor is not None else {}
    gen.update(overrides.pop("generation_kwargs", None) or {})
    kw = dict(
        output_dir=str(out_dir),
        per_device_train_batch_size=cfg.prompts_per_step * cfg.num_generations,
        gradient_accumulation_steps=cfg.grad_accum,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        mask_truncated_completions=cfg.mask_truncated_completions,
        temperature=cfg.temperature,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        epsilon=cfg.epsilon,
        beta=cfg.beta,
        loss_type=cfg.loss_type,
        max_steps=cfg.max_steps,
        disable_dropout=True,
        **common_training_kwargs(cfg),
        generation_kwargs=gen or None,
    )
    kw.update(overrides)
    return GRPOConfig(**kw)


def rollout_sampling(cfg, processor):
    """The RL rollout distribution of section ``rl``: softmax(logits / T), placeholders
    suppressed, at most ``max_completion_length`` tokens (what ``GRCATrainer.rollout_sampling``
    builds from ``grpo_args``; used by the validation curves of every arm)."""
    from pointvl.eval.generate import Sampling, suppressed_ids

    return Sampling(
        max_new_tokens=cfg.max_completion_length,
        eos_token_ids=tuple(processor.eos_token_ids),
        pad_token_id=processor.token_ids["pad_token_id"],
        do_sample=True,
        temperature=cfg.temperature,
        suppress_tokens=suppressed_ids(processor),
    )


def scoring_of(cfg, quant_bins: int, num_keypoints: int) -> Scoring:
    """How the RL stage scores completions (``schema`` + ``rl.keypoint_reward``)."""
    return Scoring(quant_bins, num_keypoints, keypoint_reward=cfg.keypoint_reward)


def build_rl_trainer(
    model, processor, dataset, rows, cfg, args, quant_bins, num_keypoints, callbacks=()
):
    """``GRCATrainer`` for ``cfg.variant`` on the PointVL policy (prompts grouped by index)."""
    from datasets import Dataset

    from pointvl.train.sft import CompleteMarker

    inputs = PointVLInputs(dataset, processor)
    # rollouts end where evaluation's completions end
    model.generation_config.eos_token_id = list(processor.eos_token_ids)
    model.generation_config.pad_token_id = processor.token_ids["pad_token_id"]
    return GRCATrainer(
        model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=processor.tokenizer,
        variant=cfg.variant,
        credit=CreditConfig(background=cfg.background, lam=cfg.lam),
        scoring=scoring_of(cfg, quant_bins, num_keypoints),
        model_input_keys=inputs.keys,
        concat_keys=inputs.concat_keys,
        model_inputs_fn=inputs,
        extra_columns=("index",),
        group_key="index",
        logprob_chunk_tokens=cfg.logprob_chunk_tokens,
        prompt_sharing=cfg.prompt_sharing,
        callbacks=[CompleteMarker(), *callbacks],
    )


def validation_set(dataset, processor, n: int, prompts_per_batch: int = 8):
    """The first ``n`` samples of the val split as a ``ValidationSet`` (reward targets too)."""
    from pointvl.train.validation import ValidationSet

    samples = [dataset[i] for i in range(min(n, len(dataset)))]
    targets = [reward_target(s) for s in samples]
    return ValidationSet.from_samples(samples, processor, targets, prompts_per_batch)
