"""Tests for pointvl.objective: Eqs. (15)-(16) against TRL 1.16's GRPOTrainer loss."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from pointvl.objective import LOSS_TYPES, routed_surrogate_loss, token_ratio
from pointvl.schema import GEOMETRIC_FIELDS


def random_inputs(seed=0, B=6, T=9, spread=0.3):
    g = torch.Generator().manual_seed(seed)
    logps = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    old = logps + spread * torch.randn(B, T, generator=g, dtype=torch.float64)
    ref = logps + 0.2 * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = 0  # an empty completion (clamp(min=1) path)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(torch.int64)
    ids = torch.randint(0, len(GEOMETRIC_FIELDS) + 1, (B, T), generator=g)
    return logps, old, ref, adv, mask, ids


def trl_loss_inline(
    logps, old, adv, mask, loss_type, eps_low=0.2, eps_high=0.2, beta=0.0, ref=None, max_len=None
):
    """TRL 1.16 trl/trainer/grpo_trainer.py, GRPOTrainer._compute_loss (token-level IS), reimplemented."""
    if adv.dim() == 1:
        adv = adv.unsqueeze(1)
    coef_1 = torch.exp(logps - old)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    per_token_loss = -torch.min(coef_1 * adv, coef_2 * adv)
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * (torch.exp(ref - logps) - (ref - logps) - 1)
    mask = mask.to(logps.dtype)
    if loss_type == "grpo":
        return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type in ("bnpo", "dapo"):  # dapo: num_items_in_batch == mask.sum() with 1 process
        return (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    return (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_len)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "bnpo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_trl_formula_inline(loss_type, beta, seed):
    logps, old, ref, adv, mask, _ = random_inputs(seed)
    ours, diag = routed_surrogate_loss(
        logps,
        old,
        adv,
        mask,
        loss_type=loss_type,
        beta=beta,
        ref_per_token_logps=ref,
        max_completion_length=12,
    )
    expected = trl_loss_inline(logps, old, adv, mask, loss_type, beta=beta, ref=ref, max_len=12)
    torch.testing.assert_close(ours, expected, atol=1e-12, rtol=0)
    assert ("kl" in diag) == (beta != 0.0)


def _trl_stub(logps, loss_type, beta, eps_low, eps_high, max_len):
    """The attributes GRPOTrainer._compute_loss reads, for one process, no accumulation, no vLLM."""
    accel = SimpleNamespace(
        num_processes=1,
        gather=lambda x: x,
        gather_for_metrics=lambda x: x,
        reduce=lambda x, reduction="sum": x,
    )
    return SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, torch.zeros_like(logps), None),
        aux_loss_enabled=False,
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        loss_type=loss_type,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        use_vllm=False,
        vllm_importance_sampling_correction=False,
        model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        max_completion_length=max_len,
        accelerator=accel,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _entropy_bonus_enabled=False,
    )


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "bnpo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("per_token", [False, True])
def test_matches_trl_compute_loss(loss_type, beta, per_token):
    """Call the real TRL 1.16 GRPOTrainer._compute_loss on a stub trainer; loss and metrics agree."""
    grpo_trainer = pytest.importorskip("trl.trainer.grpo_trainer")
    logps, old, ref, adv, mask, ids = random_inputs(3)
    if per_token:  # TRL accepts (B, T) advantages too; that is the whole GRCA change
        adv = adv[:, None] + 0.5 * torch.randn(
            logps.shape, generator=torch.Generator().manual_seed(9), dtype=logps.dtype
        )
    B, T = logps.shape
    stub = _trl_stub(logps, loss_type, beta, 0.2, 0.28, max_len=T + 3)
    inputs = {
        "prompt_ids": torch.zeros(B, 2, dtype=torch.long),
        "prompt_mask": torch.ones(B, 2, dtype=torch.long),
        "completion_ids": torch.zeros(B, T, dtype=torch.long),
        "completion_mask": mask,
        "advantages": adv,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum(),
    }
    trl_loss = grpo_trainer.GRPOTrainer._compute_loss(stub, None, inputs)
    ours, diag = routed_surrogate_loss(
        logps, old, adv, mask, epsilon_low=0.2, epsilon_high=0.28, loss_type=loss_type, beta=beta,
        ref_per_token_logps=ref, field_ids=ids, max_completion_length=T + 3,
    )  # fmt: skip
    torch.testing.assert_close(ours, trl_loss, atol=1e-12, rtol=0)
    metrics = stub._metrics["train"]
    assert diag["loss/clipfrac"] == pytest.approx(
        metrics["clip_ratio/region_mean"][0], abs=1e-6
    )  # TRL counts in float32
    if beta != 0.0:
        assert diag["kl"] == pytest.approx(metrics["kl"][0], abs=1e-6)


def test_per_token_broadcast_equals_sequence_advantages():
    logps, old, ref, adv, mask, _ = random_inputs(4)
    for loss_type in LOSS_TYPES:
        a, _ = routed_surrogate_loss(
            logps, old, adv, mask, loss_type=loss_type, beta=0.1, ref_per_token_logps=ref
        )
        b, _ = routed_surrogate_loss(
            logps,
            old,
            adv[:, None].expand_as(logps),
            mask,
            loss_type=loss_type,
            beta=0.1,
            ref_per_token_logps=ref,
        )
        assert torch.equal(a, b)


def test_on_policy_gradient_is_routed_advantage():
    # at ρ = 1 (old = logp), ∂loss/∂logp_{i,t} = −A_{i,t} · mask_{i,t} / (|y_i| · B) for loss_type grpo
    logps, _, _, _, mask, _ = random_inputs(5)
    adv = torch.randn(logps.shape, generator=torch.Generator().manual_seed(1), dtype=logps.dtype)
    lp = logps.clone().requires_grad_(True)
    loss, diag = routed_surrogate_loss(lp, lp.detach(), adv, mask)
    loss.backward()
    m = mask.to(lp.dtype)
    expected = -adv * m / (m.sum(-1, keepdim=True).clamp(min=1.0) * lp.shape[0])
    torch.testing.assert_close(lp.grad, expected, atol=1e-12, rtol=0)
    assert diag["loss/clipfrac"] == 0.0


def test_clipped_tokens_have_no_gradient_and_are_counted():
    # row 0: ρ = 2 with A > 0 (clipped high), row 1: ρ = 0.5 with A < 0 (clipped low),
    # row 2: ρ = 2 with A < 0 (not clipped: the unclipped term is the min)
    lp = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    old = torch.log(torch.tensor([[0.5], [2.0], [0.5]], dtype=torch.float64)).expand(3, 4)
    adv = torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)
    ids = torch.tensor([[1, 1, 0, 0], [2, 2, 2, 2], [0, 0, 0, 0]])
    loss, diag = routed_surrogate_loss(lp, old, adv, torch.ones(3, 4), field_ids=ids)
    loss.backward()
    assert torch.equal(lp.grad[:2], torch.zeros(2, 4, dtype=torch.float64))
    assert (lp.grad[2] != 0).all()
    assert diag["loss/clipfrac"] == pytest.approx(8 / 12)
    assert diag["loss/clipfrac/bbox2d"] == 1.0
    assert diag["loss/clipfrac/bbox3d"] == 1.0
    assert diag["loss/clipfrac/background"] == pytest.approx(2 / 6)
    assert diag["loss/clipfrac/kpts2d"] != diag["loss/clipfrac/kpts2d"]  # NaN: no such token


def test_token_ratio():
    a = torch.tensor([[-1.0, -2.0]])
    b = torch.tensor([[-1.5, -1.0]])
    torch.testing.assert_close(token_ratio(a, b), torch.exp(a) / torch.exp(b))


def test_errors():
    logps, old, ref, adv, mask, _ = random_inputs(6)
    with pytest.raises(ValueError, match=r"'ppo'.*'grpo', 'bnpo', 'dapo', 'dr_grpo'"):
        routed_surrogate_loss(logps, old, adv, mask, loss_type="ppo")
    with pytest.raises(ValueError, match=r"advantages.*\(6, 9\).*\(5,\)"):
        routed_surrogate_loss(logps, old, adv[:5], mask)
    with pytest.raises(ValueError, match=r"completion_mask.*\(6, 9\)"):
        routed_surrogate_loss(logps, old, adv, mask[:, :3])
    with pytest.raises(ValueError, match="ref_per_token_logps"):
        routed_surrogate_loss(logps, old, adv, mask, beta=0.1)
    with pytest.raises(ValueError, match="field_ids"):
        routed_surrogate_loss(logps, old, adv, mask, field_ids=torch.zeros(6, 2, dtype=torch.long))
