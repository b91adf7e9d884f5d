"""Per-token log-probs without the (B, T, V) logits of the whole batch.

    hidden (B, T, d) --chunks of rows--> logits (b, T, V) = hidden W^T / temperature
        -> suppressed ids at -inf -> log-softmax at the sampled ids (b, T)

Each chunk is wrapped in activation checkpointing, so its logits live only while that chunk
is computed (forward) or recomputed (backward): peak memory ~ chunk_tokens x V instead of
B x T x V (32 x 1,025 x 151,936 in bf16 is ~10 GB for the paper's batch). Equal to the
full-logits computation up to float rounding (tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.checkpoint import checkpoint
from trl.trainer.utils import entropy_from_logits, selective_log_softmax


def _chunk_logps(hidden, lm_head, ids, temperature: float, suppress: Sequence[int]):
    logits = lm_head(hidden).float() / temperature  # (b, T, V)
    if suppress:
        logits[..., list(suppress)] = -float("inf")
    return selective_log_softmax(logits, ids)  # (b, T)


@torch.no_grad()
def masked_entropy(logits: torch.Tensor, suppress: Sequence[int] = ()) -> torch.Tensor:
    """Entropy (nats) of softmax(logits) with the ``suppress`` ids at probability 0. They are
    set to the most negative finite float, not -inf: p log p is then 0, not 0 x -inf = NaN."""
    logits = logits.float()
    if suppress:
        logits = logits.clone()
        logits[..., list(suppress)] = torch.finfo(logits.dtype).min
    return entropy_from_logits(logits)  # (...,)


@torch.no_grad()
def _chunk_entropy(hidden, lm_head, temperature: float, suppress: Sequence[int]):
    return masked_entropy(lm_head(hidden).float() / temperature, suppress)  # (b, T)


def chunked_logps(
    hidden: torch.Tensor,
    lm_head: torch.nn.Module,
    ids: torch.Tensor,
    temperature: float = 1.0,
    suppress: Sequence[int] = (),
    chunk_tokens: int = 8192,
    compute_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(ids) (B, T) [and entropies (B, T)] from ``hidden`` (B, T, d) and the LM head
    module (called, so that DeepSpeed ZeRO-3 gathers its weight), ``chunk_tokens`` tokens of
    logits at a time."""
    B, T = ids.shape
    rows = max(1, chunk_tokens // max(1, T))
    logps, ents = [], []
    for s in range(0, B, rows):
        h, i = hidden[s : s + rows], ids[s : s + rows]
        sup = tuple(suppress)
        if torch.is_grad_enabled():
            lp = checkpoint(_chunk_logps, h, lm_head, i, temperature, sup, use_reentrant=False)
        else:
            lp = _chunk_logps(h, lm_head, i, temperature, sup)
        logps.append(lp)
        if compute_entropy:
            ents.append(_chunk_entropy(h.detach(), lm_head, temperature, sup))
    return torch.cat(logps), (torch.cat(ents) if compute_entropy else None)
