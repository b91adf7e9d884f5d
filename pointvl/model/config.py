"""Model configuration: the HF config of the policy and the ``model`` section of params.yaml.

``PointVLConfig`` *is* a ``Qwen2_5_VLConfig`` (text + vision sub-configs, token ids) with a
Point-BERT sub-config, the fusion settings and the freezing policy added, so that
``AutoConfig`` / ``AutoModelForCausalLM`` rebuild the policy by path (TRL's reference model).
It is derived from the typed ``model`` section (``ModelConfig.policy_fields``); its own
defaults are ``ModelConfig``'s, and the ``paper`` size is read from params.yaml's paper
profile (``paper_model_config``), never typed a second time. A saved config whose
Point-BERT part says ``group_size`` (before the rename to ``points_per_group``) still loads.

Two sizes, one code path (``ModelConfig.size``):

- ``paper``: Qwen2.5-VL-3B-Instruct (loaded by path or hub id) + Point-BERT as published
  (8,192 points -> 512 groups of 32, width 384, depth 12, 6 heads). Sec. 4.2: Point-BERT is
  frozen and the cross-attention (+ projector) is trained. [reconstruction] The prose does not
  say whether the LM and the vision tower train; we train the LM and freeze the vision tower.
- ``tiny``: everything random-init from configs (~1 M parameters): a 2-layer, 128-wide
  Qwen2.5-VL and a 2-layer, 128-wide Point-BERT on 1,024 points. **Departure**: there is no
  pre-trained Point-BERT for it, so the tiny profile trains every block, the point encoder
  included (``freeze_point_encoder=False``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Annotated

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig, Qwen2_5_VLConfig

from pointvl.config import ConfigError, OneOf, PositiveInt, Range
from pointvl.model.point_bert import PointBertConfig, tiny_point_bert_config

SIZES = ("tiny", "paper")
PAPER_BACKBONE = "Qwen/Qwen2.5-VL-3B-Instruct"


@dataclasses.dataclass
class ModelConfig:
    """Section ``model`` of params.yaml: which policy to build and what it trains."""

    size: Annotated[str, OneOf(*SIZES)] = "tiny"
    """``tiny`` (random init from configs) or ``paper`` (Qwen2.5-VL-3B + published Point-BERT)."""
    backbone: str = PAPER_BACKBONE
    """paper only: local path or hub id of Qwen2.5-VL-3B-Instruct (tiny ignores it)."""
    point_bert_checkpoint: str | None = None
    """paper only: released Point-BERT checkpoint (.pth) loaded into the point encoder."""
    image_size: Annotated[int, Range(ge=28)] = 112
    """Images are resized to image_size^2 (a multiple of 28) before the vision tower
    (params: ``${shared.image_size}``, the size build_dataset renders)."""
    num_points: PositiveInt = 1024
    """N: points per cloud fed to Point-BERT (params: ``${shared.num_points}``)."""
    num_groups: PositiveInt = 64
    """Point-BERT groups, FPS centres (point tokens = num_groups + 1)."""
    points_per_group: PositiveInt = 32
    """K: nearest neighbours per group (was ``group_size``)."""
    point_in_channels: Annotated[int, OneOf(3, 6)] = 6
    """3 = xyz (published weights), 6 = xyz + normals."""
    point_encoder_widths: list[int] = dataclasses.field(default_factory=lambda: [32, 64, 128])
    """Point-BERT mini-PointNet inner widths (paper / published: [128, 256, 512])."""
    point_hidden_size: PositiveInt = 128
    """Point-BERT width (paper: 384)."""
    point_layers: PositiveInt = 2
    """Point-BERT depth (paper: 12)."""
    point_heads: PositiveInt = 4
    """Point-BERT heads (paper: 6)."""
    lm_hidden_size: PositiveInt = 128
    """tiny only: LM width."""
    lm_layers: PositiveInt = 2
    """tiny only: LM depth."""
    lm_heads: PositiveInt = 4
    """tiny only: LM attention heads (head_dim = lm_hidden_size / lm_heads)."""
    lm_kv_heads: PositiveInt = 2
    """tiny only: LM key/value heads."""
    lm_intermediate_size: PositiveInt = 256
    """tiny only: LM MLP width."""
    vision_depth: PositiveInt = 2
    """tiny only: vision tower depth."""
    vision_hidden_size: PositiveInt = 64
    """tiny only: vision tower width."""
    vision_heads: PositiveInt = 2
    """tiny only: vision tower heads."""
    fusion_num_heads: PositiveInt = 4
    """Cross-attention heads, Eq. (2) (must divide point_hidden_size)."""
    fusion_layernorm: bool = True
    """LayerNorm after the residual of Eq. (3)."""
    freeze_point_encoder: bool = False
    """tiny: False (no pre-trained Point-BERT, it trains in SFT); paper: True (Sec. 4.2)."""
    freeze_vision: bool = False
    """tiny: False; paper: True [reconstruction]."""
    freeze_language_model: bool = False
    """False in both profiles."""

    def validate(self) -> None:
        if self.image_size % 28:
            raise ConfigError(f"model.image_size={self.image_size}: expected a multiple of 28")
        if self.point_hidden_size % self.fusion_num_heads:
            raise ConfigError(
                f"model.fusion_num_heads={self.fusion_num_heads}: must divide "
                f"point_hidden_size={self.point_hidden_size}"
            )
        if self.point_hidden_size % self.point_heads:
            raise ConfigError(
                f"model.point_heads={self.point_heads}: must divide point_hidden_size"
            )
        if not (self.points_per_group <= self.num_points and self.num_groups <= self.num_points):
            raise ConfigError(
                f"model.num_groups={self.num_groups} / points_per_group={self.points_per_group}: "
                f"expected <= num_points={self.num_points}"
            )
        head_dim = self.lm_hidden_size // self.lm_heads
        if self.size == "tiny" and (head_dim % 8 or self.lm_heads % self.lm_kv_heads):
            raise ConfigError(
                f"model.lm_hidden_size/lm_heads={head_dim}: expected a multiple of 8, and "
                f"lm_kv_heads={self.lm_kv_heads} dividing lm_heads={self.lm_heads}"
            )

    def policy_fields(self) -> dict:
        """The HF config fields this section sets (``PointVLConfig``): Point-BERT's size, the
        fusion and the freezing policy; the tiny and paper builders both use it."""
        return dict(
            point_config=self.point_config(),
            fusion_num_heads=self.fusion_num_heads,
            fusion_layernorm=self.fusion_layernorm,
            freeze_point_encoder=self.freeze_point_encoder,
            freeze_vision=self.freeze_vision,
            freeze_language_model=self.freeze_language_model,
        )

    def point_config(self) -> PointBertConfig:
        return PointBertConfig(
            num_points=self.num_points,
            num_groups=self.num_groups,
            points_per_group=self.points_per_group,
            in_channels=self.point_in_channels,
            encoder_dims=256 if self.size == "paper" else 128,
            encoder_widths=tuple(self.point_encoder_widths),
            hidden_size=self.point_hidden_size,
            num_hidden_layers=self.point_layers,
            num_attention_heads=self.point_heads,
            pos_hidden_size=128 if self.size == "paper" else 64,
        )


_DEFAULTS = ModelConfig()
"""The one set of defaults: ``PointVLConfig``'s fields take theirs from here."""


