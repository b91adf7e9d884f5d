"""Eqs. (2)-(4): cross-attention against a naive per-head loop, masking, residual, projector."""

from __future__ import annotations

import math

import pytest
import torch

from pointvl.model.fusion import GeometryGuidedCrossAttention, PointProjector


def naive_cross_attention(m: GeometryGuidedCrossAttention, hp, hi):
    """Eq. (2) per head with explicit softmax, then Eq. (3)."""
    B, P, D = hp.shape
    h = m.num_heads
    dh = D // h
    q, k, v = m.q_proj(hp), m.k_proj(hi), m.v_proj(hi)
    heads = []
    for j in range(h):
        s = slice(j * dh, (j + 1) * dh)
        scores = q[..., s] @ k[..., s].transpose(1, 2) / math.sqrt(dh)  # (B, P, I)
        heads.append(torch.softmax(scores, dim=-1) @ v[..., s])  # (B, P, dh)
    z = m.o_proj(torch.cat(heads, dim=-1))
    return m.norm(hp + z)


def test_cross_attention_matches_naive_loop():
    torch.manual_seed(0)
    m = GeometryGuidedCrossAttention(point_dim=32, image_dim=48, num_heads=4)
    hp, hi = torch.randn(2, 5, 32), torch.randn(2, 7, 48)
    out = m(hp, hi)
    assert out.shape == (2, 5, 32)
    torch.testing.assert_close(out, naive_cross_attention(m, hp, hi), atol=1e-5, rtol=1e-5)


def test_padded_image_tokens_are_ignored_and_no_image_means_z_zero():
    torch.manual_seed(1)
    m = GeometryGuidedCrossAttention(32, 48, 4, layernorm=False)
    hp, hi = torch.randn(2, 5, 32), torch.randn(2, 7, 48)
    padded = torch.cat([hi, torch.randn(2, 3, 48) * 100], dim=1)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, :7] = True
    torch.testing.assert_close(m(hp, padded, mask), m(hp, hi), atol=1e-5, rtol=1e-5)
    # Eq. (3) residual: without image, H_f = H_p
    torch.testing.assert_close(m(hp, None), hp)
    mask[1] = False  # sample 1 has no image -> its Z is 0
    torch.testing.assert_close(m(hp, padded, mask)[1], hp[1])


def test_projector_and_bad_shapes():
    proj = PointProjector(32, 128)
    assert proj(torch.randn(2, 5, 32)).shape == (2, 5, 128)
    with pytest.raises(ValueError):
        GeometryGuidedCrossAttention(30, 48, 4)
    m = GeometryGuidedCrossAttention(32, 48, 4)
    with pytest.raises(ValueError, match="image_tokens"):
        m(torch.randn(2, 5, 32), torch.randn(3, 7, 48))


def test_returned_weights_are_eq2_and_reproduce_the_fused_kernel():
    """``return_weights``: the explicit softmax path gives the SDPA path's H_f, weights (B, h,
    P, I) that sum to 1 per row, equal the naive per-head softmax, and respect the mask."""
    torch.manual_seed(2)
    m = GeometryGuidedCrossAttention(32, 48, 4)
    hp, hi = torch.randn(2, 5, 32), torch.randn(2, 7, 48)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[0, 5:] = False
    fused, w = m(hp, hi, mask, return_weights=True)
    torch.testing.assert_close(fused, m(hp, hi, mask), atol=1e-5, rtol=1e-5)
    assert w.shape == (2, 4, 5, 7)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 5))
    assert (w[0, ..., 5:] == 0).all()  # padded image tokens get no weight
    q = m.q_proj(hp[1]).view(5, 4, 8)[:, 2]  # head 2 of sample 1: (P, dh)
    k = m.k_proj(hi[1]).view(7, 4, 8)[:, 2]  # (I, dh)
    torch.testing.assert_close(w[1, 2], torch.softmax(q @ k.T / math.sqrt(8), -1))
    mask[1] = False  # no image at all: zero weights, H_f = LN(H_p)
    fused, w = m(hp, hi, mask, return_weights=True)
    assert (w[1] == 0).all()
    torch.testing.assert_close(fused[1], m.norm(hp[1]))
    assert m(hp, None, return_weights=True)[1] is None
