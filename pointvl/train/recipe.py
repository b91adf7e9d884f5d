"""Choosing the RL recipe on the validation split, before any arm is compared.

Two measurements, both on val prompts (carved from train) and the SFT policy:

1. ``temperature_scan``: for each temperature T, sample G completions of V validation
   prompts and split the within-group variance of r_seq into the part explained by parse
   success (a completion that fails to parse loses every field at once) and the rest:

       share_parse = Σ_g Σ_c n_gc (r̄_gc − r̄_g)² / Σ_g Σ_i (r_gi − r̄_g)²,   c ∈ {parsed, failed}

   A high share means the group's advantages mostly say "parse or not", the same signal
   for every field: routing then has little to route. Low T lowers it but also shrinks the
   within-group spread (groups with zero spread give no gradient); both are reported.
2. ``short_runs``: a few short RL runs per candidate (lr, loss normaliser) for the arms, each
   scored by the slope of its validation field reward; the recipe is the candidate with the
   best mean slope whose rollout parse failures stay below 20%.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import torch


def parse_variance_share(seq: np.ndarray, parse_ok: np.ndarray, num_generations: int) -> dict:
    """Within-group variance of ``seq`` (B,) and the share explained by ``parse_ok`` (B,)."""
    r = np.asarray(seq, float).reshape(-1, num_generations)  # (B/G, G)
    ok = np.asarray(parse_ok, bool).reshape(-1, num_generations)  # (B/G, G)
    mean_g = r.mean(1, keepdims=True)  # (B/G, 1)
    total = float(((r - mean_g) ** 2).sum())
    between = 0.0
    for rg, og, mg in zip(r, ok, mean_g[:, 0]):
        for c in (True, False):
            sel = og == c
            if sel.any():
                between += sel.sum() * (rg[sel].mean() - mg) ** 2
    spread = r.max(1) - r.min(1)
    return {
        "within_group_var": total / r.size,
        "share_parse": between / total if total > 0 else float("nan"),
        "zero_spread_frac": float(np.mean(spread <= 1e-12)),
    }


@torch.no_grad()
def temperature_scan(
    model,
    processor,
    samples: Sequence[Mapping],
    targets: Sequence[Mapping],
    temperatures: Sequence[float],
    num_generations: int,
    max_new_tokens: int,
    scoring,
    seed: int = 0,
    prompts_per_batch: int = 8,
) -> dict:
    """{T: {parse_fail, seq_mean, within_group_var, share_parse, zero_spread_frac}}."""
    from pointvl.eval.generate import Sampling, decode, suppressed_ids
    from pointvl.step import score

    model.eval()
    out = {}
    for T in temperatures:
        sampling = Sampling(
            max_new_tokens=max_new_tokens,
            eos_token_ids=tuple(processor.eos_token_ids),
            pad_token_id=processor.token_ids["pad_token_id"],
            do_sample=True,
            temperature=float(T),
            suppress_tokens=suppressed_ids(processor),
        )
        torch.manual_seed(seed)
        ids = []
        for i in range(0, len(samples), prompts_per_batch):
            batch = processor.batch(list(samples[i : i + prompts_per_batch]), with_target=False)
            ids += decode(model, batch, sampling, num_generations).ids
        texts = processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
        scored = score(texts, [t for t in targets for _ in range(num_generations)], scoring)
        ok = np.array([p.ok for p in scored.parsed])
        seq = scored.scores["seq"]
        out[f"{T:g}"] = {
            "temperature": float(T),
            "parse_fail": float(1 - ok.mean()),
            "seq_mean": float(seq.mean()),
            "field_reward_mean": float(scored.scores["per_field_rewards"].mean()),
            "mean_tokens": float(np.mean([len(x) for x in ids])),
            **parse_variance_share(seq, ok, num_generations),
        }
    return out


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One recipe candidate of the short runs."""

    learning_rate: float
    loss_type: str

    @property
    def name(self) -> str:
        return f"lr{self.learning_rate:g}_{self.loss_type}"


def choose(short: Mapping[str, Mapping[str, dict]], max_parse_fail: float = 0.2) -> dict:
    """The candidate with the best mean validation slope over arms among those whose
    rollout parse failures stay below ``max_parse_fail`` in every arm; the table behind it."""
    rows = {}
    for cand, arms in short.items():
        slopes = [a["val_slope_per_100"] for a in arms.values()]
        worst = max(a["rollout_parse_fail_max"] for a in arms.values())
        rows[cand] = {
            "mean_val_slope_per_100": float(np.mean(slopes)),
            "min_val_slope_per_100": float(np.min(slopes)),
            "rollout_parse_fail_max": float(worst),
            "eligible": bool(worst < max_parse_fail),
        }
    eligible = {c: r for c, r in rows.items() if r["eligible"]} or rows
    best = max(eligible, key=lambda c: eligible[c]["mean_val_slope_per_100"])
    return {"chosen": best, "candidates": rows}
