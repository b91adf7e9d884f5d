"""DVC stage ``train_tokenizer``: the tokenizer the policy reads and writes with.

- ``source: bpe`` (smoke, tiny): a byte-level BPE trained on every text of the dataset's
  train split (questions, answers, descriptions, target JSONs), ``pointvl.model.tokenizer``.
- ``source: backbone`` (paper): Qwen2.5-VL's own tokenizer, loaded from
  ``train_tokenizer.backbone`` (local path or hub id), with ``<|point_pad|>`` added.

Either way it is saved like any HF tokenizer (``AutoTokenizer.from_pretrained(out_dir)``),
with the Qwen-style chat template, and a metrics file records its size and how finely it cuts
the targets.

    python -m pointvl.stages.train_tokenizer --params params.yaml [--profile smoke]
        [--data DIR] [--out DIR]
"""

from __future__ import annotations

from pointvl.model.tokenizer import TrainTokenizerConfig, train_tokenizer
from pointvl.stages._cli import Flag, Stage

STAGE = Stage(
    "train_tokenizer",
    __doc__,
    sections={"train_tokenizer": TrainTokenizerConfig},
    flags=[
        Flag("--data", to="train_tokenizer.data_dir"),
        Flag("--out", to="train_tokenizer.out_dir"),
    ],
    run=lambda ctx: train_tokenizer(ctx.train_tokenizer),
)
main = STAGE.main

if __name__ == "__main__":
    main()
