"""The hybrid point-image policy pi_theta (Sec. 3.1): Qwen2.5-VL + Point-BERT + Eqs. (2)-(4).

    prompt:  <|im_start|>user\\n<|point_pad|> x P  <|vision_start|><|image_pad|> x I<|vision_end|> q ...
                         │                                   │
    point_clouds (B,N,D) ─► Point-BERT ─► H_p (B,P,d_p)      │ pixel_values ─► Qwen vision tower
                                           │  Eq. (2) queries ◄── H_i (B,I,d_lm) keys/values
                                           ▼  Eq. (3) H_f = LN(H_p + Z)
                                           ▼  Eq. (4) E = H_f W_proj  (B,P,d_lm)
    embeddings: E at the <|point_pad|> slots, H_i at the <|image_pad|> slots (Qwen's own path)
    → Qwen2.5-VL language model (M-RoPE: image tokens 3D positions, point tokens text positions)

``PointVLForConditionalGeneration`` subclasses ``Qwen2_5_VLForConditionalGeneration``: the
backbone's parameter names, generation (``generate``), M-RoPE and caching are inherited
unchanged; ``forward`` and ``generate`` take one more keyword, ``point_clouds`` (B, N, D).
Point tokens are text-type positions for M-RoPE (``mm_token_type_ids`` 0)
[reconstruction: the paper does not say how point tokens are positioned].

The freezing policy (``freeze_*`` in the config) is applied at construction, so a model rebuilt
by path (TRL's reference model, ``from_pretrained``) freezes the same blocks. A frozen point
encoder also stays in eval mode (its BatchNorm statistics never move).
"""

from __future__ import annotations

import os

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    Qwen2_5_VLForConditionalGeneration,
)
from transformers import initialization as init
from transformers.conversion_mapping import (
    get_checkpoint_conversion_mapping,
    register_checkpoint_conversion_mapping,
)
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VLModel,
    Qwen2_5_VLPreTrainedModel,
)

from pointvl.model.config import PointVLConfig
from pointvl.model.fusion import GeometryGuidedCrossAttention, PointProjector
from pointvl.model.point_bert import LoadReport, PointBertEncoder, load_point_bert_state_dict

