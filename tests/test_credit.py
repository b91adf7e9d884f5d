"""Tests for pointvl.credit: Eqs. (9), (10), (10b), (14) and the variant builders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pointvl.credit import (
    ADVANTAGE_BUILDERS,
    BACKGROUND_MODES,
    CreditConfig,
    CreditInputs,
    background_advantages,
    broadcast_advantages,
    build_advantages,
    credit_diagnostics,
    grca_advantages,
    grca_rpc_advantages,
    grpo_advantages,
    routed_advantages,
    rpc_shaped_background,
    standardize_in_groups,
    zero_std_fraction,
)
from pointvl.schema import GEOMETRIC_FIELDS

F = len(GEOMETRIC_FIELDS)


def naive_standardize(r: np.ndarray, G: int, eps: float = 1e-4, unbiased: bool = True):
    """Eq. (9) with python loops over groups and columns."""
    r = np.asarray(r, dtype=np.float64)
    squeeze = r.ndim == 1
    r = r[:, None] if squeeze else r
    out = np.zeros_like(r)
    for g in range(r.shape[0] // G):
        for k in range(r.shape[1]):
            vals = [float(r[g * G + j, k]) for j in range(G)]
            if max(vals) == min(vals):
                continue
            m = sum(vals) / G
            var = sum((v - m) ** 2 for v in vals) / (G - 1 if unbiased else G)
            for j in range(G):
                out[g * G + j, k] = (vals[j] - m) / (var**0.5 + eps)
    return out[:, 0] if squeeze else out


def random_batch(rng: np.random.Generator, n_groups=3, G=4, T=12, with_rpc=True):
    B = n_groups * G
    return CreditInputs(
        per_field_rewards=rng.random((B, F)),
        seq_rewards=rng.random(B),
        rpc_rewards=rng.random(B) if with_rpc else None,
        field_ids=rng.integers(0, F + 1, size=(B, T)),
        num_generations=G,
        format_rewards=rng.random(B),
    )


# ----------------------------------------------------------------------------- Eq. (9)


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("shape,G", [((12,), 4), ((12, 4), 4), ((16, 3), 8), ((6, 2), 1)])
def test_standardize_matches_naive_loop(shape, G, unbiased):
    rng = np.random.default_rng(0)
    r = rng.normal(size=shape)
    r[:G] = r[0]  # one all-equal group
    got = standardize_in_groups(r, G, unbiased=unbiased)
    assert got.shape == shape and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), naive_standardize(r, G, unbiased=unbiased), atol=1e-12)


def test_standardize_matches_trl_formula():
    # TRL 1.16 grpo_trainer.py (_generate_and_score_completions, scale_rewards="group"):
    #   mean_grouped = rewards.view(-1, G).mean(1); std = nanstd(rewards.view(-1, G), dim=1)
    #   advantages = (rewards - mean_grouped) / (std + 1e-4)     (nanstd is Bessel-corrected)
    rng = np.random.default_rng(1)
    rewards = torch.tensor(rng.random(32), dtype=torch.float32)
    G = 8
    grouped = rewards.view(-1, G)
    mean = grouped.mean(1).repeat_interleave(G)
    std = grouped.std(1, correction=1).repeat_interleave(G)
    trl = (rewards - mean) / (std + 1e-4)
    got = standardize_in_groups(rewards, G)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, trl, atol=1e-6, rtol=1e-5)


def test_standardize_bad_num_generations_names_B_and_G():
    with pytest.raises(ValueError, match=r"B=10.*G=4"):
        standardize_in_groups(torch.zeros(10), 4)
    with pytest.raises(ValueError, match="G=0"):
        standardize_in_groups(torch.zeros(4), 0)
    with pytest.raises(ValueError, match="finite"):
        standardize_in_groups(torch.tensor([0.0, float("nan")]), 2)


def test_group_permutation_permutes_advantages():
    rng = np.random.default_rng(2)
    G, n_groups = 8, 4
    r = torch.tensor(rng.random((G * n_groups, F)))
    perm = torch.cat(
        [
            torch.randperm(G, generator=torch.Generator().manual_seed(g)) + g * G
            for g in range(n_groups)
        ]
    )
    a = standardize_in_groups(r, G)
    a_perm = standardize_in_groups(r[perm], G)
    torch.testing.assert_close(a_perm, a[perm], atol=1e-12, rtol=0)


def test_group_permutation_across_groups_changes_advantages():
    # sanity: mixing rows *between* groups is not an invariance (the test above can fail)
    r = torch.tensor([0.0, 1.0, 0.0, 5.0])
    swapped = r[[0, 2, 1, 3]]
    assert not torch.allclose(
        standardize_in_groups(swapped, 2), standardize_in_groups(r, 2)[[0, 2, 1, 3]]
    )


@pytest.mark.parametrize("c,d", [(3.0, -2.0), (0.01, 7.0), (250.0, 0.5)])
def test_affine_invariance(c, d):
    rng = np.random.default_rng(3)
    r = torch.tensor(rng.random((24, F)))
    # exact with eps = 0
    torch.testing.assert_close(
        standardize_in_groups(c * r + d, 8, eps=0.0),
        standardize_in_groups(r, 8, eps=0.0),
        atol=1e-10,
        rtol=0,
    )
    # with the default eps only approximately, and only while std >> eps (eps does not scale)
    scaled, base = standardize_in_groups(c * r + d, 8), standardize_in_groups(r, 8)
    if c >= 1:
        torch.testing.assert_close(scaled, base, atol=1e-6, rtol=1e-3)
    else:
        assert not torch.allclose(scaled, base, atol=1e-6, rtol=1e-3)


@pytest.mark.parametrize("value", [0.1, 1 / 3, 0.7, 2 / 3, 1e6 + 0.1, -0.3, 0.0])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_zero_spread_gives_exact_zero(value, dtype):
    r = torch.full((8,), value, dtype=dtype)
    got = standardize_in_groups(r, 8)
    assert torch.equal(got, torch.zeros(8, dtype=dtype))
    # a value computed by different routes (0.1 + 0.2 vs 0.3) is also "all equal"
    mixed = torch.tensor([0.1 + 0.2, 0.3] * 4, dtype=torch.float64)
    assert torch.equal(standardize_in_groups(mixed, 8), torch.zeros(8, dtype=torch.float64))


def test_zero_spread_group_next_to_live_group():
    r = torch.tensor([[1 / 3] * 8 + list(np.linspace(0, 1, 8))]).T.repeat(1, F)  # (16, F)
    r[8:, 2] = 0.1  # column 2: both groups flat
    a = standardize_in_groups(r, 8)
    assert torch.equal(a[:8], torch.zeros(8, F, dtype=a.dtype))
    assert torch.equal(a[8:, 2], torch.zeros(8, dtype=a.dtype))
    assert (a[8:, 0].abs() > 0.1).all() and torch.isfinite(a).all()
    torch.testing.assert_close(zero_std_fraction(r, 8), torch.tensor([0.5, 0.5, 1.0, 0.5]))


def test_num_generations_one_is_zero_not_nan():
    a = standardize_in_groups(torch.arange(5.0), 1)
    assert torch.equal(a, torch.zeros(5))


def test_integer_and_numpy_inputs():
    a = standardize_in_groups(np.array([0, 1, 1, 0]), 2)
    assert a.dtype == torch.get_default_dtype()
    b = standardize_in_groups(np.array([0.0, 1.0, 1.0, 0.0]), 2)
    assert b.dtype == torch.float64
    torch.testing.assert_close(a.double(), b, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- Eq. (10)


def naive_route(field_adv, field_ids, bg):
    B, T = field_ids.shape
    out = torch.empty(B, T, dtype=torch.float64)
    for i in range(B):
        for t in range(T):
            k = int(field_ids[i, t])
            out[i, t] = bg[i] if k == 0 else field_adv[i, k - 1]
    return out


def test_routing_matches_naive_loop():
    rng = np.random.default_rng(4)
    fa = torch.tensor(rng.normal(size=(6, F)))
    ids = torch.tensor(rng.integers(0, F + 1, size=(6, 17)))
    bg = torch.tensor(rng.normal(size=6))
    assert torch.equal(routed_advantages(fa, ids, bg), naive_route(fa, ids, bg))


@settings(max_examples=60, deadline=None)
@given(
    B=st.integers(1, 6),
    T=st.integers(0, 20),
    num_fields=st.integers(1, 5),
    data=st.data(),
)
def test_routing_partition_property(B, T, num_fields, data):
    ids = data.draw(
        st.lists(
            st.lists(st.integers(0, num_fields), min_size=T, max_size=T), min_size=B, max_size=B
        )
    )
    ids = torch.tensor(ids, dtype=torch.long).reshape(B, T)
    # distinct values per (row, source) so any misrouting is visible
    fa = torch.arange(B * num_fields, dtype=torch.float64).reshape(B, num_fields) + 1
    bg = -torch.arange(B, dtype=torch.float64) - 1
    out = routed_advantages(fa, ids, bg)
    assert out.shape == (B, T)
    for k in range(num_fields + 1):
        sel = ids == k
        expected = bg[:, None].expand(B, T) if k == 0 else fa[:, k - 1 : k].expand(B, T)
        assert torch.equal(out[sel], expected[sel])


def test_routing_errors():
    fa, bg = torch.zeros(2, F), torch.zeros(2)
    with pytest.raises(ValueError, match=r"\[0, F=4\]"):
        routed_advantages(fa, torch.tensor([[0, 5]]).repeat(2, 1), bg)
    with pytest.raises(ValueError, match=r"\[0, F=4\]"):
        routed_advantages(fa, torch.tensor([[-1, 0]]).repeat(2, 1), bg)
    with pytest.raises(ValueError, match=r"\(3, 7\)"):
        routed_advantages(fa, torch.zeros(3, 7, dtype=torch.long), bg)
    with pytest.raises(ValueError, match=r"background_advantages.*\(3,\)"):
        routed_advantages(fa, torch.zeros(2, 7, dtype=torch.long), torch.zeros(3))
    with pytest.raises(ValueError, match="integer"):
        routed_advantages(fa, torch.zeros(2, 7), bg)


# ----------------------------------------------------------------------------- Eqs. (10b), (14)


def test_background_modes():
    r = torch.tensor([0.0, 1.0, 2.0, 4.0])
    assert torch.equal(background_advantages(r, 2, "seq"), standardize_in_groups(r, 2))
    assert torch.equal(background_advantages(r, 2, "zero"), torch.zeros(4))
    with pytest.raises(ValueError, match=r"'mean'.*\('seq', 'zero'\)"):
        background_advantages(r, 2, "mean")
    assert BACKGROUND_MODES == ("seq", "zero")


def test_rpc_shaping():
    rng = np.random.default_rng(5)
    bg = torch.tensor(rng.normal(size=8))
    rpc = torch.tensor(rng.random(8))
    assert torch.equal(rpc_shaped_background(bg, rpc, 4, 0.0), bg)
    torch.testing.assert_close(
        rpc_shaped_background(bg, rpc, 4, 1.0), standardize_in_groups(rpc, 4)
    )
    mixed = rpc_shaped_background(bg, rpc, 4, 0.15)
    torch.testing.assert_close(mixed, 0.85 * bg + 0.15 * standardize_in_groups(rpc, 4))
    for lam in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            rpc_shaped_background(bg, rpc, 4, lam)


def test_broadcast_advantages():
    r = torch.tensor([0.0, 1.0, 3.0, 3.0])
    a = broadcast_advantages(r, 2, 5)
    assert a.shape == (4, 5)
    assert torch.equal(a, standardize_in_groups(r, 2)[:, None].expand(4, 5))
    assert torch.equal(a[2:], torch.zeros(2, 5))


# ----------------------------------------------------------------------------- variants


def test_grca_equals_grpo_when_field_rewards_equal_seq():
    rng = np.random.default_rng(6)
    batch = random_batch(rng, n_groups=5, G=8, T=30)
    seq = batch.seq_rewards
    batch.per_field_rewards = seq[:, None].repeat(1, F)
    cfg = CreditConfig(background="seq")
    assert torch.equal(grca_advantages(batch, cfg), grpo_advantages(batch, cfg))
    # ...and they differ once field rewards differ from the sequence reward
    batch.per_field_rewards = torch.tensor(rng.random((40, F)))
    assert not torch.equal(grca_advantages(batch, cfg), grpo_advantages(batch, cfg))


def test_grpo_builder_equals_broadcast():
    batch = random_batch(np.random.default_rng(7))
    assert torch.equal(
        grpo_advantages(batch, CreditConfig()),
        broadcast_advantages(batch.seq_rewards, batch.num_generations, batch.num_tokens),
    )


def test_rpc_lambda_zero_equals_grca():
    batch = random_batch(np.random.default_rng(8))
    for bgmode in BACKGROUND_MODES:
        assert torch.equal(
            grca_rpc_advantages(batch, CreditConfig(background=bgmode, lam=0.0)),
            grca_advantages(batch, CreditConfig(background=bgmode)),
        )


def test_rpc_only_changes_background_tokens():
    batch = random_batch(np.random.default_rng(9))
    a = grca_advantages(batch, CreditConfig())
    b = grca_rpc_advantages(batch, CreditConfig(lam=0.5))
    fg = batch.field_ids > 0
    assert torch.equal(a[fg], b[fg])
    assert not torch.allclose(a[~fg], b[~fg])


def test_grca_field_tokens_follow_only_their_field():
    # changing one field's rewards changes exactly that field's tokens
    rng = np.random.default_rng(10)
    batch = random_batch(rng)
    cfg = CreditConfig()
    before = grca_advantages(batch, cfg)
    batch.per_field_rewards = batch.per_field_rewards.clone()
    batch.per_field_rewards[:, 1] = torch.tensor(rng.random(batch.per_field_rewards.shape[0]))
    after = grca_advantages(batch, cfg)
    changed = before != after
    assert changed.any()
    assert torch.equal(changed, changed & (batch.field_ids == 2))


def test_build_advantages_dispatch_and_errors():
    batch = random_batch(np.random.default_rng(11))
    cfg = CreditConfig()
    for name, fn in ADVANTAGE_BUILDERS.items():
        assert torch.equal(build_advantages(name, batch, cfg), fn(batch, cfg))
    assert set(ADVANTAGE_BUILDERS) == {"grpo", "gdpo", "grca", "grca_bg0", "grca_rpc"}
    with pytest.raises(ValueError, match=r"'ppo'.*'grpo', 'gdpo', 'grca'"):
        build_advantages("ppo", batch, cfg)
    no_rpc = random_batch(np.random.default_rng(11), with_rpc=False)
    with pytest.raises(ValueError, match="rpc_rewards"):
        grca_rpc_advantages(no_rpc, cfg)
    no_format = CreditInputs(batch.per_field_rewards, batch.seq_rewards, None, batch.field_ids, 4)
    with pytest.raises(ValueError, match="format_rewards"):
        build_advantages("gdpo", no_format, cfg)


def naive_gdpo(parts: np.ndarray, weights, G: int, eps=1e-4) -> np.ndarray:
    """TRL 1.16's normalize_then_sum, written out per group and per component."""
    B, K = parts.shape
    z = np.zeros_like(parts)
    for g in range(0, B, G):
        blk = parts[g : g + G]
        z[g : g + G] = (blk - blk.mean(0)) / (blk.std(0, ddof=1) + eps)
    s = z @ np.asarray(weights)
    return (s - s.mean()) / (s.std(ddof=1) + eps)


