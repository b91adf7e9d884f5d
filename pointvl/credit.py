"""Credit assignment: how one group of scored completions becomes per-token advantages.

Vanilla GRPO gives every token of completion i the same standardized sequence reward
Â_{i,seq}. GRCA (Eqs. 9-10) standardizes each geometric field's reward inside its group and
routes that advantage only to the tokens of that field's JSON value span; the remaining
(background) tokens get A_{i,bg} (Eq. 10b). GRCA+RPC (Eq. 14) mixes the standardized
reprojection-consistency reward into the background advantage.

Each variant is one small function (``grpo_advantages``, ``gdpo_advantages``,
``grca_advantages``, ``grca_bg0_advantages``, ``grca_rpc_advantages``) with the same signature
``(CreditInputs, CreditConfig) -> (B, T)``; ``ADVANTAGE_BUILDERS`` names them for the config.
GDPO (TRL's ``multi_objective_aggregation="normalize_then_sum"``) standardizes every reward
component in its group like GRCA but sums them and broadcasts the sum: the arm that isolates
what *routing* adds to per-field standardization (ours, not in the paper).

Layout: rows are ordered group-major, i.e. rows ``g*G .. g*G+G-1`` are the G completions of
prompt g (TRL's ``repeat_interleave`` order). Standardization must see whole groups, so call
these on the full generation batch (all processes), as TRL does before slicing.

Field ids in ``field_ids`` (B, T): 0 = background, k+1 = ``GEOMETRIC_FIELDS[k]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pointvl.config import check_unit_interval
from pointvl.schema import GEOMETRIC_FIELDS

BACKGROUND_MODES = ("seq", "zero")

# A group whose rewards spread (max - min) by at most this fraction of max(1, max|r|) counts as
# "all equal": its advantages are set to exactly 0 instead of rounding noise / (0 + eps).
ZERO_SPREAD_RTOL = 1e-12


# ----------------------------------------------------------------------------- helpers


def _as_float_tensor(x: Any, name: str) -> tuple[torch.Tensor, torch.dtype]:
    """Tensor view of ``x`` in float64 plus the dtype the result should be returned in."""
    t = torch.as_tensor(x)
    out_dtype = t.dtype if t.is_floating_point() else torch.get_default_dtype()
    t = t.to(torch.float64)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite; got non-finite values in shape {tuple(t.shape)}")
    return t, out_dtype


def _check_group(batch_size: int, num_generations: int) -> None:
    if not isinstance(num_generations, int) or num_generations < 1:
        raise ValueError(f"num_generations must be a positive int, got G={num_generations!r}")
    if batch_size % num_generations != 0:
        raise ValueError(
            f"batch size B={batch_size} is not a multiple of group size G={num_generations}: "
            "rows must come in whole groups"
        )


def _grouped(rewards: Any, num_generations: int, name: str):
    """(B,) or (B, F) rewards -> float64 (B/G, F, G) tensor, plus what is needed to undo it."""
    r, out_dtype = _as_float_tensor(rewards, name)
    if r.dim() not in (1, 2):
        raise ValueError(f"{name} must have shape (B,) or (B, F), got {tuple(r.shape)}")
    squeeze = r.dim() == 1
    r = r.unsqueeze(1) if squeeze else r  # (B, F)
    B, F = r.shape
    _check_group(B, num_generations)
    # contiguous over G so that every column is reduced the same way
    grouped = (
        r.reshape(B // num_generations, num_generations, F).permute(0, 2, 1).contiguous()
    )  # (B/G, F, G)
    return grouped, squeeze, out_dtype


def _zero_spread(grouped: torch.Tensor) -> torch.Tensor:
    """(B/G, F, G) -> (B/G, F, 1) bool: the group's rewards are all equal (up to rounding)."""
    spread = grouped.amax(-1, keepdim=True) - grouped.amin(-1, keepdim=True)  # (B/G, F, 1)
    scale = grouped.abs().amax(-1, keepdim=True).clamp(min=1.0)  # (B/G, F, 1)
    return spread <= ZERO_SPREAD_RTOL * scale


# ----------------------------------------------------------------------------- Eq. (9)


