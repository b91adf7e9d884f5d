"""(points, image, question) [+ target] -> policy inputs; batch collation with left padding.

One prompt layout for every profile (Qwen2.5's chat format)::

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n
    <|im_start|>user\\n<|point_pad|> x P<|vision_start|><|image_pad|> x I<|vision_end|>{question}<|im_end|>\\n
    <|im_start|>assistant\\n                                  <- prompt ends here
    {target JSON}<|im_end|>                                  <- completion (labels), Eq. (5)

- P = G + 1 point tokens (CLS + groups), I = image tokens after Qwen's 2x2 merge.
- Images go through ``Qwen2VLImageProcessorPil`` (no torchvision), after a resize to
  ``image_size`` x ``image_size`` so every sample has the same I.
- ``labels`` are -100 everywhere but the completion tokens (Eq. 5 sums over the target only).
- Prompt and completion are tokenized separately and concatenated, so the label boundary is
  exact whatever the BPE merges would have done across it.
- ``collate`` left-pads (generation appends on the right); padded positions have
  attention_mask 0 and label -100.

It is a transformers ``ProcessorMixin``: ``save_pretrained`` writes the tokenizer and
``processor_config.json`` (``processor_class``: PointVLProcessor, the sizes above), and
``AutoProcessor.from_pretrained(folder)`` returns a ``PointVLProcessor`` once ``pointvl.model``
is imported (it registers the class for ``PointVLConfig``; a checkpoint holds no code, so the
Auto classes cannot find ours without that import: no ``auto_map``, see ``policy.py``).
Folders written before (``pointvl_processor.json`` only) still load with
``PointVLProcessor.from_pretrained``; new ones carry both files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoProcessor, AutoTokenizer, ProcessorMixin
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from pointvl.model.config import PointVLConfig
from pointvl.model.tokenizer import CHAT_TEMPLATE, special_token_ids

POINT_TOKEN = "<|point_pad|>"
IMAGE_TOKEN = "<|image_pad|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IM_END = "<|im_end|>"
IGNORE_INDEX = -100
PROCESSOR_FILE = "pointvl_processor.json"
"""The settings file of processors saved before the ``ProcessorMixin`` version (still read)."""


class PointVLProcessor(ProcessorMixin):
    """Turns one sample into ``input_ids``, ``attention_mask``, ``labels``, ``pixel_values``,
    ``image_grid_thw``, ``mm_token_type_ids`` and ``point_clouds``; ``collate`` batches them."""

    tokenizer_class = "AutoTokenizer"

    def __init__(
        self,
        tokenizer,
        num_point_tokens: int,
        num_points: int,
        point_channels: int = 6,
        image_size: int = 112,
        patch_size: int = 14,
        merge_size: int = 2,
        temporal_patch_size: int = 2,
        chat_template: str | None = None,
    ):
        if image_size % (patch_size * merge_size):
            raise ValueError(
                f"image_size={image_size}: expected a multiple of {patch_size * merge_size}"
            )
        if tokenizer.chat_template is None:
            tokenizer.chat_template = CHAT_TEMPLATE
        if POINT_TOKEN not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": [POINT_TOKEN]})
        super().__init__(tokenizer, chat_template=chat_template)
        self.token_ids = special_token_ids(tokenizer)
        self.num_point_tokens = num_point_tokens
        self.num_points = num_points
        self.point_channels = point_channels
        self.image_size = image_size
        self.patch_size, self.merge_size = patch_size, merge_size
        self.temporal_patch_size = temporal_patch_size
        pixels = image_size * image_size
        self.image_processor = Qwen2VLImageProcessorPil(
            min_pixels=pixels,
            max_pixels=pixels,
            patch_size=patch_size,
            merge_size=merge_size,
            temporal_patch_size=temporal_patch_size,
        )
        self.num_image_tokens = (image_size // patch_size) ** 2 // merge_size**2

    @classmethod
    def for_model(cls, tokenizer, config, image_size: int = 112) -> PointVLProcessor:
        """Sizes from a ``PointVLConfig``; ``image_size`` from ``ModelConfig.image_size``."""
        pc = config.point_config
        vc = config.vision_config
        return cls(
            tokenizer,
            num_point_tokens=pc.num_tokens,
            num_points=pc.num_points,
            point_channels=max(pc.in_channels, 3),
            image_size=image_size,
            patch_size=vc.patch_size,
            merge_size=vc.spatial_merge_size,
            temporal_patch_size=vc.temporal_patch_size,
        )

    # ------------------------------------------------------------------ one sample
    def prompt_text(self, question: str) -> str:
        """The chat prompt with the point and image placeholders expanded."""
        user = (
            POINT_TOKEN * self.num_point_tokens
            + VISION_START
            + IMAGE_TOKEN * self.num_image_tokens
            + VISION_END
            + question
        )
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )

    def prepare_points(self, points) -> torch.Tensor:
        """(N', >= C) array -> (num_points, C) float32: evenly strided subsample or wrap-pad."""
        pts = torch.as_tensor(np.asarray(points), dtype=torch.float32)
        if pts.ndim != 2 or pts.shape[1] < 3:
            raise ValueError(f"points: expected shape (N, 3 + extra), got {tuple(pts.shape)}")
        if pts.shape[1] < self.point_channels:
            raise ValueError(
                f"points: {pts.shape[1]} channels, the encoder needs {self.point_channels}"
            )
        pts = pts[:, : self.point_channels]
        n = pts.shape[0]
        if n != self.num_points:
            idx = (
                torch.arange(self.num_points) * n // self.num_points
                if n > self.num_points
                else (torch.arange(self.num_points) % n)
            )
            pts = pts[idx]
        return pts  # (N, C)

    def prepare_image(self, image) -> dict[str, torch.Tensor]:
        """uint8 (H, W, 3) or PIL -> pixel_values (patches, 3*2*14*14), image_grid_thw (1, 3)."""
        if not isinstance(image, Image.Image):
            arr = np.asarray(image)
            if arr.ndim != 3 or arr.shape[-1] != 3:
                raise ValueError(f"image: expected (H, W, 3) uint8, got {arr.shape}")
            image = Image.fromarray(arr.astype(np.uint8))
        image = image.convert("RGB").resize((self.image_size, self.image_size), Image.BICUBIC)
        out = self.image_processor(images=[image], return_tensors="pt")
        return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}

    def __call__(self, points, image, question: str, target: str | None = None) -> dict:
        """One sample -> unbatched tensors; ``labels`` only when ``target`` is given."""
        prompt_ids = self.tokenizer(self.prompt_text(question), add_special_tokens=False)[
            "input_ids"
        ]
        ids = list(prompt_ids)
        labels = None
        if target is not None:
            completion = self.tokenizer(target + IM_END, add_special_tokens=False)["input_ids"]
            ids += completion
            labels = [IGNORE_INDEX] * len(prompt_ids) + list(completion)
        input_ids = torch.tensor(ids, dtype=torch.long)  # (L,)
        out = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "mm_token_type_ids": (input_ids == self.token_ids["image_token_id"]).int(),
            "point_clouds": self.prepare_points(points),
            "prompt_length": len(prompt_ids),
            **self.prepare_image(image),
        }
        if labels is not None:
            out["labels"] = torch.tensor(labels, dtype=torch.long)
        return out

    # ------------------------------------------------------------------ batches
    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        """Left-pad a list of ``__call__`` outputs into a batch (pad id, mask 0, label -100)."""
        pad_id = self.token_ids["pad_token_id"]
        L = max(f["input_ids"].shape[0] for f in features)

        def left_pad(key: str, value: int) -> torch.Tensor:
            rows = []
            for f in features:
                x = f[key]
                rows.append(torch.cat([x.new_full((L - x.shape[0],), value), x]))
            return torch.stack(rows)  # (B, L)

        batch = {
            "input_ids": left_pad("input_ids", pad_id),
            "attention_mask": left_pad("attention_mask", 0),
            "mm_token_type_ids": left_pad("mm_token_type_ids", 0),
            "point_clouds": torch.stack([f["point_clouds"] for f in features]),  # (B, N, C)
            "pixel_values": torch.cat([f["pixel_values"] for f in features]),
            "image_grid_thw": torch.cat([f["image_grid_thw"] for f in features]),  # (B, 3)
        }
        if all("labels" in f for f in features):
            batch["labels"] = left_pad("labels", IGNORE_INDEX)
        return batch

    def batch(self, samples: list[dict], with_target: bool = True) -> dict[str, torch.Tensor]:
        """Dataset-style dicts (``points``, ``image``, ``question``, ``target``) -> a batch."""
        return self.collate(
            [
                self(
                    s["points"], s["image"], s["question"], s.get("target") if with_target else None
                )
                for s in samples
            ]
        )

    def decode_completions(self, sequences: torch.Tensor, prompt_length: int) -> list[str]:
        """Generated ids (B, L + T) -> completion texts (special tokens dropped)."""
        return self.tokenizer.batch_decode(sequences[:, prompt_length:], skip_special_tokens=True)

    @property
    def eos_token_ids(self) -> list[int]:
        """Generation stops at ``<|im_end|>`` (end of turn) or the tokenizer's eos."""
        return [self.token_ids["im_end_token_id"], self.token_ids["eos_token_id"]]

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> list[str]:
        """The tokenizer and ``processor_config.json`` (``ProcessorMixin``), plus the same
        sizes in ``pointvl_processor.json`` for readers of the older layout."""
        Path(save_directory).mkdir(parents=True, exist_ok=True)
        files = super().save_pretrained(str(save_directory), **kwargs)
        settings = {k: v for k, v in self.to_dict().items() if k != "processor_class"}
        (Path(save_directory) / PROCESSOR_FILE).write_text(json.dumps(settings, indent=2))
        return [*files, str(Path(save_directory) / PROCESSOR_FILE)]

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs) -> PointVLProcessor:
        """A saved processor: ``processor_config.json`` (``ProcessorMixin``), or the settings
        file of an older checkpoint (``pointvl_processor.json``) beside its tokenizer."""
        from transformers.utils import PROCESSOR_NAME

        legacy = Path(path) / PROCESSOR_FILE
        if not (Path(path) / PROCESSOR_NAME).is_file() and legacy.is_file():
            settings = json.loads(legacy.read_text())
            return cls(AutoTokenizer.from_pretrained(str(path)), **settings)
        return super().from_pretrained(str(path), **kwargs)


# AutoProcessor.from_pretrained(folder) -> PointVLProcessor (after ``import pointvl.model``)
AutoProcessor.register(PointVLConfig, PointVLProcessor, exist_ok=True)
