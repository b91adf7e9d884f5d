"""A small, fully specified GRCA example: one object, one camera, one group of completions.

Used by the ``credit_demo`` stage and by the span-routing and reward notebooks to show, on
real strings and a real tokenizer, what broadcast GRPO, GRCA and GRCA+RPC give each token.
``demo_group`` runs the group through the one RL step (``pointvl.step.score_and_route``):
the same parse, rewards, field ids and advantages as ``GRCATrainer``.
The completions are written, not sampled from a model (no model is needed to show the
credit assignment); each one exercises a case of Sec. 3.7::

    0  exact answer                      4  bbox3d written twice (duplicate -> no span, r=0)
    1  small noise on every field        5  kpts2d malformed (a keypoint lost a number)
    2  good 3D box, poor 2D box          6  2D box inconsistent with the 3D box (low RPC)
    3  prose + ``` fence, kpts3d spread  7  truncated mid-kpts2d (kpts3d missing)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pointvl.credit import ADVANTAGE_BUILDERS, CreditConfig
from pointvl.data.cameras import intrinsics, look_at
from pointvl.geometry import project_points, reprojected_footprint
from pointvl.schema import NUM_KEYPOINTS, format_target
from pointvl.spans import TokenLengths
from pointvl.step import RLStep, Scoring, score_and_route

CASES: tuple[str, ...] = (
    "exact",
    "noisy",
    "bad_bbox2d",
    "prose_fenced_spread_kpts3d",
    "duplicate_bbox3d",
    "malformed_kpts2d",
    "rpc_inconsistent",
    "truncated",
)


def demo_target(seed: int = 0, image_size: int = 224) -> dict:
    """A continuous ground truth with a camera in which the 2D box is the 3D box's footprint."""
    rng = np.random.default_rng(seed)
    lo = rng.uniform(-0.35, -0.15, 3)
    hi = rng.uniform(0.15, 0.35, 3)
    bbox3d = np.concatenate([lo, hi])  # (6,)
    kpts3d = rng.uniform(lo, hi, (NUM_KEYPOINTS, 3))  # (M, 3)
    K = intrinsics(image_size, image_size, fov_deg=40.0)
    R, t = look_at(np.array([0.9, 0.8, 1.6]))
    bbox2d, _ = reprojected_footprint(bbox3d, K, R, t)  # (4,)
    kpts2d, _ = project_points(kpts3d, K, R, t)  # (M, 2)
    return {
        "answer": "chair",
        "description": "a wooden chair with four legs and a slatted back",
        "bbox2d": bbox2d,
        "bbox3d": bbox3d,
        "kpts2d": kpts2d,
        "kpts3d": kpts3d,
        "K": K,
        "R": R,
        "t": t,
    }


def _jitter(sample: dict, rng: np.random.Generator, px: float, unit: float) -> dict:
    out = dict(sample)
    for name, scale in (("bbox2d", px), ("kpts2d", px), ("bbox3d", unit), ("kpts3d", unit)):
        out[name] = np.asarray(sample[name]) + rng.normal(0, scale, np.shape(sample[name]))
    return out


def demo_completions(target: dict, quant_bins: int, seed: int = 0) -> list[str]:
    """One completion per entry of ``CASES``, in that order (deterministic for a seed)."""
    rng = np.random.default_rng(seed)

    def fmt(sample: dict) -> str:
        return format_target(sample, quant_bins)

    exact = fmt(target)
    noisy = fmt(_jitter(target, rng, px=3.0, unit=0.02))
    bad2d = dict(_jitter(target, rng, px=1.0, unit=0.005))
    x1, y1, x2, y2 = target["bbox2d"]
    bad2d["bbox2d"] = np.array([x1 + 0.4 * (x2 - x1), y1, x2 + 20, y2 - 0.3 * (y2 - y1)])
    spread = dict(target)
    spread["kpts3d"] = np.clip(target["kpts3d"] * 1.8, -0.5, 0.5)
    fenced = "Sure. Here is the structured answer:\n```json\n" + fmt(spread) + "\n```"
    duplicate = exact[:-1] + ', "bbox3d": [10, 10, 10, 20, 20, 20]}'
    malformed = _drop_number(exact, "kpts2d")
    incons = dict(target)
    incons["bbox2d"] = np.array([x1 - 30.0, y1 + 25.0, x2 - 45.0, y2 + 10.0])
    truncated = exact[: exact.index('"kpts2d"') + 24]  # cut inside the keypoint list
    return [
        exact,
        noisy,
        fmt(bad2d),
        fenced,
        duplicate,
        malformed,
        fmt(incons),
        truncated,
    ]


def _drop_number(text: str, field: str) -> str:
    """Remove the second number of the field's first keypoint: ``[[u, v], ...`` -> ``[[u, ], ...``."""
    start = text.index(f'"{field}": [[') + len(f'"{field}": [[')
    comma = text.index(",", start)
    close = text.index("]", comma)
    return text[: comma + 1] + " " + text[close:]