def standardize_in_groups(
    rewards: Any, num_generations: int, eps: float = 1e-4, unbiased: bool = True
) -> torch.Tensor:
    """Eq. (9): Â_{i,k} = (r_{i,k} − mean_j r_{j,k}) / (std_j r_{j,k} + ε), j over i's group.

    ``rewards`` is (B,) or (B, F); consecutive rows form a group of ``num_generations`` = G and each
    column is standardized independently. Returns a tensor of the same shape.

    - ``unbiased=True`` (default) uses the Bessel-corrected std (divide by G − 1), matching
      TRL's ``GRPOTrainer`` (``nanstd`` + ``1e-4``, ``scale_rewards="group"``).
    - A group whose rewards are all equal (spread ≤ ``ZERO_SPREAD_RTOL`` · max(1, max|r|))
      gets exactly 0, never NaN and never rounding noise divided by ε (e.g. ``[0.1] * 8``).
      G = 1 therefore always gives 0.
    - Computed in float64; returned in the input's float dtype (default dtype for ints).
    """
    grouped, squeeze, out_dtype = _grouped(rewards, num_generations, "rewards")  # (B/G, F, G)
    n_groups, F, G = grouped.shape
    mean = grouped.mean(-1, keepdim=True)  # (B/G, F, 1)
    std = grouped.std(-1, correction=1 if (unbiased and G > 1) else 0, keepdim=True)  # (B/G, F, 1)
    # Â = (r − mean) / (std + ε)
    adv = (grouped - mean) / (std + eps)  # (B/G, F, G)
    # Â = 0 exactly where the group has no spread
    adv = torch.where(_zero_spread(grouped), torch.zeros_like(adv), adv)  # (B/G, F, G)
    adv = adv.permute(0, 2, 1).reshape(n_groups * G, F)  # (B, F)
    return (adv.squeeze(1) if squeeze else adv).to(out_dtype)


def zero_std_fraction(rewards: Any, num_generations: int) -> torch.Tensor:
    """Fraction of groups whose rewards have zero spread (diagnostic ``adv/<field>_zero_std_frac``).

    ``rewards`` (B,) -> 0-dim tensor; (B, F) -> (F,) tensor, one fraction per column. These
    are the groups that Eq. (9) maps to advantage 0: they carry no learning signal.
    """
    grouped, squeeze, _ = _grouped(rewards, num_generations, "rewards")  # (B/G, F, G)
    frac = _zero_spread(grouped).squeeze(-1).to(torch.float64).mean(0)  # (F,)
    frac = frac.to(torch.get_default_dtype())
    return frac[0] if squeeze else frac


# ----------------------------------------------------------------------------- Eq. (10)


