"""DVC stage ``train_tokenizer``: the tokenizer the policy reads and writes with.

- ``source: bpe`` (smoke, tiny): a byte-level BPE trained on every text of the dataset's
  train split (questions, answers, descriptions, target JSONs), ``pointvl.model.tokenizer``.
- ``source: backbone`` (paper): Qwen2.5-VL's own tokenizer, loaded from ``model.backbone``
  (local path or hub id), with ``<|point_pad|>`` added.

Either way it is saved like any HF tokenizer (``AutoTokenizer.from_pretrained(out_dir)``),
with the Qwen-style chat template, and a metrics file records its size and how finely it cuts
the targets.

    python -m pointvl.stages.train_tokenizer --params params.yaml [--profile smoke]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from pointvl.config import ConfigError, load_section
from pointvl.io import write_metrics
from pointvl.model.tokenizer import (
    CHAT_TEMPLATE,
    EXTRA_SPECIAL_TOKENS,
    save_tokenizer,
    special_token_ids,
    train_bpe_tokenizer,
)

SOURCES = ("bpe", "backbone")


@dataclasses.dataclass
class TrainTokenizerConfig:
    """Section ``train_tokenizer`` of params.yaml."""

    source: str = "bpe"
    """``bpe``: train a byte-level BPE on the dataset text; ``backbone``: Qwen's tokenizer."""
    data_dir: str = "data/tiny"
    """Built dataset folder (``build_dataset`` output) whose texts train the BPE."""
    splits: list[str] = dataclasses.field(default_factory=lambda: ["train"])
    """Dataset splits whose texts train the BPE (never the test split)."""
    vocab_size: int = 1024
    """BPE vocabulary size, special tokens included."""
    min_frequency: int = 2
    """BPE: minimum pair frequency for a merge."""
    backbone: str = "Qwen/Qwen2.5-VL-3B-Instruct"
    """``source: backbone``: local path or hub id of the backbone's tokenizer."""
    out_dir: str = "models/tiny/tokenizer"
    """Where the tokenizer is saved."""
    metrics: str = "results/metrics/train_tokenizer.json"
    """Metrics JSON (vocab size, texts, tokens per target)."""

    def validate(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"train_tokenizer.source={self.source!r}: expected one of {SOURCES}")
        if self.source == "bpe" and self.vocab_size < 300:
            raise ConfigError(
                f"train_tokenizer.vocab_size={self.vocab_size}: expected >= 300 "
                "(256 byte symbols + special tokens + merges)"
            )
        if self.min_frequency < 1:
            raise ConfigError(f"train_tokenizer.min_frequency={self.min_frequency}: expected >= 1")


def build_tokenizer(cfg: TrainTokenizerConfig, texts: list[str] | None):
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


def run(cfg: TrainTokenizerConfig, texts: list[str] | None = None) -> dict:
    """Train (or load), save, and measure the tokenizer; ``texts`` default: the dataset's."""
    if texts is None and cfg.source == "bpe":
        from pointvl.data.dataset import list_texts

        texts = list_texts(cfg.data_dir, cfg.splits)
    if cfg.source == "bpe" and not texts:
        raise ConfigError(f"train_tokenizer: no texts found in {cfg.data_dir} {cfg.splits}")
    tok = build_tokenizer(cfg, texts)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_tokenizer(tok, out)
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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None, help="smoke | tiny | paper (default: params)")
    ap.add_argument("--data", default=None, help="override train_tokenizer.data_dir")
    ap.add_argument("--out", default=None, help="override train_tokenizer.out_dir")
    args = ap.parse_args(argv)
    cfg = load_section(args.params, "train_tokenizer", TrainTokenizerConfig, args.profile)
    if args.data:
        cfg.data_dir = args.data
    if args.out:
        cfg.out_dir = args.out
    print(json.dumps(run(cfg), indent=1))


if __name__ == "__main__":
    main()
