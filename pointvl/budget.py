"""Generation lengths derived from the schema, Q, M and the tokenizer, never typed.

A completion cut before its closing brace loses the fields after the cut (reward 0, a
truncated RL completion gets no loss), so every generation budget (``rl.max_completion_length``,
``evaluate.max_new_tokens``, ``figures.max_new_tokens``, all ``${shared.max_new_tokens}``)
must hold the longest *valid* target::

    L_max = tokens(format_target(worst case))
            worst case: each 2D number the pixel value in [0, image_size] with the most tokens,
                        each 3D number the bin in [0, Q) with the most tokens (in its context:
                        first in a list, or after ", "), answer and description the dataset's
                        longest (in tokens); the dataset's own targets are counted too
    budget = L_max + 1 (end of turn) + margin,   margin = max(16, ceil(L_max / 20))

Qwen's pre-tokenizer splits every digit, so with Q = 1000 a 3D number is up to 3 tokens and
the paper's target is ~500 tokens (the ``paper_sim`` tokenizer splits digits the same way).
A byte-level BPE (tiny, smoke) merges digits irregularly: the per-number maximum is taken over
every value, so the bound holds for any valid target.

A params value ``auto`` becomes the budget; an integer is checked: below ``L_max + 1`` is a
``ConfigError`` naming the field (``resolve_budget``), at the start of the rl, evaluate and
figures stages.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable

from pointvl.config import ConfigError
from pointvl.schema import dequantize_3d, format_target

AUTO = "auto"
MIN_MARGIN = 16


@dataclasses.dataclass(frozen=True)
class TargetLength:
    """The longest valid target of a dataset under a tokenizer, and the budget it implies."""

    tokens: int
    """L_max: tokens of the longest valid target (no end-of-turn)."""
    text: str
    """That target."""
    quant_bins: int
    num_keypoints: int
    image_size: int

    @property
    def needed(self) -> int:
        """The smallest budget that completes every valid target: L_max + end of turn."""
        return self.tokens + 1

    @property
    def budget(self) -> int:
        """``auto``: L_max + 1 + margin (module docstring)."""
        return self.needed + max(MIN_MARGIN, math.ceil(self.tokens / 20))


def _count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _widest(tokenizer, values: Iterable[int], lead: str) -> int:
    """The value whose ``"[<lead><v>"`` costs the most tokens beyond ``"[<lead>"``."""
    base = _count(tokenizer, "[" + lead)
    return max(values, key=lambda v: (_count(tokenizer, f"[{lead}{v}") - base, len(str(v))))


def _worst_list(shape: tuple[int, ...], first: int, rest: int) -> list:
    """A nested list of ``shape`` whose first number of each innermost list is ``first``."""
    if len(shape) == 1:
        return [first] + [rest] * (shape[0] - 1)
    return [_worst_list(shape[1:], first, rest) for _ in range(shape[0])]


def worst_case_target(
    tokenizer, quant_bins: int, num_keypoints: int, image_size: int, answer: str, description: str
) -> str:
    """The valid target with the most tokens for these semantic strings (module docstring),
    written by ``format_target`` itself: 3D bins are passed as their bin centres
    (``dequantize_3d``), so it writes exactly the chosen bins."""
    import numpy as np

    px, bins = range(0, image_size + 1), range(0, quant_bins)
    w2 = (_widest(tokenizer, px, ""), _widest(tokenizer, px, " "))
    w3 = (_widest(tokenizer, bins, ""), _widest(tokenizer, bins, " "))
    M = num_keypoints
    sample = {
        "answer": answer,
        "description": description,
        "bbox2d": np.array(_worst_list((4,), *w2), dtype=float),
        "bbox3d": dequantize_3d(_worst_list((6,), *w3), quant_bins),
        "kpts2d": np.array(_worst_list((M, 2), *w2), dtype=float),
        "kpts3d": dequantize_3d(_worst_list((M, 3), *w3), quant_bins),
    }
    return format_target(sample, quant_bins, M)


def longest_target(
    tokenizer,
    quant_bins: int,
    num_keypoints: int,
    image_size: int,
    answers: Iterable[str],
    descriptions: Iterable[str],
    targets: Iterable[str] = (),
) -> TargetLength:
    """``TargetLength`` from the semantic strings (and own targets) of a dataset."""
    answer = max(answers, key=lambda t: (_count(tokenizer, t), len(t)), default="")
    description = max(descriptions, key=lambda t: (_count(tokenizer, t), len(t)), default="")
    text = worst_case_target(tokenizer, quant_bins, num_keypoints, image_size, answer, description)
    best = (_count(tokenizer, text), text)
    for t in targets:
        best = max(best, (_count(tokenizer, t), t))
    return TargetLength(best[0], best[1], quant_bins, num_keypoints, image_size)


def dataset_target_length(data_dir: str | os.PathLike, tokenizer) -> TargetLength:
    """``longest_target`` of a built dataset (Q, M, image size from its manifest; its train
    and test targets counted too)."""
    from pointvl.data.dataset import read_manifest, read_split

    manifest = read_manifest(data_dir)
    answers, descriptions, targets = set(), set(), set()
    for split in ("train_all", "test"):
        table = read_split(data_dir, split, ["answers", "description", "targets"])
        for row in table.to_pylist():
            answers.update(row["answers"])
            descriptions.add(row["description"])
            targets.update(row["targets"])
    return longest_target(
        tokenizer, int(manifest["quant_bins"]), int(manifest["num_keypoints"]),
        int(manifest["image_size"]), sorted(answers), sorted(descriptions), sorted(targets),
    )  # fmt: skip


def resolve_budget(field: str, value: int | str, length: TargetLength) -> int:
    """``auto`` -> ``length.budget``; an integer is returned if it completes every valid
    target, else ``ConfigError`` naming ``field``."""
    if value == AUTO:
        return length.budget
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{field}={value!r}: expected an integer >= 1 or {AUTO!r}")
    if value < length.needed:
        raise ConfigError(
            f"{field}={value}: too small, the longest valid target takes {length.tokens} tokens "
            f"(Q={length.quant_bins}, M={length.num_keypoints}, {length.image_size} px, this "
            f"tokenizer) + end of turn; set it >= {length.needed} or {AUTO!r} "
            f"(= {length.budget})"
        )
    return value
