"""A byte-level BPE tokenizer trained locally (the ``tiny`` profile has no hub tokenizer).

The ``paper`` profile uses Qwen2.5-VL's own tokenizer; ``tiny`` and ``smoke`` train one on the
dataset's text with HF ``tokenizers``. ``trim_offsets=False`` keeps ``offset_mapping`` exact
(every character of the text belongs to exactly one token), which span routing relies on.
BPE merges split numbers irregularly ("1234" may become "12" + "34" or "123" + "4"), which is
precisely what the span alignment in ``pointvl.spans`` must survive.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import Annotated

import numpy as np
from tokenizers import (
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import PreTrainedTokenizerFast

from pointvl.config import ConfigError, DataError, OneOf, PositiveInt

SPECIAL_TOKENS = {
    "pad_token": "<|pad|>",
    "eos_token": "<|endoftext|>",
    "bos_token": "<|im_start|>",
    "unk_token": "<|unk|>",
}
EXTRA_SPECIAL_TOKENS = [
    "<|im_end|>",
    "<|point_pad|>",
    "<|image_pad|>",
    "<|vision_start|>",
    "<|vision_end|>",
]

# Qwen2.5's chat layout (string contents only), so that tiny and paper prompts read alike:
# <|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n...<|im_end|>\n
# <|im_start|>assistant\n
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int = 1024, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts``; deterministic for the same texts and settings."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = list(SPECIAL_TOKENS.values()) + EXTRA_SPECIAL_TOKENS
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        additional_special_tokens=EXTRA_SPECIAL_TOKENS,
        **SPECIAL_TOKENS,
    )
    fast.padding_side = "left"
    fast.chat_template = CHAT_TEMPLATE
    return fast


# Qwen2's pre-tokenizer (tokenizer.json of Qwen2.5-VL): letters, single digits (\p{N}: every
# digit its own token), punctuation runs, newlines, spaces; then byte-level BPE without regex.
QWEN_PRETOKENIZE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                       "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]  # fmt: skip
"""Qwen2.5-VL's special tokens used here, in its order (no ``<|point_pad|>``: ours is added)."""