@strict
class PointVLConfig(Qwen2_5_VLConfig):
    """Qwen2.5-VL config + Point-BERT (``point_config``) + fusion + freezing policy."""

    model_type = "pointvl"
    sub_configs_defaults = {
        **Qwen2_5_VLConfig.sub_configs_defaults,
        "point_config": PointBertConfig,
    }

    point_config: dict | PreTrainedConfig | None = None
    """Point-BERT size (``PointBertConfig``); None = the published size."""
    point_token_id: int = 151665
    """Id of ``<|point_pad|>``: one placeholder per point token (CLS + G) in the prompt."""
    fusion_num_heads: int = _DEFAULTS.fusion_num_heads
    """Heads of the geometry-guided cross-attention, Eq. (2) [reconstruction: multi-head]."""
    fusion_layernorm: bool = _DEFAULTS.fusion_layernorm
    """LayerNorm after the residual of Eq. (3) [reconstruction]."""
    freeze_point_encoder: bool = _DEFAULTS.freeze_point_encoder
    """Point-BERT frozen (paper, Sec. 4.2); False for tiny (no pre-trained encoder)."""
    freeze_vision: bool = _DEFAULTS.freeze_vision
    """Qwen2.5-VL vision tower frozen [reconstruction for paper]; False for tiny."""
    freeze_language_model: bool = _DEFAULTS.freeze_language_model
    """Qwen2.5-VL language model (+ embeddings, lm_head) frozen; False in both sizes."""

    @property
    def num_point_tokens(self) -> int:
        """Placeholders per sample: CLS + G groups."""
        return self.point_config.num_tokens


