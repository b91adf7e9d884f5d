"""The RL step of our JSON task in one place: completions -> advantages (+ diagnostics).

    texts, completion ids, targets
      -> schema.parse_output                           values and character spans of 6 fields
      -> rewards.score_batch                           r_k (Eq. 8), r_rpc (Eq. 13), r_seq, ...
      -> spans (token offsets, straddling rule)        field ids (B, T)          (Eqs. 6-7)
      -> credit.ADVANTAGE_BUILDERS[variant]            advantages (B, T)         (Eqs. 9-16)

``score_and_route`` is what ``GRCATrainer`` computes for a generation batch (tested: the
trainer's advantages equal it on the same batch), and what the figures, the credit demo and
the notebooks call to show advantages. ``diagnostics`` is the one place the namespaced
metrics (``reward/*``, ``adv/*_zero_std_frac``, ``spans/*``) are computed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from pointvl.credit import ADVANTAGE_BUILDERS, CreditConfig, CreditInputs, credit_diagnostics
from pointvl.rewards import score_batch
from pointvl.schema import GEOMETRIC_FIELDS, NUM_KEYPOINTS, ParsedOutput, parse_output
from pointvl.spans import TokenLengths, batch_field_token_ids

SCORE_COLUMNS = ("seq", *GEOMETRIC_FIELDS, "rpc", "format", "answer", "description")
"""Columns of ``scores_table``: r_seq, the F field rewards, r_rpc and the other rewards."""


@dataclasses.dataclass(frozen=True)
class Scoring:
    """How completions are parsed and scored (sections ``schema`` and ``rl`` of params)."""

    quant_bins: int = 100
    """Q, bins of the 3D coordinates."""
    num_keypoints: int | None = NUM_KEYPOINTS
    """M, keypoints a field must hold (None: any)."""
    format_weight: float = 0.1
    """Weight of the format reward in r_seq."""
    keypoint_reward: str = "kpa"
    """``kpa`` (the paper's containment) or ``matched`` (collapse-proof, ours)."""


@dataclasses.dataclass
class Scored:
    """Parsed and scored completions (rows of one batch)."""

    texts: list[str]
    parsed: list[ParsedOutput]
    scores: dict[str, np.ndarray]
    """``score_batch``: per_field_rewards (B, F), seq / rpc / format / answer / description (B,)."""

    def table(self) -> np.ndarray:
        """(B, len(SCORE_COLUMNS)) float64, columns in ``SCORE_COLUMNS`` order."""
        s = self.scores
        cols = [s["seq"], s["per_field_rewards"], s["rpc"], s["format"]]
        return np.column_stack([*cols, s["answer"], s["description"]])


def score(texts: Sequence[str], targets: Sequence[Mapping[str, Any]], cfg: Scoring) -> Scored:
    """Parse and score every completion once (Eqs. 8, 10b, 13)."""
    parsed = [parse_output(t, cfg.num_keypoints) for t in texts]
    scores = score_batch(
        parsed, targets, cfg.quant_bins, cfg.format_weight, keypoint_reward=cfg.keypoint_reward
    )
    return Scored(list(texts), parsed, scores)


def field_token_ids(
    scored: Scored,
    completion_ids: Sequence[Sequence[int]],
    token_lengths: TokenLengths,
    num_tokens: int | None = None,
) -> torch.Tensor:
    """Eqs. (6-7): (B, T) ids, 0 = background, k + 1 = ``GEOMETRIC_FIELDS[k]``, 0-padded.

    A row with no geometric span is all background: its offsets are not computed (on
    unparsable text with broken UTF-8 they would take the O(T^2) cumulative-decode path).
    """
    spans = [p.char_spans for p in scored.parsed]
    empty = np.zeros((0, 2), np.int64)
    offsets = [
        token_lengths.offsets(ids, text)
        if any(sp.get(f) is not None for f in GEOMETRIC_FIELDS)
        else empty
        for ids, text, sp in zip(completion_ids, scored.texts, spans, strict=True)
    ]
    T = num_tokens if num_tokens is not None else max([1, *(len(r) for r in completion_ids)])
    return batch_field_token_ids(spans, offsets, T)  # (B, T)


def credit_inputs(scored: Scored, field_ids: torch.Tensor, num_generations: int) -> CreditInputs:
    """What the advantage builders read, from the scores and the field ids."""
    s = scored.scores
    return CreditInputs(
        per_field_rewards=torch.as_tensor(s["per_field_rewards"]),
        seq_rewards=torch.as_tensor(s["seq"]),
        rpc_rewards=torch.as_tensor(s["rpc"]),
        field_ids=field_ids,
        num_generations=num_generations,
        format_rewards=torch.as_tensor(s["format"]),
    )


@dataclasses.dataclass
class RLStep:
    """One scored, routed batch (rows group-major)."""

    scored: Scored
    completion_ids: list[list[int]]
    field_ids: torch.Tensor
    """(B, T) long."""
    mask: torch.Tensor
    """(B, T) bool, True on completion tokens."""
    credit: CreditInputs
    advantages: dict[str, torch.Tensor]
    """variant -> (B, T) float64 advantages (padding positions hold the row's background)."""


def score_and_route(
    texts: Sequence[str],
    completion_ids: Sequence[Sequence[int]],
    targets: Sequence[Mapping[str, Any]],
    token_lengths: TokenLengths,
    num_generations: int,
    variants: Sequence[str] = ("grpo", "grca", "grca_rpc"),
    credit: CreditConfig | None = None,
    scoring: Scoring | None = None,
    num_tokens: int | None = None,
) -> RLStep:
    """The whole RL step of a batch of G-groups: scores, field ids and each variant's (B, T)
    advantages. ``texts`` are the decoded completions (special tokens skipped)."""
    credit = credit or CreditConfig()
    scored = score(texts, targets, scoring or Scoring())
    ids = [list(map(int, r)) for r in completion_ids]
    field_ids = field_token_ids(scored, ids, token_lengths, num_tokens)  # (B, T)
    T = field_ids.shape[1]
    mask = torch.arange(T)[None, :] < torch.tensor([len(r) for r in ids])[:, None]  # (B, T)
    batch = credit_inputs(scored, field_ids, num_generations)
    unknown = sorted(set(variants) - set(ADVANTAGE_BUILDERS))
    if unknown:
        raise ValueError(f"unknown variants {unknown}; accepted: {tuple(ADVANTAGE_BUILDERS)}")
    adv = {v: ADVANTAGE_BUILDERS[v](batch, credit) for v in variants}
    return RLStep(scored, ids, field_ids, mask, batch, adv)


def diagnostics(step_or_scored: RLStep | Scored, num_generations: int | None = None) -> dict:
    """The namespaced metrics of one batch (python floats): ``reward/<name>`` for every score
    column, ``spans/parse_fail_frac``, and with an ``RLStep`` also ``adv/<field>_zero_std_frac``,
    ``adv/seq_zero_std_frac``, ``adv/rpc_zero_std_frac`` and ``spans/<field>_coverage``."""
    step = step_or_scored if isinstance(step_or_scored, RLStep) else None
    scored = step.scored if step is not None else step_or_scored
    table = scored.table()
    out = {f"reward/{name}": float(table[:, j].mean()) for j, name in enumerate(SCORE_COLUMNS)}
    out["spans/parse_fail_frac"] = float(np.mean([not p.ok for p in scored.parsed]))
    if step is not None:
        out.update(credit_diagnostics(step.credit))
    return out


def compare_to_broadcast(advantages: Mapping[str, torch.Tensor], mask: torch.Tensor) -> dict:
    """For each routed variant: the fraction of completion tokens whose advantage differs from
    broadcast GRPO's, and the fraction whose sign flips."""
    grpo = advantages["grpo"]
    out = {}
    for v, adv in advantages.items():
        if v == "grpo":
            continue
        diff = (adv - grpo).abs()[mask]
        out[f"{v}/tokens_changed_vs_grpo_frac"] = float((diff > 1e-9).double().mean())
        flips = (torch.sign(adv) * torch.sign(grpo) < 0)[mask]
        out[f"{v}/sign_flips_vs_grpo_frac"] = float(flips.double().mean())
    return out
