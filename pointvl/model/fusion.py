"""Geometry-guided cross-attention (Eqs. 2-3) and the projector into the LM (Eq. 4).

    H_p (B, P, d_p)  point tokens (Point-BERT, CLS + G groups)       queries
    H_i (B, I, d_i)  image tokens (Qwen2.5-VL vision tower, merged)  keys / values
    Z   = MHA(H_p, H_i, H_i)                                         Eq. (2)
    H_f = LN(H_p + Z)                                                Eq. (3)
    E   = H_f W_proj                                                 Eq. (4)   (B, P, d_lm)

[reconstruction] choices, each a config value of ``PointVLConfig``:
- Eq. (2) is written single-head in the prose; we use ``fusion_num_heads`` heads with the
  usual output projection W_o ("multi-head in practice").
- Eq. (3) residual H_f = H_p + Z, then an optional LayerNorm (``fusion_layernorm``).
- Eq. (4) is a single linear map (with a bias).
- A sample without an image (all keys masked) gets Z = 0, i.e. H_f = LN(H_p).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GeometryGuidedCrossAttention(nn.Module):
    """Eqs. (2)-(3): point tokens query image tokens; residual fusion."""

    def __init__(self, point_dim: int, image_dim: int, num_heads: int, layernorm: bool = True):
        super().__init__()
        if point_dim % num_heads:
            raise ValueError(
                f"fusion: point_dim={point_dim} must be divisible by num_heads={num_heads}"
            )
        self.num_heads = num_heads
        self.q_proj = nn.Linear(point_dim, point_dim)
        self.k_proj = nn.Linear(image_dim, point_dim)
        self.v_proj = nn.Linear(image_dim, point_dim)
        self.o_proj = nn.Linear(point_dim, point_dim)
        self.norm = nn.LayerNorm(point_dim) if layernorm else nn.Identity()

    def forward(
        self,
        point_tokens: torch.Tensor,
        image_tokens: torch.Tensor | None,
        image_mask: torch.Tensor | None = None,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """point_tokens (B, P, d_p); image_tokens (B, I, d_i) or None; image_mask (B, I) bool
        (True = a real image token). Returns H_f (B, P, d_p); with ``return_weights`` also
        Eq. (2)'s attention weights (B, h, P, I) (None without an image; a row with no image
        token gets all-zero weights). The fused SDPA kernel does not return weights, so that
        path computes softmax(q k^T / sqrt(d_h)) explicitly (equal outputs, tested)."""
        if point_tokens.ndim != 3:
            raise ValueError(f"point_tokens: expected (B, P, d_p), got {tuple(point_tokens.shape)}")
        if image_tokens is None:
            fused = self.norm(point_tokens)  # no image: Z = 0
            return (fused, None) if return_weights else fused
        B, P, D = point_tokens.shape
        if image_tokens.ndim != 3 or image_tokens.shape[0] != B:
            raise ValueError(
                f"image_tokens: expected ({B}, I, d_i), got {tuple(image_tokens.shape)}"
            )
        I = image_tokens.shape[1]
        h, dh = self.num_heads, D // self.num_heads
        q = self.q_proj(point_tokens).view(B, P, h, dh).transpose(1, 2)  # (B, h, P, dh)
        k = self.k_proj(image_tokens).view(B, I, h, dh).transpose(1, 2)  # (B, h, I, dh)
        v = self.v_proj(image_tokens).view(B, I, h, dh).transpose(1, 2)  # (B, h, I, dh)
        if image_mask is None:
            image_mask = torch.ones(B, I, dtype=torch.bool, device=point_tokens.device)
        has_image = image_mask.any(-1)  # (B,)
        # rows without any image attend to a dummy key; their output is zeroed below
        attn_mask = (image_mask | ~has_image[:, None])[:, None, None, :]  # (B, 1, 1, I)
        weights = None
        # Eq. (2): Z = softmax((H_p W_q)(H_i W_k)^T / sqrt(d)) (H_i W_v)
        if return_weights:
            logits = (q @ k.transpose(-1, -2)) / dh**0.5  # (B, h, P, I)
            weights = logits.masked_fill(~attn_mask, float("-inf")).softmax(-1)  # (B, h, P, I)
            z = weights @ v  # (B, h, P, dh)
            weights = weights * has_image[:, None, None, None].to(weights.dtype)
        else:
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, h, P, dh)
        z = self.o_proj(z.transpose(1, 2).reshape(B, P, D))  # (B, P, d_p)
        z = z * has_image[:, None, None].to(z.dtype)  # Z = 0 where there is no image
        # Eq. (3): H_f = H_p + Z
        fused = self.norm(point_tokens + z)  # (B, P, d_p)
        return (fused, weights) if return_weights else fused


class PointProjector(nn.Module):
    """Eq. (4): E = H_f W_proj, W_proj in R^{d_p x d_lm} (with bias)."""

    def __init__(self, point_dim: int, lm_dim: int):
        super().__init__()
        self.proj = nn.Linear(point_dim, lm_dim)

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        return self.proj(fused)  # (B, P, d_lm)
