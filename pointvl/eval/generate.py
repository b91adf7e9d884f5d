"""Greedy generation on a test split: checkpoint -> completion texts (the eval path of DESIGN.md).

A checkpoint folder holds the model (``save_pretrained``) and the ``PointVLProcessor``; the
model classes are registered with the Auto classes, so ``AutoModelForCausalLM`` loads it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm


def load_checkpoint(path: str | os.PathLike, dtype: torch.dtype | None = None):
    """(model in eval mode, processor) from a checkpoint folder written by the train stages."""
    from transformers import AutoModelForCausalLM

    import pointvl.model  # noqa: F401  (registers the Auto classes)
    from pointvl.model.processor import PointVLProcessor

    if not os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint folder {path} does not exist (run its stage first)")
    kwargs = {"dtype": dtype} if dtype is not None else {}
    model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    return model.eval(), PointVLProcessor.from_pretrained(path)


@torch.no_grad()
def generate_token_ids(
    model,
    processor,
    samples: Sequence[dict],
    batch_size: int = 16,
    max_new_tokens: int = 400,
    progress: bool = False,
) -> list[list[int]]:
    """Greedy completion token ids (up to and including the first end-of-turn) per sample."""
    out_ids: list[list[int]] = []
    eos = set(processor.eos_token_ids)
    steps = range(0, len(samples), batch_size)
    for start in tqdm(steps, desc="generate", disable=not progress):
        chunk = list(samples[start : start + batch_size])
        batch = processor.batch(chunk, with_target=False)
        prompt_len = batch["input_ids"].shape[1]
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=processor.eos_token_ids,
            pad_token_id=processor.tokenizer.pad_token_id,
        )  # (b, L + T)
        for row in out[:, prompt_len:].tolist():
            end = next((j + 1 for j, t in enumerate(row) if t in eos), len(row))
            out_ids.append(row[:end])
    return out_ids


def generate_completions(
    model,
    processor,
    samples: Sequence[dict],
    batch_size: int = 16,
    max_new_tokens: int = 400,
    progress: bool = True,
) -> list[str]:
    """Greedy completions for dataset samples (``points``, ``image``, ``question``), in order."""
    ids = generate_token_ids(model, processor, samples, batch_size, max_new_tokens, progress)
    return processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
