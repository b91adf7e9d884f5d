"""The routed clipped surrogate, Eqs. (15)-(16).

The loss is TRL 1.16's ``GRPOTrainer._compute_loss`` (token-level importance sampling, no
vLLM correction, no entropy mask / bonus, no off-policy mask) with one change that TRL already
allows: the advantages may be per token, (B, T), instead of per sequence, (B,). With (B,)
advantages, i.e. Â_{i,seq} for every token, this is vanilla GRPO exactly.

Gradient-accumulation scaling (TRL divides by ``current_gradient_accumulation_steps``) is the
trainer's job and is not applied here.
"""

from __future__ import annotations

import math

import torch

from pointvl.schema import GEOMETRIC_FIELDS

LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo")


def token_ratio(per_token_logps: torch.Tensor, old_per_token_logps: torch.Tensor) -> torch.Tensor:
    """Eq. (15): ρ_{i,t} = π_θ(y_{i,t} | x, y_{i,<t}) / π_θold(y_{i,t} | x, y_{i,<t}).

    Computed from log-probabilities, (B, T) -> (B, T).
    """
    # ρ = exp(log π_θ − log π_θold)
    return torch.exp(per_token_logps - old_per_token_logps)  # (B, T)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of ``x`` over positions where ``mask`` is set; NaN when there are none."""
    n = mask.sum()
    if n == 0:
        return math.nan
    return float((x * mask).sum() / n)