def test_gdpo_is_normalize_then_sum_broadcast():
    batch = random_batch(np.random.default_rng(5))
    adv = build_advantages("gdpo", batch, CreditConfig(format_weight=0.1))  # (B, T)
    assert torch.equal(adv, adv[:, :1].expand_as(adv))  # one value per completion
    parts = np.column_stack([batch.per_field_rewards.numpy(), batch.format_rewards.numpy()])
    want = naive_gdpo(parts, [0.25] * 4 + [0.1], batch.num_generations)
    np.testing.assert_allclose(adv[:, 0].numpy(), want, atol=1e-12)


def test_grca_bg0_routes_fields_and_zeroes_the_background():
    batch = random_batch(np.random.default_rng(6))
    adv = build_advantages("grca_bg0", batch, CreditConfig())
    bg = batch.field_ids == 0
    assert torch.all(adv[bg] == 0)
    torch.testing.assert_close(adv[~bg], build_advantages("grca", batch, CreditConfig())[~bg])


def test_config_and_inputs_validation():
    with pytest.raises(ValueError, match="background"):
        CreditConfig(background="none")
    with pytest.raises(ValueError, match="lam"):
        CreditConfig(lam=2.0)
    with pytest.raises(ValueError, match=r"per_field_rewards must be \(B, F\) with B=4"):
        CreditInputs(
            torch.zeros(3, 3), torch.zeros(4), None, torch.zeros(4, 2, dtype=torch.long), 2
        )
    with pytest.raises(ValueError, match=r"B=4.*G=3"):
        CreditInputs(
            torch.zeros(4, F), torch.zeros(4), None, torch.zeros(4, 2, dtype=torch.long), 3
        )


