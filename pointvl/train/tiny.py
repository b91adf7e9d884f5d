"""A tiny, offline RL setting for tests and the benchmark: BPE + random causal LM + rows.

Nothing here is downloaded: the tokenizer is trained on written target JSONs
(``pointvl.demo``) and the model is a randomly initialised 2-layer ``Qwen2ForCausalLM``
(``tiny_lm``) or the PointVL policy (``pointvl.model.policy.build_tiny_policy``). Rows follow
the ``GRCATrainer`` contract: ``prompt`` (text), ``target`` (reward target, see
``pointvl.rewards``) and, optionally, model-input columns such as ``point_clouds``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from pointvl.demo import demo_completions, demo_target
from pointvl.model.tokenizer import train_bpe_tokenizer
from pointvl.schema import format_target

QUESTION = "Locate the object in 2D and 3D."


def tiny_tokenizer(quant_bins: int = 100, corpus: int = 60, vocab_size: int = 400, seed: int = 0):
    """A byte-level BPE trained on ``corpus`` written target JSONs (seeded)."""
    texts = [format_target(demo_target(seed + 1 + i), quant_bins) for i in range(corpus)]
    texts += [QUESTION, "Sure. Here is the structured answer:"]
    return train_bpe_tokenizer(texts, vocab_size=vocab_size)


def tiny_lm(tokenizer, hidden: int = 64, layers: int = 2, seed: int = 0) -> Qwen2ForCausalLM:
    """A random 2-layer Qwen2 causal LM sized for the tokenizer; ends turns at ``<|im_end|>``."""
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.eos_token_id = [
        tokenizer.convert_tokens_to_ids("<|im_end|>"),
        tokenizer.eos_token_id,
    ]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def tiny_rows(n: int, tokenizer, seed: int = 0, num_points: int | None = None) -> list[dict]:
    """``n`` RL rows: chat prompt, reward target, optional random ``point_clouds`` (N, 6)."""
    rng = np.random.default_rng(seed)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True
    )
    rows = []
    for i in range(n):
        row = {"prompt": prompt, "target": demo_target(seed + 1000 + i)}
        if num_points:
            row["point_clouds"] = rng.uniform(-0.5, 0.5, (num_points, 6)).astype(np.float32)
        rows.append(row)
    return rows


def tiny_policy_rows(
    processor,
    n: int,
    num_points: int,
    image_hw: tuple[int, int] = (112, 112),
    question: str = QUESTION,
    seed: int = 0,
) -> list[dict]:
    """``n`` RL rows for the PointVL policy: prompt, ``demo_target(i)``, a random cloud (N, 6)
    and a random RGB image (H, W, 3) prepared by ``processor`` (pixel_values, image_grid_thw)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        img = processor.prepare_image(rng.integers(0, 256, (*image_hw, 3), dtype=np.uint8))
        rows.append({
            "prompt": processor.prompt_text(question),
            "target": demo_target(i),
            "point_clouds": rng.uniform(-0.5, 0.5, (num_points, 6)).astype(np.float32),
            "pixel_values": img["pixel_values"].numpy(),
            "image_grid_thw": img["image_grid_thw"].numpy(),
        })  # fmt: skip
    return rows


def scripted_completions(target: dict, quant_bins: int, seed: int = 0) -> list[str]:
    """The eight written completions of ``pointvl.demo`` (Sec. 3.7 cases) for ``target``."""
    return demo_completions(target, quant_bins, seed=seed)


class TinySFTData(torch.utils.data.Dataset):
    """RL rows of ``pointvl.train.tiny`` (``prompt``, ``target``) as completion-only SFT
    features for a plain causal LM: ``input_ids`` = prompt + target JSON + ``<|im_end|>``,
    ``labels`` = -100 on the prompt (Eq. 5 sums over the target only). ``collate`` right-pads
    a batch; pass this object where ``build_sft_trainer`` expects the processor."""

    def __init__(self, rows: Sequence[Mapping], tokenizer, quant_bins: int):
        from pointvl.schema import format_target

        end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.pad_id = tokenizer.pad_token_id
        self.features = []
        for r in rows:
            p = tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]
            c = tokenizer(format_target(r["target"], quant_bins), add_special_tokens=False)
            c = c["input_ids"] + [end]
            self.features.append({"input_ids": p + c, "labels": [-100] * len(p) + c})

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict:
        return self.features[i]

    def collate(self, batch: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        B, L = len(batch), max(len(x["input_ids"]) for x in batch)
        ids = torch.full((B, L), self.pad_id, dtype=torch.long)  # (B, L)
        labels = torch.full((B, L), -100, dtype=torch.long)  # (B, L)
        mask = torch.zeros((B, L), dtype=torch.long)  # (B, L)
        for i, x in enumerate(batch):
            n = len(x["input_ids"])
            ids[i, :n] = torch.tensor(x["input_ids"])
            labels[i, :n] = torch.tensor(x["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
