"""Shared fixtures: a canonical sample, its target text, and a locally trained BPE tokenizer."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("OPEN3D_DISABLE_WEB_VISUALIZER", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("POINTVL_PROFILE", "smoke")


def make_sample(seed: int = 0, num_keypoints: int = 16) -> dict:
    """A random but well-formed continuous ground-truth sample (pixels / object frame)."""
    from pointvl.demo import random_geometry

    rng = np.random.default_rng(seed)
    geometry = random_geometry(rng, num_keypoints, px_origin=(0, 100), px_size=(20, 120))
    return {
        "answer": str(rng.choice(["chair", "table", "mug", "lamp"])),
        "description": "a small object with four legs and a flat top",
        **geometry,
    }


@pytest.fixture(scope="session")
def sample() -> dict:
    return make_sample(0)


@pytest.fixture(scope="session")
def bpe_tokenizer():
    """A byte-level BPE trained on target JSONs: it splits numbers irregularly."""
    from pointvl.model.tokenizer import train_bpe_tokenizer
    from pointvl.schema import format_target

    texts = [format_target(make_sample(s)) for s in range(200)]
    texts += ["Here is the answer:", "```json", "Sure, the object is a chair."]
    return train_bpe_tokenizer(texts, vocab_size=400)


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory):
    """A small built benchmark (16 train / 8 test objects), shared by the stage tests."""
    from pointvl.data.build import BuildDatasetConfig, build

    out = tmp_path_factory.mktemp("data") / "smoke"
    cfg = BuildDatasetConfig(
        train_count=16, test_count=8, num_points=128, image_size=48, workers=1, shard_size=8
    )
    build(cfg, out, 100, "smoke", progress=False)
    return out