def test_credit_diagnostics():
    G, T = 4, 6
    per_field = torch.rand(8, F, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    per_field[:4, 0] = 0.5  # bbox2d: first group flat
    per_field[:, 3] = 0.0  # kpts3d: every group flat
    ids = torch.zeros(8, T, dtype=torch.long)
    ids[:2, 1:3] = 1  # bbox2d span in 2 of 8 rows
    ids[:, 4] = 2  # bbox3d everywhere
    batch = CreditInputs(per_field, torch.arange(8.0), torch.ones(8), ids, G)
    d = credit_diagnostics(batch)
    assert d["adv/bbox2d_zero_std_frac"] == 0.5
    assert d["adv/bbox3d_zero_std_frac"] == 0.0
    assert d["adv/kpts3d_zero_std_frac"] == 1.0
    assert d["adv/seq_zero_std_frac"] == 0.0
    assert d["adv/rpc_zero_std_frac"] == 1.0
    assert d["spans/bbox2d_coverage"] == 0.25
    assert d["spans/bbox3d_coverage"] == 1.0
    assert d["spans/kpts2d_coverage"] == 0.0
    assert all(isinstance(v, float) for v in d.values())
    for name in GEOMETRIC_FIELDS:
        assert f"adv/{name}_zero_std_frac" in d and f"spans/{name}_coverage" in d
