"""A real learning test: the tiny policy overfits 8 samples (Eq. 5) and then *generates*
parsable JSON with the right boxes. All 8 prompts share one question, so the policy can only
tell the samples apart through the point cloud and the image."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pointvl.demo import random_geometry
from pointvl.model import ModelConfig, train_bpe_tokenizer
from pointvl.model.policy import build_tiny_policy
from pointvl.schema import format_target, parse_output

M = 4  # keypoints per object (short targets keep the test fast)
QUESTION = "Locate the object."


def informative_sample(seed: int) -> dict:
    """Points drawn inside the 3D box, the 2D box painted into the image: inputs determine boxes."""
    rng = np.random.default_rng(seed)
    geometry = random_geometry(rng, M, px_origin=(0, 20), px_size=(15, 30))
    lo, hi = geometry["bbox3d"][:3], geometry["bbox3d"][3:]
    target = format_target({"answer": "box", "description": "a box", **geometry}, num_keypoints=M)
    xyz = rng.uniform(lo, hi, (256, 3))
    normals = rng.normal(size=(256, 3))
    image = np.zeros((56, 56, 3), dtype=np.uint8)
    x1, y1, x2, y2 = np.round(geometry["bbox2d"]).astype(int)
    image[y1:y2, x1:x2] = 255
    return {
        "points": np.c_[xyz, normals].astype(np.float32),
        "image": image,
        "question": QUESTION,
        "target": target,
    }


@pytest.mark.slow
def test_tiny_policy_overfits_eight_samples_to_parsable_json():
    torch.manual_seed(0)
    samples = [informative_sample(i) for i in range(8)]
    tok = train_bpe_tokenizer([s["target"] for s in samples] * 4 + [QUESTION], vocab_size=600)
    cfg = dataclasses.replace(
        ModelConfig(), num_points=256, num_groups=16, points_per_group=16, image_size=56
    )
    model, proc = build_tiny_policy(tok, cfg)
    batch = proc.batch(samples)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    completion = batch["labels"][:, 1:] != -100  # (B, L-1) positions predicting the target
    for step in range(400):
        model.train()
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 9:
            # stop once teacher-forced argmax (eval mode, BatchNorm running stats) is exact:
            # then greedy decoding reproduces every target token by token
            model.eval()
            with torch.no_grad():
                pred = model(**batch).logits[:, :-1].argmax(-1)  # (B, L-1)
            if (pred == batch["labels"][:, 1:])[completion].all():
                break
    assert (pred == batch["labels"][:, 1:])[completion].all(), (
        f"did not fit after {step + 1} steps: loss {loss.item():.4f}"
    )

    model.eval()
    prompts = proc.batch(samples, with_target=False)
    L = prompts["input_ids"].shape[1]
    max_new = max(len(tok(s["target"])["input_ids"]) for s in samples) + 4
    with torch.no_grad():
        out = model.generate(
            **prompts,
            max_new_tokens=max_new,
            do_sample=False,
            eos_token_id=proc.eos_token_ids,
            pad_token_id=proc.token_ids["pad_token_id"],
        )
    texts = proc.decode_completions(out, L)
    for s, text in zip(samples, texts):
        parsed = parse_output(text, num_keypoints=M)
        want = parse_output(s["target"], num_keypoints=M)
        assert parsed.ok, (text, parsed.errors)
        for field in ("bbox2d", "bbox3d"):
            np.testing.assert_array_equal(parsed.values[field], want.values[field])
