"""PointNet (Qi et al., CVPR 2017) as a global feature extractor for the Table 2 regressor.

    points (B, N, C)                       C = 3 (xyz) or 6 (xyz + normals)
      │  shared MLP: conv1x1 → BN → ReLU, per layer    ──► (B, widths[-1], N)
      ▼  max pool over the N points (symmetric: Sec. 4.2, Eq. 1 of the paper)
    global feature f (B, widths[-1])

    f(x_1, ..., x_N) = max_i h(x_i),   h = shared MLP

Departures from the published classification/segmentation network:
- No T-Net (neither the 3x3 input transform nor the 64x64 feature transform, nor its
  orthogonality regularizer). The object frame is canonical here (the boxes are
  axis-aligned in it), so an input alignment has nothing to undo; the paper's own ablation
  credits the transforms with ~2 points of ModelNet40 accuracy.
- The widths are a parameter (published: 64, 64, 64, 128, 1024); the CPU profiles use
  narrower ones (``pointvl.baselines.regressor.DEFAULT_SIZES``).
- The input may carry normals (C = 6), as the published ModelNet "with normals" variant.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

PUBLISHED_WIDTHS = (64, 64, 64, 128, 1024)


def shared_mlp(in_channels: int, widths: Sequence[int], dims: int = 1) -> nn.Sequential:
    """Pointwise MLP as 1x1 convolutions: (conv → BN → ReLU) per width (Conv1d or Conv2d)."""
    conv, norm = (nn.Conv1d, nn.BatchNorm1d) if dims == 1 else (nn.Conv2d, nn.BatchNorm2d)
    layers, c = [], in_channels
    for w in widths:
        layers += [conv(c, w, 1, bias=False), norm(w), nn.ReLU(inplace=True)]
        c = w
    return nn.Sequential(*layers)


class PointNetEncoder(nn.Module):
    """points (B, N, C) -> global max-pooled feature (B, widths[-1]); invariant to point order."""

    def __init__(self, in_channels: int = 6, widths: Sequence[int] = PUBLISHED_WIDTHS):
        super().__init__()
        self.in_channels = in_channels
        self.out_dim = int(widths[-1])
        self.mlp = shared_mlp(in_channels, widths)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        if points.ndim != 3 or points.shape[-1] < self.in_channels:
            raise ValueError(
                f"points: expected shape (B, N, >={self.in_channels}), got {tuple(points.shape)}"
            )
        x = points[..., : self.in_channels].transpose(1, 2)  # (B, C, N)
        # f = max_i h(x_i)
        return self.mlp(x).max(dim=2).values  # (B, widths[-1])
