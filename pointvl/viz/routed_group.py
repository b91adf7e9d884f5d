"""Routed advantages of one group of real completions (the rl step on a model, Figure 2's idea).

policy + one test sample
  -> G completions from the RL rollout sampler (``pointvl.eval.generate.decode``:
     softmax(logits / T), placeholders suppressed, seeded)
  -> ``pointvl.step.score_and_route``: parse, score, field ids, each variant's advantages
     (exactly what ``GRCATrainer`` computes for such a group, tested there)
  -> heatmap (PNG + offline HTML, ``pointvl.viz.advantages``) and a JSON of everything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from pointvl.credit import CreditConfig
from pointvl.schema import GEOMETRIC_FIELDS
from pointvl.spans import TokenLengths
from pointvl.step import RLStep, Scoring, compare_to_broadcast, diagnostics, score_and_route

VARIANTS = {
    "grpo": "GRPO (broadcast Â_seq)",
    "grca": "GRCA (routed, ours)",
    "grca_rpc": "GRCA + RPC (ours)",
}


@torch.no_grad()
def sample_group(
    model, processor, sample: Mapping, G: int, temperature: float, max_new_tokens: int, seed: int
) -> list[list[int]]:
    """G completions (ids up to and including end-of-turn) of one sample, as RL rollouts."""
    from pointvl.eval.generate import Sampling, decode, suppressed_ids, to_model_device

    sampling = Sampling(
        max_new_tokens=max_new_tokens,
        eos_token_ids=tuple(processor.eos_token_ids),
        pad_token_id=processor.token_ids["pad_token_id"],
        do_sample=True,
        temperature=temperature,
        suppress_tokens=suppressed_ids(processor),
    )
    batch = to_model_device(model, processor.batch([dict(sample)], with_target=False))
    torch.manual_seed(seed)
    return decode(model, batch, sampling, num_generations=G).ids


def route_group(
    ids: Sequence[Sequence[int]], tokenizer, target: Mapping, credit: CreditConfig, scoring: Scoring
) -> RLStep:
    """The rl step of one group (rows = the G completions)."""
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    G = len(ids)
    return score_and_route(
        texts, ids, [target] * G, TokenLengths(tokenizer), G, tuple(VARIANTS), credit, scoring
    )


def group_metrics(step: RLStep) -> dict[str, float]:
    """Rewards, parse failures, span sizes and GRCA vs GRPO token changes / sign flips."""
    out: dict[str, float] = {
        "group/size": len(step.completion_ids),
        "group/tokens": int(step.mask.sum()),
    }
    for k, name in enumerate(GEOMETRIC_FIELDS):
        out[f"tokens/{name}"] = int(((step.field_ids == k + 1) & step.mask).sum())
    out.update(diagnostics(step))
    out.update(compare_to_broadcast(step.advantages, step.mask))
    return out


def token_strings(tokenizer, ids: Sequence[Sequence[int]]) -> list[list[str]]:
    """Each token as the text it stands for (special tokens by name)."""
    return [
        [tokenizer.convert_tokens_to_string([t]) for t in tokenizer.convert_ids_to_tokens(row)]
        for row in ids
    ]


def row_label(step: RLStep, i: int) -> str:
    s = step.scored.scores
    r = s["per_field_rewards"][i]  # (F,)
    fail = "" if step.scored.parsed[i].ok else "  PARSE FAIL"
    return (f"#{i} seq {s['seq'][i]:.2f} | 2d {r[0]:.2f} 3d {r[1]:.2f} "
            f"k2 {r[2]:.2f} k3 {r[3]:.2f} | rpc {s['rpc'][i]:.2f}{fail}")  # fmt: skip


def group_json(step: RLStep, tokens: list[list[str]], sample: Mapping, meta: dict) -> dict:
    """Everything behind the heatmap: completions, rewards per field, tokens, advantages."""
    s = step.scored.scores
    rewards = {
        name: s["per_field_rewards"][:, k].tolist() for k, name in enumerate(GEOMETRIC_FIELDS)
    }
    rewards.update({k: np.asarray(v).tolist() for k, v in s.items() if k != "per_field_rewards"})
    lens = [len(t) for t in tokens]
    nan = ~step.mask
    return {
        **meta,
        "uid": sample["uid"],
        "question": sample["question"],
        "completions": step.scored.texts,
        "errors": [p.errors for p in step.scored.parsed],
        "rewards": rewards,
        "tokens": tokens,
        "field_ids": [row[:n].tolist() for row, n in zip(step.field_ids, lens)],
        "advantages": {
            v: [row[:n].tolist() for row, n in zip(a.masked_fill(nan, float("nan")), lens)]
            for v, a in step.advantages.items()
        },
        "metrics": group_metrics(step),
    }


def heatmap_panels(step: RLStep) -> dict[str, np.ndarray]:
    """Variant label -> (G, T) advantages, NaN on padding (the heatmap's input)."""
    return {
        VARIANTS[v]: a.masked_fill(~step.mask, float("nan")).numpy()
        for v, a in step.advantages.items()
    }
