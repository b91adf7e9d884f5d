"""Point-BERT's point encoder (Yu et al., 2022), as published: the H_p of Eq. (2).

    points (B, N, 3 + extra)
      │  FPS: G centres            ──► centers (B, G, 3)
      │  KNN: K nearest per centre ──► groups  (B, G, K, 3 + extra), xyz relative to the centre
      ▼
    mini-PointNet (`encoder`): conv1x1 → BN → ReLU → conv1x1, max-pool, concat global,
                               conv1x1 → BN → ReLU → conv1x1, max-pool   ──► (B, G, encoder_dims)
    `reduce_dim` (Linear)                                              ──► (B, G, C)
    [CLS] + tokens, positional MLP of the centres (`pos_embed`), `cls_pos` for CLS
    `blocks`: depth x pre-norm ViT block, the position added before every block
    `norm` (LayerNorm)                                                 ──► H_p (B, 1 + G, C)

Module and parameter names follow the released code (``models/Point_BERT.py``:
``PointTransformer``; ``models/dvae.py``: ``Encoder``, ``Group``) so that a released
state dict loads after stripping its prefixes (``load_point_bert_state_dict``).

Departures from the released code, all value-preserving for the published weights:
- FPS and KNN are pure PyTorch (the release uses the ``pointnet2_ops`` / ``knn_cuda`` CUDA
  kernels). FPS starts from point 0 as ``pointnet2_ops.furthest_point_sample`` does.
- ``in_channels`` may exceed 3: extra per-point channels (our normals) are appended to the
  centred xyz of each group, as PointLLM does for colours. The published weights take xyz
  only (``in_channels=3``); the policy then feeds only the first 3 columns.
- The classification head (``cls_head_finetune``) and the pre-training heads are not built:
  the policy uses every output token (CLS + G groups), as PointLLM does.
- Dropout / drop-path are omitted (0 in inference and in our frozen use).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import PreTrainedConfig


@strict
class PointBertConfig(PreTrainedConfig):
    """Size of the Point-BERT encoder. Defaults are the published size (PointLLM's 8k variant).

    ``tiny_point_bert_config()`` gives the 1k-point, 2-layer size the CPU profiles use.
    """

    model_type = "pointvl_point_bert"
    base_config_key = "point_config"

    num_points: int = 8192
    """N: points per cloud the encoder is sized for (FPS picks `num_groups` of them)."""
    num_groups: int = 512
    """G: FPS centres = point tokens (plus one CLS token)."""
    points_per_group: int = 32
    """K: nearest neighbours per centre (saved configs before the rename call it group_size)."""
    in_channels: int = 3
    """Per-point input channels: 3 = xyz (published weights); 6 = xyz + normals."""
    encoder_dims: int = 256
    """Width of the mini-PointNet group embedding (published: 256)."""
    encoder_widths: list[int] | tuple[int, ...] = (128, 256, 512)
    """Mini-PointNet inner widths (c1, c2, c3): conv in->c1->c2, then 2*c2->c3->encoder_dims
    (published: 128, 256, 512; the tiny size narrows them, ~16x fewer FLOPs)."""
    hidden_size: int = 384
    """C: transformer width (published: 384)."""
    num_hidden_layers: int = 12
    """Transformer depth (published: 12)."""
    num_attention_heads: int = 6
    """Heads per transformer block (published: 6)."""
    mlp_ratio: float = 4.0
    """MLP hidden width / C (published: 4)."""
    pos_hidden_size: int = 128
    """Hidden width of the positional MLP on the centres (published: 128)."""

    @property
    def num_tokens(self) -> int:
        """Point tokens handed to the fusion: CLS + G groups."""
        return self.num_groups + 1

    def __post_init__(self, **kwargs):
        old = kwargs.pop("group_size", None)  # checkpoints saved before the rename
        if old is not None:
            self.points_per_group = old
        super().__post_init__(**kwargs)

    def validate_sizes(self) -> None:
        """Run by ``@strict`` at construction (any ``validate_*`` method is a class validator)."""
        if self.points_per_group > self.num_points or self.num_groups > self.num_points:
            raise ValueError(
                f"point_config: num_groups={self.num_groups} and "
                f"points_per_group={self.points_per_group} "
                f"must be <= num_points={self.num_points}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"point_config.hidden_size={self.hidden_size} must be divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if len(self.encoder_widths) != 3:
            raise ValueError(f"point_config.encoder_widths={self.encoder_widths}: expected 3 ints")
        if self.in_channels < 3:
            raise ValueError(f"point_config.in_channels={self.in_channels}: expected >= 3 (xyz)")


def tiny_point_bert_config(**overrides) -> PointBertConfig:
    """1,024 points -> 64 groups of 32, width 128, depth 2, 4 heads (CPU profiles)."""
    values = dict(
        num_points=1024,
        num_groups=64,
        points_per_group=32,
        in_channels=6,
        encoder_dims=128,
        encoder_widths=(32, 64, 128),
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        pos_hidden_size=64,
    )
    values.update(overrides)
    return PointBertConfig(**values)


# ---------------------------------------------------------------------------------------------
# Grouping: farthest point sampling + k nearest neighbours


@torch.no_grad()
def farthest_point_sample(xyz: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Indices (B, S) of `num_samples` farthest points, starting from point 0 (as pointnet2_ops)."""
    if xyz.ndim != 3 or xyz.shape[-1] != 3:
        raise ValueError(f"xyz: expected shape (B, N, 3), got {tuple(xyz.shape)}")
    B, N, _ = xyz.shape
    if num_samples > N:
        raise ValueError(f"cannot sample {num_samples} centres from {N} points")
    idx = torch.zeros(B, num_samples, dtype=torch.long, device=xyz.device)  # (B, S)
    min_dist = torch.full((B, N), float("inf"), dtype=xyz.dtype, device=xyz.device)  # (B, N)
    farthest = torch.zeros(B, dtype=torch.long, device=xyz.device)  # (B,)
    batch = torch.arange(B, device=xyz.device)
    for i in range(num_samples):
        idx[:, i] = farthest
        centre = xyz[batch, farthest]  # (B, 3)
        dist = ((xyz - centre[:, None]) ** 2).sum(-1)  # (B, N)
        min_dist = torch.minimum(min_dist, dist)
        farthest = min_dist.argmax(-1)  # (B,)
    return idx


def group_points(points: torch.Tensor, num_groups: int, points_per_group: int):
    """Eq. (2) input: FPS centres and their KNN groups, xyz relative to the centre.

    points (B, N, D) with D >= 3 (xyz first). Returns ``neighborhood`` (B, G, K, D) whose first 3
    channels are centred xyz and the rest are the raw extra channels, and ``centers`` (B, G, 3).
    """
    if points.ndim != 3 or points.shape[-1] < 3:
        raise ValueError(f"points: expected shape (B, N, >=3), got {tuple(points.shape)}")
    xyz = points[..., :3]  # (B, N, 3)
    batch = torch.arange(points.shape[0], device=points.device)[:, None]  # (B, 1)
    # the grouping is selection, not learning: in fp32 whatever the model's dtype (in bf16,
    # 8-bit mantissas would tie distances and change which points are centres and neighbours)
    xyz32 = xyz.detach().float()  # (B, N, 3)
    center_idx = farthest_point_sample(xyz32, num_groups)  # (B, G)
    centers = xyz[batch, center_idx]  # (B, G, 3)
    with torch.no_grad():
        dist = torch.cdist(xyz32[batch, center_idx], xyz32)  # (B, G, N)
        knn_idx = dist.topk(points_per_group, dim=-1, largest=False).indices  # (B, G, K)
    neighborhood = points[batch[..., None], knn_idx]  # (B, G, K, D)
    neighborhood = torch.cat(
        [neighborhood[..., :3] - centers[:, :, None], neighborhood[..., 3:]], dim=-1
    )  # (B, G, K, D)
    return neighborhood, centers


# ---------------------------------------------------------------------------------------------
# Blocks (names as released)


class Encoder(nn.Module):
    """Mini-PointNet group embedding (``models/dvae.py: Encoder``); invariant to point order."""

    def __init__(self, encoder_channel: int, in_channels: int = 3, widths: tuple = (128, 256, 512)):
        super().__init__()
        c1, c2, c3 = widths
        self.encoder_channel = encoder_channel
        self.first_conv = nn.Sequential(
            nn.Conv1d(in_channels, c1, 1),
            nn.BatchNorm1d(c1),
            nn.ReLU(inplace=True),
            nn.Conv1d(c1, c2, 1),
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(2 * c2, c3, 1),
            nn.BatchNorm1d(c3),
            nn.ReLU(inplace=True),
            nn.Conv1d(c3, encoder_channel, 1),
        )

    def forward(self, point_groups: torch.Tensor) -> torch.Tensor:
        B, G, K, D = point_groups.shape
        x = point_groups.reshape(B * G, K, D).transpose(2, 1)  # (BG, D, K)
        feature = self.first_conv(x)  # (BG, c2, K)
        feature_global = feature.max(dim=2, keepdim=True).values  # (BG, c2, 1)
        feature = torch.cat([feature_global.expand(-1, -1, K), feature], dim=1)  # (BG, 2c2, K)
        feature = self.second_conv(feature)  # (BG, E, K)
        return feature.max(dim=2).values.reshape(B, G, self.encoder_channel)  # (B, G, E)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention, ``qkv`` without bias as released."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        qkv = self.qkv(x).reshape(B, L, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x (B, h, L, C/h)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, L, C/h)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))  # (B, L, C)


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerEncoder(nn.Module):
    """The position embedding is added before every block, as released."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.blocks = nn.ModuleList([Block(dim, num_heads, mlp_ratio) for _ in range(depth)])

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x + pos)
        return x


class PointBertEncoder(nn.Module):
    """Point-BERT ``PointTransformer`` without its classification head: points -> H_p."""

    def __init__(self, config: PointBertConfig):
        super().__init__()
        self.config = config
        C = config.hidden_size
        self.encoder = Encoder(
            config.encoder_dims, config.in_channels, tuple(config.encoder_widths)
        )
        self.reduce_dim = nn.Linear(config.encoder_dims, C)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        self.cls_pos = nn.Parameter(torch.randn(1, 1, C) * 0.02)
        self.pos_embed = nn.Sequential(
            nn.Linear(3, config.pos_hidden_size), nn.GELU(), nn.Linear(config.pos_hidden_size, C)
        )
        self.blocks = TransformerEncoder(
            C, config.num_hidden_layers, config.num_attention_heads, config.mlp_ratio
        )
        self.norm = nn.LayerNorm(C)

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points (B, N, >= in_channels) -> tokens H_p (B, 1 + G, C) and centres (B, G, 3).

        Columns beyond ``in_channels`` are ignored (a 3-channel encoder sees xyz only).
        """
        cfg = self.config
        if points.ndim != 3 or points.shape[-1] < cfg.in_channels:
            raise ValueError(
                f"points: expected shape (B, N, >={cfg.in_channels}), got {tuple(points.shape)}"
            )
        dtype = self.reduce_dim.weight.dtype
        points = points[..., : cfg.in_channels].float()  # (B, N, D) grouped in fp32
        neighborhood, centers = group_points(points, cfg.num_groups, cfg.points_per_group)
        neighborhood, centers = neighborhood.to(dtype), centers.to(dtype)  # the weights' dtype
        tokens = self.reduce_dim(self.encoder(neighborhood))  # (B, G, C)
        B = tokens.shape[0]
        x = torch.cat([self.cls_token.expand(B, -1, -1), tokens], dim=1)  # (B, 1+G, C)
        pos = torch.cat([self.cls_pos.expand(B, -1, -1), self.pos_embed(centers)], dim=1)
        x = self.norm(self.blocks(x, pos))  # (B, 1+G, C)
        return x, centers


# ---------------------------------------------------------------------------------------------
# Released checkpoints -> our names

# Keys of the pre-training checkpoint that belong to other networks (momentum encoder, dVAE
# tokenizer, MoCo queue) and are dropped without being reported as unexpected.
_IGNORED_PREFIXES = ("transformer_k.", "dvae.", "queue", "transformer_q.cls_head")


@dataclasses.dataclass
class LoadReport:
    """What ``load_point_bert_state_dict`` did: loaded, missing, unexpected and ignored keys."""

    loaded: list[str]
    missing: list[str]
    unexpected: list[str]
    ignored: list[str]


def map_point_bert_keys(state_dict: dict) -> tuple[dict, list[str]]:
    """Released Point-BERT key names -> ours (as ``PointTransformer.load_model_from_ckpt``).

    Accepts the checkpoint dict itself (``{"base_model": ...}`` or ``{"model": ...}``) or a bare
    state dict. Strips ``module.`` (DataParallel), then ``transformer_q.`` (pre-training
    checkpoint: the query encoder) or ``base_model.``. Returns (mapped, ignored_keys).
    """
    for outer in ("base_model", "model", "state_dict"):
        if outer in state_dict and isinstance(state_dict[outer], dict):
            state_dict = state_dict[outer]
            break
    mapped, ignored = {}, []
    for key, value in state_dict.items():
        k = key.replace("module.", "", 1) if key.startswith("module.") else key
        if k.startswith(_IGNORED_PREFIXES):
            ignored.append(key)
            continue
        for prefix in ("transformer_q.", "base_model.", "point_backbone."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
                break
        mapped[k] = value
    return mapped, ignored


def read_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint file as a dict of tensors and plain values, without running its code.

    ``.safetensors`` via safetensors; anything else via ``torch.load(weights_only=True)``,
    which refuses pickled objects other than tensors, containers and numbers (a malicious
    ``.pth`` cannot execute code). Such a file is a ``DataError`` naming it.
    """
    from pointvl.config import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"Point-BERT checkpoint {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0][:300]
        raise DataError(
            f"Point-BERT checkpoint {path}: holds objects other than tensors and plain values, "
            f"refused (weights_only=True: {first}); convert it to a plain state dict or "
            "safetensors with a trusted copy of its code"
        ) from None


def load_point_bert_state_dict(
    encoder: PointBertEncoder, checkpoint: dict | str | os.PathLike, strict: bool = False
) -> LoadReport:
    """Load a released Point-BERT checkpoint (path or dict) into ``encoder``; report the keys.

    A key whose shape differs from ours raises ``ValueError`` (a size mismatch is never silent).
    ``strict=True`` also raises when a key is missing or unexpected. A path is read with
    ``read_checkpoint`` (safetensors, or ``torch.load(weights_only=True)``: no code runs).
    """
    if not isinstance(checkpoint, dict):
        checkpoint = read_checkpoint(checkpoint)
    mapped, ignored = map_point_bert_keys(checkpoint)
    own = encoder.state_dict()
    unexpected = sorted(k for k in mapped if k not in own)
    for k in sorted(set(mapped) & set(own)):
        if tuple(mapped[k].shape) != tuple(own[k].shape):
            raise ValueError(
                f"Point-BERT checkpoint key {k!r}: shape {tuple(mapped[k].shape)}, "
                f"expected {tuple(own[k].shape)} (check point_config sizes)"
            )
    result = encoder.load_state_dict({k: v for k, v in mapped.items() if k in own}, strict=False)
    report = LoadReport(
        loaded=sorted(k for k in mapped if k in own),
        missing=sorted(result.missing_keys),
        unexpected=unexpected,
        ignored=sorted(ignored),
    )
    if strict and (report.missing or report.unexpected):
        raise ValueError(
            f"Point-BERT checkpoint: missing {report.missing}, unexpected {report.unexpected}"
        )
    return report