def train_qwen_style_tokenizer(
    texts: Iterable[str], vocab_size: int = 2048, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """A byte-level BPE laid out like Qwen2.5-VL's tokenizer, trained on ``texts``: Qwen2's
    pre-tokenizer (every digit a token, so a Q = 1000 bin is up to 3 tokens, as with the real
    one), its special tokens, pad ``<|endoftext|>``, eos ``<|im_end|>``, no bos. The
    ``paper_sim`` rehearsal's backbone tokenizer (``pointvl.rehearsal``)."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=QWEN_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        additional_special_tokens=QWEN_SPECIAL_TOKENS[1:],
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    fast.padding_side = "left"
    fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, path: str | os.PathLike) -> None:
    """Save like any HF tokenizer (``AutoTokenizer.from_pretrained(path)`` loads it)."""
    tokenizer.save_pretrained(str(path))


def special_token_ids(tokenizer) -> dict[str, int]:
    """Ids the policy config needs: image/vision/point placeholders, bos/eos/pad, im_end.

    Works for our BPE tokenizer and for Qwen's (which has no ``<|point_pad|>``: add it first
    with ``tokenizer.add_special_tokens({"additional_special_tokens": ["<|point_pad|>"]})``).
    ``video_token_id`` falls back to the pad id when there is no ``<|video_pad|>`` (no video).
    """

    def tid(token: str) -> int:
        i = tokenizer.convert_tokens_to_ids(token)
        if i is None or i == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no {token!r} token")
        return int(i)

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tid("<|endoftext|>")
    vocab = tokenizer.get_vocab()
    return {
        "image_token_id": tid("<|image_pad|>"),
        "video_token_id": int(vocab.get("<|video_pad|>", pad)),
        "vision_start_token_id": tid("<|vision_start|>"),
        "vision_end_token_id": tid("<|vision_end|>"),
        "point_token_id": tid("<|point_pad|>"),
        "im_end_token_id": tid("<|im_end|>"),
        "bos_token_id": int(tokenizer.bos_token_id if tokenizer.bos_token_id is not None else pad),
        "eos_token_id": int(tokenizer.eos_token_id),
        "pad_token_id": int(pad),
    }


# ----------------------------------------------------------------------------- the stage's run
SOURCES = ("bpe", "backbone")


@dataclasses.dataclass
class TrainTokenizerConfig:
    """Section ``train_tokenizer`` of params.yaml (the ``train_tokenizer`` stage)."""

    source: Annotated[str, OneOf(*SOURCES)] = "bpe"
    """``bpe``: train a byte-level BPE on the dataset text; ``backbone``: Qwen's tokenizer."""
    data_dir: str = "data/tiny"
    """Built dataset folder (``build_dataset`` output) whose texts train the BPE."""
    splits: list[str] = dataclasses.field(default_factory=lambda: ["train"])
    """Dataset splits whose texts train the BPE (never the test split)."""
    vocab_size: PositiveInt = 1024
    """BPE vocabulary size, special tokens included (>= 300 for ``bpe``)."""
    min_frequency: PositiveInt = 2
    """BPE: minimum pair frequency for a merge."""
    backbone: str = "Qwen/Qwen2.5-VL-3B-Instruct"
    """``source: backbone``: local path or hub id of the backbone's tokenizer."""
    out_dir: str = "models/tiny/tokenizer"
    """Where the tokenizer is saved (replaced whole, only once it is complete)."""
    metrics: str = "results/metrics/train_tokenizer.json"
    """Metrics JSON (vocab size, texts, tokens per target)."""

    def validate(self) -> None:
        if self.source == "bpe" and self.vocab_size < 300:
            raise ConfigError(
                f"train_tokenizer.vocab_size={self.vocab_size}: expected >= 300 "
                "(256 byte symbols + special tokens + merges)"
            )
        bad = [s for s in self.splits if s != "train"]
        if bad:
            raise ConfigError(
                f"train_tokenizer.splits={self.splits}: expected ['train'] (the tokenizer never "
                "sees the test split)"
            )


def build_tokenizer(cfg: TrainTokenizerConfig, texts: list[str] | None):
    """A BPE trained on ``texts``, or the backbone's tokenizer with our special tokens."""
    if cfg.source == "bpe":
        return train_bpe_tokenizer(
            texts, vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency
        )
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cfg.backbone)
    missing = [t for t in EXTRA_SPECIAL_TOKENS if t not in tok.get_vocab()]
    if missing:
        tok.add_special_tokens({"additional_special_tokens": missing})
    if tok.chat_template is None:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def train_tokenizer(cfg: TrainTokenizerConfig, texts: list[str] | None = None) -> dict:
    """Train (or load), save and measure the tokenizer; ``texts`` default: the dataset's.

    The tokenizer folder and the metrics file are each replaced only once complete.
    """
    from pointvl.io import atomic_dir, write_metrics

    if texts is None:  # bpe trains on them; both measure how finely the targets are cut
        from pointvl.data.dataset import list_texts

        texts = list_texts(cfg.data_dir, cfg.splits)
    if cfg.source == "bpe" and not texts:
        raise DataError(f"train_tokenizer: no texts found in {cfg.data_dir} {cfg.splits}")
    tok = build_tokenizer(cfg, texts)
    with atomic_dir(cfg.out_dir) as tmp:
        save_tokenizer(tok, tmp)
    targets = [t for t in (texts or []) if t.startswith("{")]
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in targets]
    metrics = {
        "source": cfg.source,
        "vocab_size": len(tok),
        "num_texts": len(texts or []),
        "num_targets": len(targets),
        "target_tokens_mean": float(np.mean(lengths)) if lengths else None,
        "target_tokens_max": int(max(lengths)) if lengths else None,
        "target_chars_per_token": (
            float(sum(map(len, targets)) / sum(lengths)) if lengths else None
        ),
        "special_token_ids": special_token_ids(tok),
    }
    write_metrics(cfg.metrics, metrics)  # the source name goes to <stem>.run.json
    return metrics
