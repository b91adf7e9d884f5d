"""Validation curves during RL: sampled rewards on a fixed set of held-out prompts.

The rollout rewards of a training step are noisy functions of *which* prompts the step drew
(per-step rewards of two arms that share a seed correlate at 0.9: prompt order, not
learning). Every ``every`` optimizer steps (and before the first), ``ValidationSampler``
draws G completions for each of the same V validation prompts (carved from train, never
test: ``pointvl.data.dataset.VAL_FRACTION``) with the rollout sampler at the rollout
temperature, from a fixed seed in a forked RNG (training randomness is untouched), scores
them like the rollouts and writes one ``val/*`` record to the run's log:

    val/reward/<field|seq|rpc|format|...>   mean sampled reward
    val/spans/parse_fail_frac                sampled parse failures
    val/pck3d, val/spread3d, val/iou3d, ...  per-sample metrics of pointvl.eval.metrics
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from transformers import TrainerCallback
from trl.models import unwrap_model_for_generation

from pointvl.eval.generate import decode
from pointvl.step import Scoring, diagnostics, score

VAL_METRICS = ("iou2d", "iou3d", "kpa2d", "kpa3d", "pck2d", "pck3d", "spread3d", "rpc")


@dataclasses.dataclass
class ValidationSet:
    """Decode-ready batches of validation prompts and their reward targets."""

    batches: list[dict[str, torch.Tensor]]
    """Left-padded prompt batches (``PointVLProcessor.batch(..., with_target=False)``)."""
    targets: list[Mapping]
    """One reward target per prompt, in batch order."""

    @classmethod
    def from_samples(cls, samples: Sequence[Mapping], processor, targets, prompts_per_batch=8):
        samples = list(samples)
        batches = [
            processor.batch(samples[i : i + prompts_per_batch], with_target=False)
            for i in range(0, len(samples), prompts_per_batch)
        ]
        return cls(batches, list(targets))


def validation_record(texts: Sequence[str], targets: Sequence[Mapping], scoring: Scoring) -> dict:
    """Mean sampled rewards and per-sample metrics of completions (one per target)."""
    from pointvl.eval.metrics import per_sample_metrics

    out = {f"val/{k}": v for k, v in diagnostics(score(texts, targets, scoring)).items()}
    per = per_sample_metrics(texts, targets, scoring.quant_bins)
    for name in VAL_METRICS:
        values = per[name][~np.isnan(per[name])]
        out[f"val/{name}"] = float(values.mean()) if values.size else float("nan")
    out["val/n"] = len(texts)
    return out


class ValidationSampler(TrainerCallback):
    """Samples the validation set every ``every`` steps, before the first and at the end,
    for any ``Trainer`` (the RL arms and the budget-matched SFT): ``sampling`` is the RL
    rollout distribution (``pointvl.train.rl.rollout_sampling``).

    Put it before the ``MetricsLogger`` in the callbacks: its last record must reach the
    log before the logger closes it."""

    def __init__(
        self,
        trainer,
        val: ValidationSet,
        scoring: Scoring,
        sampling,
        tokenizer,
        num_generations: int,
        every: int,
        logger,
        seed: int = 0,
    ):
        if every < 1:
            raise ValueError(f"ValidationSampler.every={every}: expected >= 1")
        self.trainer, self.val, self.scoring = trainer, val, scoring
        self.sampling, self.tokenizer = sampling, tokenizer
        self.num_generations, self.every, self.logger, self.seed = (
            num_generations,
            every,
            logger,
            seed,
        )
        self._done: set[int] = set()

    def run(self, step: int) -> dict:
        """Sample, score and log the validation set at ``step`` (all processes take part)."""
        tr = self.trainer
        G = self.num_generations
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        ids: list[list[int]] = []
        with (
            torch.random.fork_rng(devices=devices),
            unwrap_model_for_generation(
                tr.model_wrapped, tr.accelerator, gather_deepspeed3_params=True
            ) as model,
            torch.no_grad(),
            tr.accelerator.autocast(),  # the rollouts' and the loss's precision (bf16 on GPUs)
        ):
            torch.manual_seed(self.seed)
            was_training = model.training
            model.eval()  # BatchNorm on running statistics, as in evaluation and rollouts
            for batch in self.val.batches:
                batch = {k: v.to(tr.accelerator.device) for k, v in batch.items()}
                ids += decode(model, batch, self.sampling, G).ids
            model.train(was_training)
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        targets = [t for t in self.val.targets for _ in range(G)]
        record = {"step": step, **validation_record(texts, targets, self.scoring)}
        if tr.is_world_process_zero():
            self.logger.write(record)
        self._done.add(step)
        return record

    def on_step_begin(self, args, state, control, **kwargs):
        # before the first update (on_train_begin would precede the logger's own)
        if state.global_step == 0 and 0 not in self._done:
            self.run(0)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            self.run(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if state.global_step not in self._done:
            self.run(state.global_step)
