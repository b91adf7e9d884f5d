"""PointNet++ SSG (Qi et al., NeurIPS 2017), pure PyTorch, as a global feature extractor.

One set-abstraction (SA) level, Sec. 3.2 of the paper::

    xyz (B, N, 3), feats (B, N, D)
      │  sampling:  S centres by farthest point sampling        ──► new_xyz (B, S, 3)
      │  grouping:  ball query, the first K points (in index order) within radius r of each
      │             centre; short balls are padded with their first point ──► idx (B, S, K)
      │  PointNet:  [xyz_j − c, feats_j] → shared MLP → max over the K  ──► (B, S, C')
      ▼
    new_xyz (B, S, 3), new_feats (B, S, C')

The last level groups all points into one (``group all``): the global feature (B, C_out).

Departures from the published SSG classification network (``pointnet2_cls_ssg``):
- FPS and ball query are pure PyTorch (the release uses CUDA kernels); FPS starts from
  point 0 as the kernel does (``pointvl.model.point_bert.farthest_point_sample``).
- Radii: the published 0.2, 0.4 are for 1,024-point clouds in the unit sphere; ours live in
  the cube [-0.5, 0.5]^3, so the paper profile halves them (0.1, 0.2). The CPU profiles feed
  256 points (twice the spacing) and keep 0.2, 0.4 so that a ball holds about as many
  points. Centres, group sizes and widths are parameters; the CPU profiles use fewer and
  narrower ones (``pointvl.baselines.regressor.DEFAULT_SIZES``).
- Normals, when given (C = 6), are the initial point features, as in the paper's
  ModelNet-with-normals runs. No multi-scale / multi-resolution grouping (that is MSG/MRG).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from pointvl.baselines.pointnet import shared_mlp
from pointvl.model.point_bert import farthest_point_sample


class SALevel(NamedTuple):
    """One set-abstraction level: S centres, ball radius r, K points per ball, MLP widths."""

    num_centres: int
    radius: float
    points_per_group: int
    widths: tuple[int, ...]


# Published SSG classification net (radii already halved for the [-0.5, 0.5]^3 cube).
PUBLISHED_LEVELS = (SALevel(512, 0.1, 32, (64, 64, 128)), SALevel(128, 0.2, 64, (128, 128, 256)))
PUBLISHED_GLOBAL = (256, 512, 1024)


@torch.no_grad()
def ball_query(xyz: torch.Tensor, centres: torch.Tensor, radius: float, k: int) -> torch.Tensor:
    """Indices (B, S, K) of the first K points (by index) with |x_j − c| <= r, padded.

    xyz (B, N, 3), centres (B, S, 3). A ball with fewer than K points repeats its first
    (lowest-index) point, as the release's ``ball_query`` kernel. A centre drawn from the
    cloud always has itself in its ball, so no ball is empty.
    """
    n = xyz.shape[1]
    dist2 = torch.cdist(centres, xyz).square()  # (B, S, N)
    order = torch.arange(n, device=xyz.device).expand_as(dist2)  # (B, S, N)
    # key_j = j if |x_j − c|^2 <= r^2 else N: the K smallest keys are the first K in the ball
    key = torch.where(dist2 <= radius**2, order, torch.full_like(order, n))  # (B, S, N)
    idx = key.topk(min(k, n), dim=-1, largest=False).values  # (B, S, K), ascending
    first = idx[..., :1].expand_as(idx)  # (B, S, K)
    return torch.where(idx == n, first, idx)  # (B, S, K)


def gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, N, D), idx (B, ...) -> x at idx (B, ..., D)."""
    batch = torch.arange(x.shape[0], device=x.device).view(-1, *([1] * (idx.ndim - 1)))
    return x[batch, idx]


class SetAbstraction(nn.Module):
    """One SA level (sampling, grouping, PointNet); see the module docstring."""

    def __init__(self, level: SALevel, in_features: int):
        super().__init__()
        self.level = level
        self.mlp = shared_mlp(3 + in_features, level.widths, dims=2)

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor | None):
        s, r, k = self.level.num_centres, self.level.radius, self.level.points_per_group
        centre_idx = farthest_point_sample(xyz.detach(), min(s, xyz.shape[1]))  # (B, S)
        centres = gather(xyz, centre_idx)  # (B, S, 3)
        idx = ball_query(xyz.detach(), centres.detach(), r, k)  # (B, S, K)
        grouped = gather(xyz, idx) - centres[:, :, None]  # (B, S, K, 3), local frame
        if feats is not None:
            grouped = torch.cat([grouped, gather(feats, idx)], dim=-1)  # (B, S, K, 3 + D)
        x = self.mlp(grouped.permute(0, 3, 1, 2))  # (B, C', S, K)
        return centres, x.max(dim=-1).values.transpose(1, 2)  # (B, S, 3), (B, S, C')


class PointNet2Encoder(nn.Module):
    """points (B, N, C) -> global feature (B, global_widths[-1]) by SA levels + group-all."""

    def __init__(
        self,
        in_channels: int = 6,
        levels: Sequence[SALevel] = PUBLISHED_LEVELS,
        global_widths: Sequence[int] = PUBLISHED_GLOBAL,
    ):
        super().__init__()
        if in_channels < 3:
            raise ValueError(f"in_channels={in_channels}: expected >= 3 (xyz first)")
        self.in_channels = in_channels
        self.out_dim = int(global_widths[-1])
        feats, sa = in_channels - 3, []
        for level in levels:
            sa.append(SetAbstraction(SALevel(*level), feats))
            feats = level[3][-1]
        self.levels = nn.ModuleList(sa)
        # group all: [xyz, feats] of every remaining centre -> shared MLP -> max
        self.global_mlp = shared_mlp(3 + feats, global_widths)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        if points.ndim != 3 or points.shape[-1] < self.in_channels:
            raise ValueError(
                f"points: expected shape (B, N, >={self.in_channels}), got {tuple(points.shape)}"
            )
        xyz = points[..., :3].contiguous()  # (B, N, 3)
        feats = points[..., 3 : self.in_channels] if self.in_channels > 3 else None  # (B, N, D)
        for sa in self.levels:
            xyz, feats = sa(xyz, feats)  # (B, S, 3), (B, S, C')
        x = xyz if feats is None else torch.cat([xyz, feats], dim=-1)  # (B, S, 3 + C')
        x = x.transpose(1, 2)  # (B, 3 + C', S)
        return self.global_mlp(x).max(dim=-1).values  # (B, C_out)
