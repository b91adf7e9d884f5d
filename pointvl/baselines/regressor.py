"""Point-only regressors of Table 2: a backbone's global feature -> bbox3d and kpts3d.

    points (B, N, C) ──backbone──► f (B, F) ──MLP──► [c (3), s̃ (3), u (M, 3)]
        box    b̂ = [c − s/2, c + s/2],   s = softplus(s̃)          (B, 6)  min xyz, max xyz
        kpts   p̂_i = c + (s/2) ⊙ u_i                               (B, M, 3)

The box is a centre and a positive size, so min <= max by construction; the keypoints are
in box-normalized coordinates (u in [-1, 1]^3 inside the predicted box). Both live in the
normalized object frame, the frame of ``bbox3d`` / ``kpts3d`` in the dataset.

Loss [reconstruction: the paper does not say how its point-only baselines were trained]::

    L = L_box + L_kpts,   L_box = (1/6) |b̂ − b|_1
    hungarian:  L_kpts = min_σ (1/3M) Σ_i |p̂_i − p_σ(i)|_1        (σ by linear_sum_assignment)
    chamfer:    L_kpts = ½ [(1/M) Σ_i min_j d_ij + (1/M) Σ_j min_i d_ij],  d_ij = (1/3)|p̂_i − p_j|_1

The keypoints are an unordered set (16 points by farthest point sampling), so both keypoint
losses are invariant to the order of the ground-truth keypoints and zero at the ground truth.
The Hungarian cost is the loss itself (per-coordinate L1), so L_kpts is the minimum over
permutations; the assignment is computed without gradient, as in DETR.

Backbones (``build_baseline``): ``pointnet`` (``pointnet.py``), ``pointnet2`` (SSG,
``pointnet2.py``) and ``pointbert``: the policy's point encoder
(``pointvl.model.point_bert.PointBertEncoder``, the ``model`` section's size with the group
count and size of ``baselines.sizes.pointbert``), trained from scratch (no pre-trained
weights exist for the CPU sizes), read out as [CLS, max over the group tokens] like
Point-BERT's fine-tuning head. The head is a plain MLP (published heads: BN + dropout).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from pointvl.baselines.pointnet import PointNetEncoder
from pointvl.baselines.pointnet2 import PointNet2Encoder, SALevel
from pointvl.model.point_bert import PointBertConfig, PointBertEncoder, tiny_point_bert_config

BASELINES = ("pointnet", "pointnet2", "pointbert")
KEYPOINT_LOSSES = ("hungarian", "chamfer")
HEAD_WIDTHS = (256, 128)

# Backbone sizes of the CPU profiles (params.yaml ``baselines.sizes``; the published sizes
# are in pointnet.py / pointnet2.py and ``overrides.paper``), for 256-point clouds.
DEFAULT_SIZES: dict[str, dict] = {
    # PointNet: the published 64-64-64-128-1024 shared MLP, narrowed
    "pointnet": {"widths": [64, 128, 256]},
    # PointNet++ SSG: 2 SA levels [centres, radius, K, widths] + group-all, ~1/8 the centres
    # of the published net (for 1/4 the points) and 1/4 its widths
    "pointnet2": {
        "levels": [[64, 0.2, 16, [32, 32, 64]], [16, 0.4, 16, [64, 64, 128]]],
        "global_widths": [128, 256],
    },
    # Point-BERT: overrides of the policy's encoder size (the ``model`` section)
    "pointbert": {"num_groups": 16, "points_per_group": 16},
}
SIZE_KEYS = {
    "pointnet": ("widths",),
    "pointnet2": ("levels", "global_widths"),
    "pointbert": (
        "num_points", "num_groups", "points_per_group", "in_channels", "encoder_dims",
        "encoder_widths", "hidden_size", "num_hidden_layers", "num_attention_heads",
        "mlp_ratio", "pos_hidden_size",
    ),
}  # fmt: skip


def point_bert_config(base: PointBertConfig, **overrides) -> PointBertConfig:
    """``base`` with some of its size fields (``SIZE_KEYS["pointbert"]``) replaced."""
    unknown = sorted(set(overrides) - set(SIZE_KEYS["pointbert"]))
    if unknown:
        raise ValueError(
            f"Point-BERT size: unknown key(s) {unknown}; expected {SIZE_KEYS['pointbert']}"
        )
    values = {k: getattr(base, k) for k in SIZE_KEYS["pointbert"]}
    return PointBertConfig(**(values | overrides))


# ----------------------------------------------------------------------------- backbones
class PointBertBackbone(nn.Module):
    """Point-BERT encoder -> global feature [CLS, max_g token_g] (B, 2C)."""

    def __init__(self, config: PointBertConfig):
        super().__init__()
        self.encoder = PointBertEncoder(config)
        self.in_channels = config.in_channels
        self.out_dim = 2 * config.hidden_size

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        tokens, _ = self.encoder(points)  # (B, 1 + G, C)
        return torch.cat([tokens[:, 0], tokens[:, 1:].max(dim=1).values], dim=-1)  # (B, 2C)


# ----------------------------------------------------------------------------- head
class BoxKeypointHead(nn.Module):
    """f (B, F) -> box (B, 6) as centre ± softplus size / 2, keypoints (B, M, 3) in the box."""

    def __init__(self, in_dim: int, num_keypoints: int, hidden: Sequence[int] = HEAD_WIDTHS):
        super().__init__()
        self.num_keypoints = num_keypoints
        layers, c = [], in_dim
        for w in hidden:
            layers += [nn.Linear(c, w), nn.ReLU(inplace=True)]
            c = w
        self.mlp = nn.Sequential(*layers)
        self.out = nn.Linear(c, 6 + 3 * num_keypoints)

    @torch.no_grad()
    def init_box_bias(self, boxes: torch.Tensor) -> None:
        """Start at the mean training box: bias = [mean centre, softplus^-1(mean size)]."""
        centre = 0.5 * (boxes[:, :3] + boxes[:, 3:]).mean(0)  # (3,)
        size = (boxes[:, 3:] - boxes[:, :3]).mean(0).clamp_min(1e-3)  # (3,)
        self.out.bias[:3] = centre
        # softplus^-1(y) = y + log(1 − exp(−y))
        self.out.bias[3:6] = size + torch.log(-torch.expm1(-size))

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self.out(self.mlp(feats))  # (B, 6 + 3M)
        centre, size = raw[:, :3], F.softplus(raw[:, 3:6])  # (B, 3), (B, 3)
        # b̂ = [c − s/2, c + s/2]
        box = torch.cat([centre - 0.5 * size, centre + 0.5 * size], dim=-1)  # (B, 6)
        u = raw[:, 6:].reshape(-1, self.num_keypoints, 3)  # (B, M, 3)
        # p̂_i = c + (s/2) ⊙ u_i
        kpts = centre[:, None] + 0.5 * size[:, None] * u  # (B, M, 3)
        return box, kpts


class PointRegressor(nn.Module):
    """A point backbone and the box/keypoint head: points (B, N, C) -> (B, 6), (B, M, 3)."""

    def __init__(self, backbone: nn.Module, num_keypoints: int):
        super().__init__()
        self.backbone = backbone
        self.head = BoxKeypointHead(backbone.out_dim, num_keypoints)

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.backbone(points))


def build_baseline(
    name: str,
    num_keypoints: int = 16,
    in_channels: int = 6,
    size: Mapping | None = None,
    point_config: PointBertConfig | None = None,
) -> PointRegressor:
    """``pointnet`` | ``pointnet2`` | ``pointbert`` regressor; ``size``: its backbone size.

    ``size`` defaults to ``DEFAULT_SIZES[name]`` (keys: ``SIZE_KEYS[name]``). Point-BERT is
    ``point_config`` (default ``tiny_point_bert_config(in_channels=in_channels)``) with the
    ``size`` fields replaced.
    """
    if name not in BASELINES:
        raise ValueError(f"baseline name={name!r}: expected one of {BASELINES}")
    # PointNet / PointNet++: missing keys take the defaults; Point-BERT: the base config's
    size = dict(DEFAULT_SIZES[name] if size is None else size)
    if name != "pointbert":
        size = DEFAULT_SIZES[name] | size
    unknown = sorted(set(size) - set(SIZE_KEYS[name]))
    if unknown:
        raise ValueError(f"{name} size: unknown key(s) {unknown}; expected {SIZE_KEYS[name]}")
    if name == "pointnet":
        backbone = PointNetEncoder(in_channels, **size)
    elif name == "pointnet2":
        levels = [SALevel(int(s), float(r), int(k), tuple(w)) for s, r, k, w in size["levels"]]
        backbone = PointNet2Encoder(in_channels, levels, size["global_widths"])
    else:
        base = point_config or tiny_point_bert_config(in_channels=in_channels)
        backbone = PointBertBackbone(point_bert_config(base, **size))
    return PointRegressor(backbone, num_keypoints)


# ----------------------------------------------------------------------------- losses
def _check_sets(pred: torch.Tensor, gt: torch.Tensor) -> None:
    if pred.ndim != 3 or pred.shape != gt.shape or pred.shape[-1] != 3:
        raise ValueError(
            f"keypoints: expected pred and gt of shape (B, M, 3), got "
            f"{tuple(pred.shape)} and {tuple(gt.shape)}"
        )


def pairwise_l1(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """d_ij = (1/3) |p̂_i − p_j|_1: pred (B, M, 3), gt (B, M, 3) -> (B, M, M)."""
    return (pred[:, :, None] - gt[:, None]).abs().mean(-1)  # (B, M, M)


def hungarian_match(cost: torch.Tensor) -> torch.Tensor:
    """σ (B, M): for each sample, the GT index matched to prediction i (min total cost)."""
    c = cost.detach().double().cpu().numpy()  # (B, M, M)
    perms = [linear_sum_assignment(ci)[1] for ci in c]
    return torch.as_tensor(np.stack(perms), dtype=torch.long, device=cost.device)  # (B, M)


def hungarian_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """min_σ (1/M) Σ_i d_{i σ(i)} averaged over the batch (pred, gt: (B, M, 3))."""
    _check_sets(pred, gt)
    cost = pairwise_l1(pred, gt)  # (B, M, M)
    sigma = hungarian_match(cost)  # (B, M)
    # L = (1/M) Σ_i d_{i σ(i)}
    return cost.gather(2, sigma[..., None]).squeeze(-1).mean()


def chamfer_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """½ [(1/M) Σ_i min_j d_ij + (1/M) Σ_j min_i d_ij] averaged over the batch."""
    _check_sets(pred, gt)
    cost = pairwise_l1(pred, gt)  # (B, M, M)
    return 0.5 * (cost.min(2).values.mean() + cost.min(1).values.mean())


KEYPOINT_LOSS_FNS = {"hungarian": hungarian_loss, "chamfer": chamfer_loss}


def regression_loss(
    box: torch.Tensor,
    kpts: torch.Tensor,
    gt_box: torch.Tensor,
    gt_kpts: torch.Tensor,
    keypoint_loss: str = "hungarian",
) -> dict[str, torch.Tensor]:
    """{"loss/total", "loss/box", "loss/kpts"}: L = (1/6)|b̂ − b|_1 + L_kpts (see module doc)."""
    if keypoint_loss not in KEYPOINT_LOSS_FNS:
        raise ValueError(f"keypoint_loss={keypoint_loss!r}: expected one of {KEYPOINT_LOSSES}")
    if box.shape != gt_box.shape or box.shape[-1] != 6:
        raise ValueError(
            f"box: expected pred and gt of shape (B, 6), got {tuple(box.shape)}, "
            f"{tuple(gt_box.shape)}"
        )
    # L_box = (1/6) |b̂ − b|_1
    l_box = (box - gt_box).abs().mean()
    l_kpts = KEYPOINT_LOSS_FNS[keypoint_loss](kpts, gt_kpts)
    return {"loss/total": l_box + l_kpts, "loss/box": l_box, "loss/kpts": l_kpts}