# Qwen2.5-VL-3B-Instruct's config.json, written out (nothing can be downloaded here). Checked
# against transformers' Qwen2_5_VL{Text,Vision}Config fields; the values are the 3B release's.
QWEN25_VL_3B_TEXT = dict(
    vocab_size=151936,
    hidden_size=2048,
    intermediate_size=11008,
    num_hidden_layers=36,
    num_attention_heads=16,
    num_key_value_heads=2,
    hidden_act="silu",
    max_position_embeddings=128000,
    rms_norm_eps=1e-6,
    use_sliding_window=False,
    sliding_window=32768,
    max_window_layers=70,
    rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6},
    bos_token_id=151643,
    eos_token_id=151645,
)
QWEN25_VL_3B_VISION = dict(
    depth=32,
    hidden_size=1280,
    intermediate_size=3420,
    num_heads=16,
    hidden_act="silu",
    in_channels=3,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    window_size=112,
    out_hidden_size=2048,
    fullatt_block_indexes=[7, 15, 23, 31],
    tokens_per_second=2,
)
QWEN25_VL_3B_TOKENS = dict(
    image_token_id=151655,
    video_token_id=151656,
    vision_start_token_id=151652,
    vision_end_token_id=151653,
    tie_word_embeddings=True,
)


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim / 2 rotary frequencies over (t, h, w) like Qwen's [16, 24, 24] for 128."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def tiny_pointvl_config(token_ids: dict[str, int], vocab_size: int, cfg: ModelConfig | None = None):
    """Random-init ``tiny`` config (~1 M parameters). ``token_ids`` from ``special_token_ids``."""
    cfg = cfg or ModelConfig()
    cfg.validate()
    head_dim = cfg.lm_hidden_size // cfg.lm_heads
    text = dict(
        vocab_size=vocab_size,
        hidden_size=cfg.lm_hidden_size,
        intermediate_size=cfg.lm_intermediate_size,
        num_hidden_layers=cfg.lm_layers,
        num_attention_heads=cfg.lm_heads,
        num_key_value_heads=cfg.lm_kv_heads,
        max_position_embeddings=4096,
        rope_parameters={
            "rope_type": "default",
            "mrope_section": _mrope_section(head_dim),
            "rope_theta": 10000.0,
        },
        bos_token_id=token_ids["bos_token_id"],
        eos_token_id=token_ids["eos_token_id"],
        pad_token_id=token_ids["pad_token_id"],
    )
    vision = dict(
        depth=cfg.vision_depth,
        hidden_size=cfg.vision_hidden_size,
        intermediate_size=2 * cfg.vision_hidden_size,
        num_heads=cfg.vision_heads,
        out_hidden_size=cfg.lm_hidden_size,
        fullatt_block_indexes=[cfg.vision_depth - 1],
        window_size=56,
    )
    return PointVLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=token_ids["image_token_id"],
        video_token_id=token_ids["video_token_id"],
        vision_start_token_id=token_ids["vision_start_token_id"],
        vision_end_token_id=token_ids["vision_end_token_id"],
        point_token_id=token_ids["point_token_id"],
        tie_word_embeddings=False,
        **cfg.policy_fields(),
    )


def paper_pointvl_config(
    backbone_config: Qwen2_5_VLConfig | None = None,
    cfg: ModelConfig | None = None,
    point_token_id: int = 151665,
) -> PointVLConfig:
    """``paper`` config: Qwen2.5-VL-3B (its own config if given, else the values above) +
    published Point-BERT. ``point_token_id`` 151665 is the first id after Qwen's specials
    (inside the 151,936-row embedding, so no resize is needed)."""
    cfg = cfg or paper_model_config()
    if backbone_config is not None:
        base = backbone_config.to_dict()
        for key in ("model_type", "architectures", "transformers_version"):
            base.pop(key, None)
    else:
        base = dict(text_config=QWEN25_VL_3B_TEXT, vision_config=QWEN25_VL_3B_VISION)
        base.update(QWEN25_VL_3B_TOKENS)
    base.update(point_token_id=point_token_id, **cfg.policy_fields())
    return PointVLConfig(**base)


def paper_model_config(params: str | os.PathLike | None = None) -> ModelConfig:
    """The ``paper`` profile's ``model`` section, read from params.yaml (one source)."""
    from pointvl.config import load_section

    return load_section(params, "model", ModelConfig, "paper")


__all__ = [
    "ModelConfig",
    "PointVLConfig",
    "PointBertConfig",
    "tiny_point_bert_config",
    "tiny_pointvl_config",
    "paper_pointvl_config",
    "paper_model_config",
    "QWEN25_VL_3B_TEXT",
    "QWEN25_VL_3B_VISION",
]
