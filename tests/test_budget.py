"""Generation lengths derived from the schema, Q, M and the tokenizer (pointvl/budget.py)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_sample
from pointvl.budget import (
    dataset_target_length,
    longest_target,
    resolve_budget,
    worst_case_target,
)
from pointvl.config import ConfigError
from pointvl.data.dataset import read_split
from pointvl.schema import format_target, parse_output


def _random_valid_target(rng, q: int, m: int, px: int, answer: str, description: str) -> str:
    """A target with every number drawn uniformly in its valid range (pixels in [0, px])."""
    sample = {
        "answer": answer,
        "description": description,
        "bbox2d": rng.integers(0, px + 1, 4).astype(float),
        "bbox3d": rng.uniform(-0.5, 0.5, 6),
        "kpts2d": rng.integers(0, px + 1, (m, 2)).astype(float),
        "kpts3d": rng.uniform(-0.5, 0.5, (m, 3)),
    }
    return format_target(sample, q, m)


def test_worst_case_target_is_valid_and_bounds_random_targets(bpe_tokenizer):
    """No valid target (numbers in range, the same semantic strings) is longer."""
    q, m, px = 100, 16, 112
    answer, description = "chair", "a small object with four legs and a flat top"
    worst = worst_case_target(bpe_tokenizer, q, m, px, answer, description)
    parsed = parse_output(worst, num_keypoints=m)
    assert parsed.ok, parsed.errors
    n = len(bpe_tokenizer(worst, add_special_tokens=False)["input_ids"])
    rng = np.random.default_rng(0)
    lengths = [len(bpe_tokenizer(_random_valid_target(rng, q, m, px, answer, description),
                                 add_special_tokens=False)["input_ids"]) for _ in range(300)]  # fmt: skip
    assert max(lengths) <= n
    assert n - max(lengths) < 0.5 * n  # a bound, not a wild over-estimate


def test_qwen_layout_tokenizer_paper_targets_exceed_478_tokens():
    """Qwen's pre-tokenizer splits every digit: with Q = 1000, 448 px and M = 16 a target is
    ~500 tokens (issue 12: >= 478), far above what the 400 of tiny would allow."""
    from pointvl.rehearsal import backbone_tokenizer

    tok = backbone_tokenizer(1000, 448)
    ids = tok(" 123", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids)[-3:] == ["1", "2", "3"]
    sample = make_sample(3)
    length = longest_target(tok, 1000, 16, 448, [sample["answer"]], [sample["description"]])
    assert length.tokens >= 478 and length.budget > length.needed > 478
    typical = format_target(sample, 1000)
    assert len(tok(typical, add_special_tokens=False)["input_ids"]) <= length.tokens


def test_dataset_length_covers_every_stored_target(smoke_data, bpe_tokenizer):
    length = dataset_target_length(smoke_data, bpe_tokenizer)
    for split in ("train_all", "test"):
        for row in read_split(smoke_data, split, ["targets"]).to_pylist():
            for t in row["targets"]:
                assert len(bpe_tokenizer(t, add_special_tokens=False)["input_ids"]) <= length.tokens
    assert length.quant_bins == 100 and length.image_size == 48


def test_resolve_budget_names_the_field(bpe_tokenizer):
    length = longest_target(bpe_tokenizer, 100, 16, 112, ["mug"], ["a mug"])
    assert resolve_budget("rl.max_completion_length", "auto", length) == length.budget
    assert resolve_budget("x", length.needed, length) == length.needed
    with pytest.raises(ConfigError, match=rf"evaluate.max_new_tokens=12: too small.*"
                       rf"{length.tokens} tokens.*>= {length.needed} or 'auto'"):  # fmt: skip
        resolve_budget("evaluate.max_new_tokens", 12, length)
    with pytest.raises(ConfigError, match="expected an integer >= 1 or 'auto'"):
        resolve_budget("figures.max_new_tokens", "many", length)


def test_shared_budgets_are_derived_for_new_profiles():
    from pointvl.config import load_params

    for profile in ("smoke", "paper", "paper_sim"):
        p = load_params(profile=profile)
        assert p["shared"]["max_new_tokens"] == "auto", profile
        assert p["rl"]["max_completion_length"] == p["evaluate"]["max_new_tokens"] == "auto"