_HEAD_ONLY_KWARGS = frozenset(
    {"labels", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts", "logits_to_keep"}
)
"""Arguments of the full forward (LM head, loss, videos) that ``return_hidden`` leaves out."""


class PointVLForConditionalGeneration(Qwen2_5_VLForConditionalGeneration):
    """Qwen2.5-VL with Point-BERT point tokens fused with image tokens (Eqs. 2-4).

    Blocks (attribute names; ``param_groups()`` lists them): ``point_encoder`` (Point-BERT),
    ``fusion`` (Eqs. 2-3), ``projector`` (Eq. 4), ``model.visual`` (vision tower),
    ``model.language_model`` + ``lm_head`` (LM).
    """

    config_class = PointVLConfig
    config: PointVLConfig
    _no_split_modules = ["Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock", "Block"]

    def __init__(self, config: PointVLConfig):
        # Skip Qwen2_5_VLForConditionalGeneration.__init__ (it would post_init before our blocks)
        Qwen2_5_VLPreTrainedModel.__init__(self, config)
        self.model = Qwen2_5_VLModel(config)
        self.lm_head = torch.nn.Linear(
            config.text_config.hidden_size, config.text_config.vocab_size, bias=False
        )
        pc = config.point_config
        self.point_encoder = PointBertEncoder(pc)
        self.fusion = GeometryGuidedCrossAttention(
            pc.hidden_size,
            config.vision_config.out_hidden_size,
            config.fusion_num_heads,
            config.fusion_layernorm,
        )
        self.projector = PointProjector(pc.hidden_size, config.text_config.hidden_size)
        self.post_init()
        self.apply_freezing()

    # ------------------------------------------------------------------ blocks and freezing
    def param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """Parameters per block: point_encoder, fusion, projector, vision, language_model."""
        lm = list(self.model.language_model.parameters())
        lm_ids = {id(p) for p in lm}
        lm += [p for p in self.lm_head.parameters() if id(p) not in lm_ids]  # lm_head may be tied
        return {
            "point_encoder": list(self.point_encoder.parameters()),
            "fusion": list(self.fusion.parameters()),
            "projector": list(self.projector.parameters()),
            "vision": list(self.model.visual.parameters()),
            "language_model": lm,
        }

    def apply_freezing(self) -> None:
        """requires_grad from the config's ``freeze_*`` flags; fusion and projector always train."""
        frozen = {
            "point_encoder": self.config.freeze_point_encoder,
            "vision": self.config.freeze_vision,
            "language_model": self.config.freeze_language_model,
        }
        for name, params in self.param_groups().items():
            for p in params:
                p.requires_grad_(not frozen.get(name, False))
        if self.config.freeze_point_encoder:
            self.point_encoder.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.freeze_point_encoder:
            self.point_encoder.eval()  # frozen BatchNorm keeps its published statistics
        return self

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, PointBertEncoder):
            init.zeros_(module.cls_token)
            init.normal_(module.cls_pos, mean=0.0, std=0.02)

    # ------------------------------------------------------------------ point tokens
    def get_point_features(
        self,
        point_clouds: torch.Tensor,
        image_tokens: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """point_clouds (B, N, D) [+ image tokens (B, I, d_lm), mask (B, I)] -> E (B, P, d_lm)."""
        h_p, _ = self.point_encoder(point_clouds)  # (B, P, d_p)
        if image_tokens is not None:
            image_tokens = image_tokens.to(h_p.dtype)
        h_f = self.fusion(h_p, image_tokens, image_mask)  # (B, P, d_p)  Eqs. (2)-(3)
        return self.projector(h_f)  # (B, P, d_lm)  Eq. (4)

    @staticmethod
    def _pad_image_tokens(per_image: tuple[torch.Tensor, ...], batch_size: int):
        """Per-image token tensors (one image per sample) -> (B, I_max, d) and mask (B, I_max)."""
        if len(per_image) != batch_size:
            raise ValueError(
                f"PointVL expects exactly one image per sample: got {len(per_image)} images "
                f"for a batch of {batch_size}"
            )
        n_max = max(t.shape[0] for t in per_image)
        d = per_image[0].shape[-1]
        tokens = per_image[0].new_zeros(batch_size, n_max, d)  # (B, I, d)
        mask = torch.zeros(batch_size, n_max, dtype=torch.bool, device=tokens.device)  # (B, I)
        for b, t in enumerate(per_image):
            tokens[b, : t.shape[0]] = t
            mask[b, : t.shape[0]] = True
        return tokens, mask

    def _point_slots(self, input_ids, point_clouds: torch.Tensor, sample_index) -> torch.Tensor:
        """Check the point inputs against ``input_ids`` (B, L) and return the
        ``<|point_pad|>`` slots (B, L) bool; ``ValueError`` names what does not fit."""
        if input_ids is None:
            raise ValueError("point_clouds needs input_ids (to find the <|point_pad|> slots)")
        B = input_ids.shape[0]
        U = B if sample_index is None else int(sample_index.max()) + 1
        if sample_index is not None and tuple(sample_index.shape) != (B,):
            raise ValueError(f"sample_index: expected ({B},), got {tuple(sample_index.shape)}")
        if point_clouds.ndim != 3 or point_clouds.shape[0] < U:
            raise ValueError(f"point_clouds: expected ({U}, N, D), got {tuple(point_clouds.shape)}")
        point_slots = input_ids == self.config.point_token_id  # (B, L)
        per_row = point_slots.sum(-1)  # (B,)
        P = self.config.num_point_tokens
        if not bool((per_row == P).all()):
            raise ValueError(
                f"each row must hold {P} <|point_pad|> tokens (CLS + G groups), "
                f"got {per_row.tolist()}"
            )
        return point_slots

    def _encode_image_once(self, pixel_values, image_grid_thw, mm_encoder_outputs):
        """Run the vision tower (unless ``mm_encoder_outputs`` holds the image already) and hand
        its output to Qwen in ``mm_encoder_outputs["image"]``, so the image is encoded once for
        Qwen and the fusion. Returns (pixel_values, None once encoded; mm_encoder_outputs)."""
        if pixel_values is not None and (mm_encoder_outputs or {}).get("image") is None:
            image_out = self.model.get_image_features(
                pixel_values, image_grid_thw, return_dict=True
            )
            mm_encoder_outputs = {**(mm_encoder_outputs or {}), "image": image_out}
            pixel_values = None  # encoded once; Qwen scatters mm_encoder_outputs["image"]
        return pixel_values, mm_encoder_outputs

    def _row_point_embeds(self, point_clouds, mm_encoder_outputs, sample_index, image_grid_thw):
        """E (Eqs. 2-4) of the U samples of ``point_clouds`` (U, N, D) fused with their image
        tokens, then (with ``sample_index`` (B,)) gathered per row: E, images and
        ``image_grid_thw`` go from U samples to B rows. Returns (E (B, P, d_lm), image_grid_thw)."""
        image_tokens = image_mask = None
        if (mm_encoder_outputs or {}).get("image") is not None:
            per_image = tuple(mm_encoder_outputs["image"].pooler_output)  # U or B images
            image_tokens, image_mask = self._pad_image_tokens(per_image, point_clouds.shape[0])
        point_embeds = self.get_point_features(point_clouds, image_tokens, image_mask)
        if sample_index is not None:  # U samples -> B rows (images, positions, points)
            rows = sample_index.tolist()
            mm_encoder_outputs["image"].pooler_output = tuple(per_image[i] for i in rows)
            image_grid_thw = image_grid_thw[sample_index]  # (B, 3)
            point_embeds = point_embeds[sample_index]  # (B, P, d_lm)
        return point_embeds, image_grid_thw

    def _embed_points(
        self, input_ids, inputs_embeds, pixel_values, image_grid_thw, mm_encoder_outputs,
        point_clouds, sample_index,
    ):  # fmt: skip
        """The input embeddings (B, L, d_lm) with E (Eq. 4) at the ``<|point_pad|>`` slots.

        Returns (inputs_embeds, pixel_values, image_grid_thw, mm_encoder_outputs) as Qwen's
        forward takes them next (the image already encoded, rows expanded by ``sample_index``).
        """
        point_slots = self._point_slots(input_ids, point_clouds, sample_index)  # (B, L)
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)  # (B, L, d_lm)
        pixel_values, mm_encoder_outputs = self._encode_image_once(
            pixel_values, image_grid_thw, mm_encoder_outputs
        )
        point_embeds, image_grid_thw = self._row_point_embeds(
            point_clouds, mm_encoder_outputs, sample_index, image_grid_thw
        )  # (B, P, d_lm), (B, 3)
        inputs_embeds = inputs_embeds.masked_scatter(
            point_slots[..., None], point_embeds.to(inputs_embeds.dtype)
        )  # (B, L, d_lm), rows in order: row b receives point_embeds[b]
        return inputs_embeds, pixel_values, image_grid_thw, mm_encoder_outputs

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        mm_token_type_ids: torch.IntTensor | None = None,
        second_per_grid_ts: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        mm_encoder_outputs: dict | None = None,
        point_clouds: torch.Tensor | None = None,
        sample_index: torch.LongTensor | None = None,
        return_hidden: bool = False,
        **kwargs,
    ):
        """Qwen2.5-VL's forward plus ``point_clouds`` (B, N, D): xyz (+ normals) per sample.

        With ``point_clouds``, ``input_ids`` must hold exactly P = G + 1 ``<|point_pad|>``
        tokens per row; their embeddings are replaced by E (Eq. 4). The image (if any) is
        encoded once and used both by Qwen (at ``<|image_pad|>``) and by the fusion (Eq. 2).

        ``sample_index`` (B,): rows share samples (the G completions of one prompt in RL):
        ``point_clouds`` (U, N, D), ``pixel_values`` and ``image_grid_thw`` (U, 3) hold the U
        distinct samples and row b uses sample ``sample_index[b]``. Point-BERT, the fusion and
        the vision tower then run U times instead of B; the result equals the forward on the
        repeated inputs (tested), gradients included.

        ``return_hidden``: return the language model's output (``last_hidden_state`` (B, L, d))
        without the LM head, for log-probs computed in chunks (``pointvl.train.logprobs``).
        """
        if point_clouds is not None:
            inputs_embeds, pixel_values, image_grid_thw, mm_encoder_outputs = self._embed_points(
                input_ids, inputs_embeds, pixel_values, image_grid_thw, mm_encoder_outputs,
                point_clouds, sample_index,
            )  # fmt: skip
        if mm_token_type_ids is None and input_ids is not None and image_grid_thw is not None:
            mm_token_type_ids = self.mm_token_type_ids(input_ids)  # (B, L)
        inputs = dict(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            cache=cache, inputs_embeds=inputs_embeds, labels=labels, use_cache=use_cache,
            pixel_values=pixel_values, pixel_values_videos=pixel_values_videos,
            image_grid_thw=image_grid_thw, video_grid_thw=video_grid_thw,
            mm_token_type_ids=mm_token_type_ids, second_per_grid_ts=second_per_grid_ts,
            logits_to_keep=logits_to_keep, mm_encoder_outputs=mm_encoder_outputs, **kwargs,
        )  # fmt: skip
        if return_hidden:  # the language model alone: what the LM head would take
            return self.model(**{k: v for k, v in inputs.items() if k not in _HEAD_ONLY_KWARGS})
        return super().forward(**inputs)

    def mm_token_type_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) token types for Qwen's M-RoPE: 1 at ``<|image_pad|>``, 0 elsewhere (text and
        ``<|point_pad|>`` tokens take text positions). The one rule used by ``forward`` and by
        generation, so sampled and scored completions see the same positions."""
        return (input_ids == self.config.image_token_id).int()  # (B, L)

    def _prepare_position_ids_for_generation(self, inputs_tensor, model_kwargs):
        """Qwen2.5-VL computes the 3-D M-RoPE positions of a prompt (and ``rope_deltas``) here,
        before the first forward, from ``mm_token_type_ids``; without them it falls back to
        1-D text positions. Callers that pass only ``input_ids`` + image inputs (TRL's
        ``GRPOTrainer``) would then sample from other positions than ``forward`` scores with, so
        the token types are filled in here, in the live ``model_kwargs`` that the decoding
        steps extend."""
        input_ids = model_kwargs.get("input_ids", inputs_tensor)
        is_ids = (
            input_ids is not None and input_ids.dim() == 2 and not input_ids.is_floating_point()
        )
        if (
            model_kwargs.get("mm_token_type_ids") is None
            and is_ids
            and model_kwargs.get("image_grid_thw") is not None
        ):
            model_kwargs["mm_token_type_ids"] = self.mm_token_type_ids(input_ids)
        return super()._prepare_position_ids_for_generation(inputs_tensor, model_kwargs)

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool = False, **kwargs):
        """Like pixel_values, point clouds are consumed at prefill only (then they live in the cache)."""
        inputs = super().prepare_inputs_for_generation(
            *args, is_first_iteration=is_first_iteration, **kwargs
        )
        if not is_first_iteration and kwargs.get("use_cache", True):
            inputs.pop("point_clouds", None)
        return inputs

    # ------------------------------------------------------------------ paper path
    @classmethod
    def from_backbone(
        cls,
        backbone: str | os.PathLike,
        config: PointVLConfig,
        point_bert_checkpoint: str | os.PathLike | dict | None = None,
        **kwargs,
    ) -> tuple[PointVLForConditionalGeneration, LoadReport | None]:
        """Load pre-trained Qwen2.5-VL weights (path or hub id) into a new PointVL policy;
        the point encoder comes from a released Point-BERT checkpoint (or random init), the
        fusion and projector are random init. Returns (model, Point-BERT load report)."""
        model = cls.from_pretrained(backbone, config=config, **kwargs)
        report = None
        if point_bert_checkpoint is not None:
            report = load_point_bert_state_dict(model.point_encoder, point_bert_checkpoint)
        model.apply_freezing()
        return model, report


# Auto classes: TRL rebuilds the reference model via AutoConfig + AutoModelForCausalLM.
# A checkpoint folder holds weights and configs but no code, so its config has no ``auto_map``
# (remote code would mean copying this package into every checkpoint): ``import pointvl.model``
# first, then AutoConfig / AutoModelForCausalLM / AutoModelForImageTextToText / AutoProcessor
# .from_pretrained(folder) return our classes (the processor registers in processor.py).
AutoConfig.register("pointvl", PointVLConfig, exist_ok=True)
AutoModelForCausalLM.register(PointVLConfig, PointVLForConditionalGeneration, exist_ok=True)
AutoModelForImageTextToText.register(PointVLConfig, PointVLForConditionalGeneration, exist_ok=True)

# Released Qwen2.5-VL checkpoints use the legacy key layout (``model.layers.*``, ``visual.*``);
# reuse transformers' own renaming for them. Our own saves already use the new layout, which
# these patterns leave untouched.
try:
    register_checkpoint_conversion_mapping(
        "PointVLForConditionalGeneration",
        get_checkpoint_conversion_mapping("Qwen2VLForConditionalGeneration") or [],
    )
except ValueError:  # already registered (module re-imported)
    pass


def build_tiny_policy(tokenizer, cfg=None, seed: int = 0, attn_implementation: str | None = None):
    """``tiny`` policy + processor from a (locally trained) tokenizer, random init.

    ``cfg`` is a ``ModelConfig`` (the ``model`` section of params.yaml); default: tiny values.
    ``attn_implementation``: ``launch.attn_implementation`` (None: transformers' default).
    Returns (model, processor).
    """
    from pointvl.model.config import ModelConfig, tiny_pointvl_config
    from pointvl.model.processor import PointVLProcessor
    from pointvl.model.tokenizer import special_token_ids

    cfg = cfg or ModelConfig()
    processor_tok = tokenizer
    if "<|point_pad|>" not in processor_tok.get_vocab():
        processor_tok.add_special_tokens({"additional_special_tokens": ["<|point_pad|>"]})
    config = tiny_pointvl_config(special_token_ids(processor_tok), len(processor_tok), cfg)
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = PointVLForConditionalGeneration(config)
    processor = PointVLProcessor.for_model(processor_tok, config, image_size=cfg.image_size)
    return model, processor


def build_policy(cfg, tokenizer, seed: int = 0, attn_implementation: str | None = None):
    """The policy a stage trains, from the ``model`` section (``ModelConfig``) and a tokenizer.

    ``tiny``: ``build_tiny_policy`` (random init seeded with ``seed``). ``paper``: Qwen2.5-VL-3B
    from ``cfg.backbone`` (path or hub id) + Point-BERT (``cfg.point_bert_checkpoint`` if
    given) via ``from_backbone``; the tokenizer must already hold ``<|point_pad|>`` (the
    ``train_tokenizer`` stage adds it). Weights are float32 (``pointvl.train.launch.MASTER_DTYPE``)
    whatever the checkpoint's dtype: bf16 is compute only (autocast, or DeepSpeed's bf16 with
    its own fp32 master copy), so AdamW never updates bf16 weights. Returns (model, processor).
    """
    from pointvl.model.config import paper_pointvl_config
    from pointvl.model.processor import PointVLProcessor
    from pointvl.train.launch import MASTER_DTYPE

    cfg.validate()
    if cfg.size == "tiny":
        return build_tiny_policy(tokenizer, cfg, seed=seed, attn_implementation=attn_implementation)
    backbone_config = AutoConfig.from_pretrained(cfg.backbone)
    point_token_id = tokenizer.convert_tokens_to_ids("<|point_pad|>")
    config = paper_pointvl_config(backbone_config, cfg, point_token_id=point_token_id)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model, _ = PointVLForConditionalGeneration.from_backbone(
        cfg.backbone, config, cfg.point_bert_checkpoint, dtype=MASTER_DTYPE, **kwargs
    )
    if point_token_id >= model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    processor = PointVLProcessor.for_model(tokenizer, config, image_size=cfg.image_size)
    return model, processor