def routed_advantages(
    field_advantages: Any, field_ids: Any, background_advantages: Any
) -> torch.Tensor:
    """Eq. (10): A_{i,t} = Â_{i,k} if t ∈ S_{i,k}, A_{i,t} = A_{i,bg} if t ∈ S_{i,bg}.

    ``field_advantages`` (B, F), ``field_ids`` (B, T) integer with 0 = background and
    k + 1 = field k, ``background_advantages`` (B,). Returns (B, T). Padding positions should
    carry id 0; the loss masks them out with ``completion_mask``.
    """
    fa = torch.as_tensor(field_advantages)
    ids = torch.as_tensor(field_ids)
    bg = torch.as_tensor(background_advantages)
    if fa.dim() != 2:
        raise ValueError(f"field_advantages must be (B, F), got {tuple(fa.shape)}")
    B, F = fa.shape
    if ids.dim() != 2 or ids.shape[0] != B:
        raise ValueError(f"field_ids must be (B, T) with B={B}, got {tuple(ids.shape)}")
    if bg.shape != (B,):
        raise ValueError(f"background_advantages must be (B,) with B={B}, got {tuple(bg.shape)}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"field_ids must be an integer tensor, got dtype {ids.dtype}")
    if ids.numel() and (ids.min() < 0 or ids.max() > F):
        raise ValueError(
            f"field_ids must lie in [0, F={F}] (0 = background), "
            f"got range [{int(ids.min())}, {int(ids.max())}]"
        )
    dtype = torch.promote_types(fa.dtype, bg.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    # column 0 = A_bg, column k+1 = Â_k
    table = torch.cat([bg.to(dtype).unsqueeze(1), fa.to(dtype)], dim=1)  # (B, F+1)
    # A_{i,t} = table[i, field_ids[i, t]]
    return torch.gather(table, 1, ids.long())  # (B, T)


def background_advantages(
    seq_rewards: Any,
    num_generations: int,
    mode: str = "seq",
    eps: float = 1e-4,
    unbiased: bool = True,
) -> torch.Tensor:
    """Eq. (10b) [reconstruction]: the advantage of background tokens, (B,).

    ``mode="seq"``: A_{i,bg} = Â_{i,seq}, the standardized sequence reward (what vanilla GRPO
    broadcasts to every token). ``mode="zero"``: A_{i,bg} = 0 (background tokens get no
    policy-gradient signal). The paper's prose does not define A_bg; "seq" is our reading.
    """
    if mode not in BACKGROUND_MODES:
        raise ValueError(f"unknown background mode {mode!r}; accepted modes are {BACKGROUND_MODES}")
    if mode == "zero":
        r, out_dtype = _as_float_tensor(seq_rewards, "seq_rewards")
        if r.dim() != 1:
            raise ValueError(f"seq_rewards must be (B,), got {tuple(r.shape)}")
        _check_group(r.shape[0], num_generations)
        return torch.zeros(r.shape[0], dtype=out_dtype)  # (B,)
    seq = torch.as_tensor(seq_rewards)
    if seq.dim() != 1:
        raise ValueError(f"seq_rewards must be (B,), got {tuple(seq.shape)}")
    # A_{i,bg} = Â_{i,seq}
    return standardize_in_groups(seq, num_generations, eps=eps, unbiased=unbiased)  # (B,)


def rpc_shaped_background(
    background: Any,
    rpc_rewards: Any,
    num_generations: int,
    lam: float,
    eps: float = 1e-4,
    unbiased: bool = True,
) -> torch.Tensor:
    """Eq. (14): A_{i,bg} ← (1 − λ) A_{i,bg} + λ Â_{i,rpc}, Â_rpc the group-standardized r_rpc.

    [reconstruction of the mixing form]: the paper calls λ the "RPC mixing weight" (0.15 best)
    but the equation was lost; we read it as a convex combination. λ must lie in [0, 1];
    λ = 0 returns ``background`` unchanged (GRCA), λ = 1 replaces it by Â_rpc.
    """
    check_unit_interval("rpc_shaped_background lam", float(lam), ValueError)
    bg = torch.as_tensor(background)
    rpc = torch.as_tensor(rpc_rewards)
    if bg.dim() != 1 or rpc.shape != bg.shape:
        raise ValueError(
            f"background and rpc_rewards must both be (B,), got {tuple(bg.shape)} and "
            f"{tuple(rpc.shape)}"
        )
    rpc_adv = standardize_in_groups(rpc, num_generations, eps=eps, unbiased=unbiased)  # (B,)
    dtype = torch.promote_types(bg.dtype, rpc_adv.dtype)
    if lam == 0:
        return bg.to(dtype).clone()  # exactly GRCA's background, no 0 * Â rounding
    # (1 − λ) A_bg + λ Â_rpc
    return (1.0 - lam) * bg.to(dtype) + lam * rpc_adv.to(dtype)  # (B,)


def broadcast_advantages(seq_rewards: Any, num_generations: int, num_tokens: int) -> torch.Tensor:
    """Eq. (16), vanilla GRPO: A_{i,t} = Â_{i,seq} for every token t of row i.

    Returns (B, T) with T = ``num_tokens``. Uses the default ε = 1e-4 and unbiased std (TRL).
    """
    seq = torch.as_tensor(seq_rewards)
    if seq.dim() != 1:
        raise ValueError(f"seq_rewards must be (B,), got {tuple(seq.shape)}")
    adv = standardize_in_groups(seq, num_generations)  # (B,)
    # A_{i,t} = Â_{i,seq} for all t
    return adv.unsqueeze(1).expand(-1, int(num_tokens)).contiguous()  # (B, T)


# ----------------------------------------------------------------------------- variants


@dataclass
class CreditInputs:
    """Everything the advantage builders read for one generation batch (rows group-major)."""

    per_field_rewards: Any
    """(B, F) reward r_{i,k} of each routed field (for our task, ``GEOMETRIC_FIELDS`` order)."""
    seq_rewards: Any
    """(B,) sequence reward r_{i,seq} (what GRPO standardizes and broadcasts)."""
    rpc_rewards: Any
    """(B,) reprojection-consistency reward r_rpc (Eq. 13); may be None unless grca_rpc."""
    field_ids: Any
    """(B, T) integer: 0 = background, k+1 = field k (Eqs. 6-7)."""
    num_generations: int
    """G, completions per prompt."""
    format_rewards: Any = None
    """(B,) format reward, the last component of r_seq; needed by gdpo only."""

    def __post_init__(self):
        self.per_field_rewards = torch.as_tensor(self.per_field_rewards)
        self.seq_rewards = torch.as_tensor(self.seq_rewards)
        self.field_ids = torch.as_tensor(self.field_ids)
        for name in ("rpc_rewards", "format_rewards"):
            if getattr(self, name) is not None:
                setattr(self, name, torch.as_tensor(getattr(self, name)))
        B = self.seq_rewards.shape[0] if self.seq_rewards.dim() == 1 else -1
        if B < 0:
            raise ValueError(f"seq_rewards must be (B,), got {tuple(self.seq_rewards.shape)}")
        if self.per_field_rewards.dim() != 2 or self.per_field_rewards.shape[0] != B:
            raise ValueError(
                f"per_field_rewards must be (B, F) with B={B}, "
                f"got {tuple(self.per_field_rewards.shape)}"
            )
        if self.field_ids.dim() != 2 or self.field_ids.shape[0] != B:
            raise ValueError(
                f"field_ids must be (B, T) with B={B}, got {tuple(self.field_ids.shape)}"
            )
        for name in ("rpc_rewards", "format_rewards"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (B,):
                raise ValueError(f"{name} must be (B,)=({B},), got {tuple(value.shape)}")
        _check_group(B, self.num_generations)

    @property
    def num_tokens(self) -> int:
        return int(self.field_ids.shape[1])

    @property
    def num_fields(self) -> int:
        return int(self.per_field_rewards.shape[1])


@dataclass
class CreditConfig:
    """How per-token advantages are built (section ``credit`` of params.yaml)."""

    background: str = "seq"
    """Eq. (10b) [reconstruction]: A_bg = standardized sequence reward ("seq") or 0 ("zero")."""
    lam: float = 0.15
    """Eq. (14): RPC mixing weight λ ∈ [0, 1] (paper's best: 0.15); used by grca_rpc only."""
    eps: float = 1e-4
    """Eq. (9): ε added to the group std (TRL uses 1e-4)."""
    unbiased: bool = True
    """Eq. (9): Bessel-corrected group std, as TRL's GRPOTrainer."""
    format_weight: float = 0.1
    """gdpo only: weight of the format component (r_seq's weights: 1/F per field + this)."""

    def __post_init__(self):
        if self.background not in BACKGROUND_MODES:
            raise ValueError(
                f"CreditConfig.background={self.background!r}; accepted: {BACKGROUND_MODES}"
            )
        check_unit_interval("CreditConfig.lam", float(self.lam), ValueError)
        if self.eps < 0:
            raise ValueError(f"CreditConfig.eps must be >= 0, got {self.eps}")


def grpo_advantages(batch: CreditInputs, cfg: CreditConfig) -> torch.Tensor:
    """Eq. (16), vanilla GRPO: A_{i,t} = Â_{i,seq} for every token t. Returns (B, T)."""
    adv = standardize_in_groups(
        batch.seq_rewards, batch.num_generations, cfg.eps, cfg.unbiased
    )  # (B,)
    return adv.unsqueeze(1).expand(-1, batch.num_tokens).contiguous()  # (B, T)


def grca_advantages(batch: CreditInputs, cfg: CreditConfig) -> torch.Tensor:
    """Eqs. (9), (10), (10b), GRCA: field-standardized advantages routed to their spans."""
    G = batch.num_generations
    field_adv = standardize_in_groups(batch.per_field_rewards, G, cfg.eps, cfg.unbiased)  # (B, F)
    bg = background_advantages(batch.seq_rewards, G, cfg.background, cfg.eps, cfg.unbiased)  # (B,)
    return routed_advantages(field_adv, batch.field_ids, bg)  # (B, T)


def grca_rpc_advantages(batch: CreditInputs, cfg: CreditConfig) -> torch.Tensor:
    """Eq. (14), GRCA+RPC: as GRCA, with the background advantage mixed with Â_rpc."""
    if batch.rpc_rewards is None:
        raise ValueError("grca_rpc needs CreditInputs.rpc_rewards (B,), got None")
    G = batch.num_generations
    field_adv = standardize_in_groups(batch.per_field_rewards, G, cfg.eps, cfg.unbiased)  # (B, F)
    bg = background_advantages(batch.seq_rewards, G, cfg.background, cfg.eps, cfg.unbiased)  # (B,)
    bg = rpc_shaped_background(bg, batch.rpc_rewards, G, cfg.lam, cfg.eps, cfg.unbiased)  # (B,)
    return routed_advantages(field_adv, batch.field_ids, bg)  # (B, T)


def grca_bg0_advantages(batch: CreditInputs, cfg: CreditConfig) -> torch.Tensor:
    """GRCA with background advantage 0 (Eq. 10b's other reading): only field spans learn."""
    return grca_advantages(batch, dataclasses.replace(cfg, background="zero"))  # (B, T)


def normalize_then_sum(
    components: Any, weights: Any, num_generations: int, eps: float = 1e-4
) -> torch.Tensor:
    """TRL's GDPO (``multi_objective_aggregation="normalize_then_sum"``), per completion:

        s_i = Σ_k w_k (r_{i,k} − mean_g r_{·,k}) / (std_g r_{·,k} + ε)     (group-standardize)
        Â_i = (s_i − mean_B s) / (std_B s + ε)                               (batch-standardize)

    ``components`` (B, K), ``weights`` (K,). Unlike ``standardize_in_groups``, a group with
    no spread gives (r − mean) / ε as TRL does (0 up to rounding). Returns (B,).
    """
    r, out_dtype = _as_float_tensor(components, "components")
    w = torch.as_tensor(weights, dtype=torch.float64)
    if r.dim() != 2 or w.shape != (r.shape[1],):
        raise ValueError(
            f"components must be (B, K) and weights (K,), got {tuple(r.shape)}, {tuple(w.shape)}"
        )
    B, K = r.shape
    _check_group(B, num_generations)
    grouped = r.view(-1, num_generations, K)  # (B/G, G, K)
    std = grouped.std(1, keepdim=True) if num_generations > 1 else torch.zeros_like(grouped[:, :1])
    z = ((grouped - grouped.mean(1, keepdim=True)) / (std + eps)).view(B, K)  # (B, K)
    s = z @ w  # (B,)
    s_std = s.std() if B > 1 else torch.zeros(())
    return ((s - s.mean()) / (s_std + eps)).to(out_dtype)  # (B,)


def gdpo_advantages(batch: CreditInputs, cfg: CreditConfig) -> torch.Tensor:
    """GDPO: per-component standardization of r_seq's parts (the F fields, weight 1/F each,
    and the format reward, weight ``cfg.format_weight``), summed, batch-standardized and
    broadcast to every token; no routing. Equals TRL's GDPO with those reward functions."""
    if batch.format_rewards is None:
        raise ValueError("gdpo needs CreditInputs.format_rewards (B,), got None")
    F = batch.num_fields
    parts = torch.cat(
        [torch.as_tensor(batch.per_field_rewards), batch.format_rewards[:, None]], dim=1
    )  # (B, F + 1)
    weights = [1.0 / F] * F + [cfg.format_weight]
    adv = normalize_then_sum(parts, weights, batch.num_generations, cfg.eps)  # (B,)
    return adv.unsqueeze(1).expand(-1, batch.num_tokens).contiguous()  # (B, T)


ADVANTAGE_BUILDERS: dict[str, Callable[[CreditInputs, CreditConfig], torch.Tensor]] = {
    "grpo": grpo_advantages,
    "gdpo": gdpo_advantages,
    "grca": grca_advantages,
    "grca_bg0": grca_bg0_advantages,
    "grca_rpc": grca_rpc_advantages,
}


def build_advantages(variant: str, batch: CreditInputs, cfg: CreditConfig) -> torch.Tensor:
    """Per-token advantages (B, T) of the named variant (a key of ``ADVANTAGE_BUILDERS``)."""
    if variant not in ADVANTAGE_BUILDERS:
        raise ValueError(
            f"unknown advantage variant {variant!r}; accepted: {tuple(ADVANTAGE_BUILDERS)}"
        )
    return ADVANTAGE_BUILDERS[variant](batch, cfg)


def credit_diagnostics(
    batch: CreditInputs, fields: tuple[str, ...] = GEOMETRIC_FIELDS
) -> dict[str, float]:
    """Namespaced diagnostics of one batch (python floats).

    ``adv/<field>_zero_std_frac``: fraction of groups whose field rewards have no spread
    (they get advantage 0); also ``adv/seq_zero_std_frac`` and, if given, ``adv/rpc_...``.
    ``spans/<field>_coverage``: fraction of rows whose span of that field has ≥ 1 token.
    """
    G = batch.num_generations
    out: dict[str, float] = {}
    field_frac = zero_std_fraction(batch.per_field_rewards, G)  # (F,)
    for k, name in enumerate(fields):
        out[f"adv/{name}_zero_std_frac"] = float(field_frac[k])
    out["adv/seq_zero_std_frac"] = float(zero_std_fraction(batch.seq_rewards, G))
    if batch.rpc_rewards is not None:
        out["adv/rpc_zero_std_frac"] = float(zero_std_fraction(batch.rpc_rewards, G))
    for k, name in enumerate(fields):
        has_span = (batch.field_ids == k + 1).any(dim=1)  # (B,)
        out[f"spans/{name}_coverage"] = float(has_span.to(torch.float64).mean())
    return out
