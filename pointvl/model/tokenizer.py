"""A byte-level BPE tokenizer trained locally (the ``tiny`` profile has no hub tokenizer).

The ``paper`` profile uses Qwen2.5-VL's own tokenizer; ``tiny`` and ``smoke`` train one on the
dataset's text with HF ``tokenizers``. ``trim_offsets=False`` keeps ``offset_mapping`` exact
(every character of the text belongs to exactly one token), which span routing relies on.
BPE merges split numbers irregularly ("1234" may become "12" + "34" or "123" + "4"), which is
precisely what the span alignment in ``pointvl.spans`` must survive.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

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
    return fast


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, path: str | os.PathLike) -> None:
    """Save like any HF tokenizer (``AutoTokenizer.from_pretrained(path)`` loads it)."""
    tokenizer.save_pretrained(str(path))