def random_geometry(
    rng: np.random.Generator,
    num_keypoints: int = NUM_KEYPOINTS,
    px_origin: tuple[float, float] = (0.0, 40.0),
    px_size: tuple[float, float] = (20.0, 60.0),
) -> dict:
    """Random but well-formed continuous geometry: boxes and keypoints inside them.

    bbox3d inside the unit cube (object frame), bbox2d with its corner drawn in ``px_origin``
    and its size in ``px_size`` (pixels); keypoints uniform inside their box. Draw order is
    fixed (3D box, 2D box, 2D keypoints, 3D keypoints), so a seed gives the same sample.
    """
    lo3, hi3 = rng.uniform(-0.45, -0.05, 3), rng.uniform(0.05, 0.45, 3)
    lo2 = rng.uniform(*px_origin, 2)
    hi2 = lo2 + rng.uniform(*px_size, 2)
    return {
        "bbox2d": np.r_[lo2, hi2],
        "bbox3d": np.r_[lo3, hi3],
        "kpts2d": rng.uniform(lo2, hi2, (num_keypoints, 2)),
        "kpts3d": rng.uniform(lo3, hi3, (num_keypoints, 3)),
    }


# ----------------------------------------------------------------------------- the group, routed


def demo_tokenizer(quant_bins: int = 100, seed: int = 0, corpus: int = 200, vocab_size: int = 400):
    """A byte-level BPE trained on ``corpus`` random target JSONs (seeded): it splits numbers
    irregularly, as the ``tiny`` profile's tokenizer does (the ``credit_demo`` stage's)."""
    from pointvl.model.tokenizer import train_bpe_tokenizer

    texts = [format_target(demo_target(seed + 1 + i), quant_bins) for i in range(corpus)]
    texts += ["Sure. Here is the structured answer:", "```json", "```"]
    return train_bpe_tokenizer(texts, vocab_size=vocab_size)


@dataclasses.dataclass
class DemoGroup:
    """One group of G completions through the RL step (rows = ``cases``)."""

    target: dict
    """Continuous ground truth with camera K, R, t (``demo_target``)."""
    cases: list[str]
    step: RLStep
    """``score_and_route``'s output: parsed fields, scores, field ids, mask, advantages."""
    tokenizer: Any
    offsets: list[np.ndarray]
    """Per row, (T_i, 2) character offsets the step used (EOS: the empty range at the end)."""
    tokens: list[list[str]]
    """Per row, each token's text (``<eos>`` for the end-of-turn token)."""
    credit: CreditConfig
    quant_bins: int

    @property
    def completions(self) -> list[str]:
        return self.step.scored.texts

    @property
    def parsed(self) -> list:
        return self.step.scored.parsed

    @property
    def scores(self) -> dict:
        """``rewards.score_batch``: per_field_rewards (B, F), rpc, seq, format, ... (B,)."""
        return self.step.scored.scores

    @property
    def token_ids(self) -> list[list[int]]:
        return self.step.completion_ids

    @property
    def field_ids(self) -> torch.Tensor:
        """(B, T) long: 0 = background, k + 1 = ``GEOMETRIC_FIELDS[k]``, padding 0."""
        return self.step.field_ids

    @property
    def mask(self) -> torch.Tensor:
        """(B, T) bool: True on real tokens."""
        return self.step.mask

    @property
    def num_generations(self) -> int:
        return len(self.completions)

    def advantages(self, variant: str, lam: float | None = None, background: str | None = None):
        """(B, T) numpy advantages of ``variant`` (``credit.ADVANTAGE_BUILDERS``), NaN on
        padding; ``lam`` / ``background`` default to the group's credit config."""
        cfg = dataclasses.replace(
            self.credit,
            lam=self.credit.lam if lam is None else lam,
            background=self.credit.background if background is None else background,
        )
        adv = ADVANTAGE_BUILDERS[variant](self.step.credit, cfg)  # (B, T)
        return adv.masked_fill(~self.mask, float("nan")).numpy()


def demo_group(
    seed: int = 0,
    quant_bins: int = 100,
    num_keypoints: int | None = NUM_KEYPOINTS,
    tokenizer_corpus: int = 200,
    vocab_size: int = 400,
    completions: Sequence[str] | None = None,
    credit: CreditConfig | None = None,
    variants: Sequence[str] = ("grpo", "grca", "grca_rpc"),
) -> DemoGroup:
    """The demo group (or your own ``completions``, one group) through the RL step: BPE ids
    + end-of-turn -> ``score_and_route`` (parse, Eqs. 8 and 13, field ids, advantages)."""
    target = demo_target(seed)
    if completions is None:
        completions, cases = demo_completions(target, quant_bins, seed=seed), list(CASES)
    else:
        completions = list(completions)
        cases = [f"completion {i}" for i in range(len(completions))]
    tok = demo_tokenizer(quant_bins, seed, tokenizer_corpus, vocab_size)
    # the end-of-turn token closes every completion; it has no characters: background
    ids = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in completions]
    credit = credit or CreditConfig()
    lengths, G = TokenLengths(tok), len(completions)
    step = score_and_route(completions, ids, [target] * G, lengths, G, tuple(variants), credit,
                           Scoring(quant_bins, num_keypoints))  # fmt: skip
    offsets = [lengths.offsets(i, c) for i, c in zip(ids, completions)]
    eos = tok.eos_token_id
    tokens = [["<eos>" if t == eos else c[s:e] for t, (s, e) in zip(row, off)]
              for row, off, c in zip(ids, offsets, completions)]  # fmt: skip
    return DemoGroup(target, cases, step, tok, offsets, tokens, credit, quant_bins)