def routed_surrogate_loss(
    per_token_logps: torch.Tensor,
    old_per_token_logps: torch.Tensor,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
    loss_type: str = "grpo",
    beta: float = 0.0,
    ref_per_token_logps: torch.Tensor | None = None,
    field_ids: torch.Tensor | None = None,
    max_completion_length: int | None = None,
    num_items_in_batch: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. (16): loss = −J, J = (1/G) Σ_i (1/|y_i|) Σ_t min(ρ_{i,t} A_{i,t}, clip(ρ_{i,t}, 1−ε, 1+ε) A_{i,t}).

    Shapes: ``per_token_logps``, ``old_per_token_logps``, ``completion_mask`` (B, T);
    ``advantages`` (B, T) routed (GRCA) or (B,) broadcast (GRPO, unsqueezed to (B, 1)).
    The clip range is [1 − ``epsilon_low``, 1 + ``epsilon_high``] (``epsilon_high`` defaults
    to ``epsilon_low``, the symmetric clip of the paper).

    ``loss_type`` aggregates the masked per-token loss as TRL 1.16 does:

    - ``"grpo"`` (the paper's Eq. 16): mean over each sequence's tokens, then over sequences.
    - ``"bnpo"``: sum over all tokens / number of tokens.
    - ``"dapo"``: sum over all tokens / ``num_items_in_batch`` (TRL: the token count of the
      whole generation batch; defaults to the tokens of this batch, which is the same thing
      with one process, no accumulation and ``steps_per_generation = 1``).
    - ``"dr_grpo"``: sum / (B · ``max_completion_length``) (defaults to T when None).

    With ``beta > 0`` the per-token k3 KL estimator to the reference policy is added,
    β · (exp(ref − logp) − (ref − logp) − 1), and ``ref_per_token_logps`` is required.

    Returns ``(loss, diagnostics)``; diagnostics are python floats: ``loss/clipfrac`` (TRL's
    ``clip_ratio/region_mean``: tokens whose ratio left the clip range on the side where the
    clip binds), ``loss/clipfrac/<field>`` and ``loss/clipfrac/background`` when ``field_ids``
    (B, T) is given (NaN when no token of that kind is in the batch), ``kl`` when β > 0.
    """
    _check_inputs(per_token_logps, old_per_token_logps, advantages, completion_mask,
                  loss_type, beta, ref_per_token_logps, field_ids)  # fmt: skip
    B, T = per_token_logps.shape
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)  # (B, 1): broadcast GRPO
    mask = completion_mask.to(per_token_logps.dtype)  # (B, T)

    # ρ_{i,t}
    coef_1 = token_ratio(per_token_logps, old_per_token_logps)  # (B, T)
    # clip(ρ, 1 − ε_low, 1 + ε_high)
    coef_2 = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)  # (B, T)
    # −min(ρ A, clip(ρ) A)
    per_token_loss = -torch.min(coef_1 * advantages, coef_2 * advantages)  # (B, T)
    per_token_kl = None
    if beta != 0.0:
        delta = ref_per_token_logps - per_token_logps  # (B, T)
        # k3 = exp(ref − logp) − (ref − logp) − 1
        per_token_kl = torch.exp(delta) - delta - 1  # (B, T)
        per_token_loss = per_token_loss + beta * per_token_kl  # (B, T)

    loss = _aggregate(per_token_loss, mask, loss_type, num_items_in_batch, max_completion_length)
    with torch.no_grad():
        diagnostics = _clip_diagnostics(
            coef_1, advantages.expand(B, T), mask, epsilon_low, epsilon_high, field_ids
        )
        if per_token_kl is not None:
            diagnostics["kl"] = _masked_mean(per_token_kl, mask)
    return loss, diagnostics


def _check_inputs(per_token_logps, old_per_token_logps, advantages, completion_mask,
                  loss_type, beta, ref_per_token_logps, field_ids) -> None:  # fmt: skip
    """The shapes and options of ``routed_surrogate_loss`` (its docstring), or a ValueError
    naming the argument and the expected shape."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; accepted: {LOSS_TYPES}")
    if per_token_logps.dim() != 2:
        raise ValueError(f"per_token_logps must be (B, T), got {tuple(per_token_logps.shape)}")
    B, T = per_token_logps.shape
    for name, t in (
        ("old_per_token_logps", old_per_token_logps),
        ("completion_mask", completion_mask),
    ):
        if tuple(t.shape) != (B, T):
            raise ValueError(f"{name} must be (B, T)=({B}, {T}), got {tuple(t.shape)}")
    if advantages.shape not in ((B,), (B, T)):
        raise ValueError(
            f"advantages must be (B,)=({B},) or (B, T)=({B}, {T}), got {tuple(advantages.shape)}"
        )
    if field_ids is not None and tuple(field_ids.shape) != (B, T):
        raise ValueError(f"field_ids must be (B, T)=({B}, {T}), got {tuple(field_ids.shape)}")
    if beta != 0.0:
        if ref_per_token_logps is None:
            raise ValueError("beta != 0 needs ref_per_token_logps (B, T)")
        if tuple(ref_per_token_logps.shape) != (B, T):
            raise ValueError(
                f"ref_per_token_logps must be (B, T)=({B}, {T}), got {tuple(ref_per_token_logps.shape)}"
            )


def _aggregate(per_token_loss, mask, loss_type, num_items_in_batch, max_completion_length):
    """The masked per-token loss (B, T) -> a scalar, as ``loss_type`` says (TRL 1.16)."""
    B, T = per_token_loss.shape
    if loss_type == "grpo":
        # (1/B) Σ_i (1/|y_i|) Σ_t loss_{i,t}
        return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        # Σ_{i,t} loss_{i,t} / Σ_i |y_i|
        return (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    if loss_type == "dapo":
        n_items = mask.sum() if num_items_in_batch is None else torch.as_tensor(num_items_in_batch)
        # Σ_{i,t} loss_{i,t} / (tokens in the generation batch)
        return (per_token_loss * mask).sum() / n_items.to(mask.dtype).clamp(min=1.0)
    L = T if max_completion_length is None else int(max_completion_length)  # dr_grpo
    # Σ_{i,t} loss_{i,t} / (B · L_max)
    return (per_token_loss * mask).sum() / (B * L)


def _clip_diagnostics(coef_1, adv_full, mask, epsilon_low, epsilon_high, field_ids) -> dict:
    """Share of tokens clipped on the binding side (TRL's ``clip_ratio/region_mean``),
    overall and per field / background when ``field_ids`` (B, T) is given."""
    is_low = (coef_1 < 1 - epsilon_low) & (adv_full < 0)  # (B, T)
    is_high = (coef_1 > 1 + epsilon_high) & (adv_full > 0)  # (B, T)
    clipped = (is_low | is_high).to(mask.dtype)  # (B, T)
    out = {"loss/clipfrac": _masked_mean(clipped, mask)}
    if field_ids is not None:
        out["loss/clipfrac/background"] = _masked_mean(clipped, mask * (field_ids == 0))
        for k, name in enumerate(GEOMETRIC_FIELDS):
            out[f"loss/clipfrac/{name}"] = _masked_mean(clipped, mask * (field_ids == k + 1))
    return out
