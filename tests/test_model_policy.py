"""The tiny PointVL policy end to end: shapes, gradients/freezing, ablations, round-trip,
batching invariance, generation with point clouds, processor labels, the paper path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoProcessor,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)

from pointvl.demo import random_geometry
from pointvl.model import (
    ModelConfig,
    PointBertConfig,
    PointBertEncoder,
    PointVLConfig,
    PointVLForConditionalGeneration,
    PointVLProcessor,
    build_policy,
    paper_model_config,
    paper_pointvl_config,
    train_bpe_tokenizer,
)
from pointvl.model.policy import build_tiny_policy
from pointvl.model.processor import IGNORE_INDEX
from pointvl.schema import format_target

QUESTIONS = ["Where is the chair?", "Describe the object and locate it in 3D, please."]


def synthetic_sample(seed: int) -> dict:
    """Random points / image and a target JSON written by ``format_target`` from random boxes."""
    rng = np.random.default_rng(seed)
    geometry = random_geometry(rng, 16, px_origin=(0, 40), px_size=(20, 60))
    target = format_target({"answer": "chair", "description": "a small chair", **geometry})
    return {
        "points": rng.uniform(-0.5, 0.5, (1024, 6)).astype(np.float32),
        "image": rng.integers(0, 256, (90, 120, 3), dtype=np.uint8),
        "question": QUESTIONS[seed % 2],
        "target": target,
    }


SMALL = dataclasses.replace(ModelConfig(), num_points=256, num_groups=16, points_per_group=16)


@pytest.fixture(scope="module")
def samples():
    return [synthetic_sample(i) for i in range(3)]


@pytest.fixture(scope="module")
def policy(samples):
    texts = [s["target"] for s in samples] * 4 + QUESTIONS
    tok = train_bpe_tokenizer(texts, vocab_size=400)
    model, proc = build_tiny_policy(tok, SMALL)
    return model.eval(), proc


def logits_of(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def test_shapes_through_every_block(policy, samples):
    model, proc = policy
    batch = proc.batch(samples[:2])
    B, L = batch["input_ids"].shape
    P = model.config.num_point_tokens
    assert P == SMALL.num_groups + 1
    assert batch["point_clouds"].shape == (2, SMALL.num_points, 6)
    assert (batch["input_ids"] == model.config.point_token_id).sum(-1).tolist() == [P, P]
    assert (batch["input_ids"] == model.config.image_token_id).sum(-1).tolist() == [16, 16]
    h_p, centers = model.point_encoder(batch["point_clouds"])
    assert h_p.shape == (2, P, SMALL.point_hidden_size) and centers.shape == (2, 16, 3)
    img = model.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"])
    tokens, mask = model._pad_image_tokens(tuple(img.pooler_output), 2)
    assert tokens.shape == (2, 16, SMALL.lm_hidden_size) and mask.all()
    assert model.fusion(h_p, tokens, mask).shape == h_p.shape
    assert model.get_point_features(batch["point_clouds"], tokens, mask).shape == (
        2,
        P,
        SMALL.lm_hidden_size,
    )
    out = model(**batch)
    assert out.logits.shape == (B, L, model.config.text_config.vocab_size)
    assert torch.isfinite(out.loss)


def test_processor_masks_labels_to_the_completion(policy, samples):
    _, proc = policy
    one = proc(**{k: samples[0][k] for k in ("points", "image", "question", "target")})
    labels, ids = one["labels"], one["input_ids"]
    n_prompt = one["prompt_length"]
    assert (labels[:n_prompt] == IGNORE_INDEX).all() and (labels[n_prompt:] != IGNORE_INDEX).all()
    assert torch.equal(labels[n_prompt:], ids[n_prompt:])
    text = proc.tokenizer.decode(ids[n_prompt:])
    assert text == samples[0]["target"] + "<|im_end|>"
    prompt = proc.tokenizer.decode(ids[:n_prompt])
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    # left padding: pad on the left, mask 0, label -100
    batch = proc.batch(samples[:2])
    lengths = batch["attention_mask"].sum(-1)
    short = int(lengths.argmin())
    n_pad = batch["input_ids"].shape[1] - int(lengths[short])
    assert n_pad > 0
    assert (batch["attention_mask"][short, :n_pad] == 0).all()
    assert (batch["labels"][short, :n_pad] == IGNORE_INDEX).all()
    assert (batch["input_ids"][short, :n_pad] == proc.token_ids["pad_token_id"]).all()


def test_gradients_reach_trainable_blocks_only(samples):
    texts = [s["target"] for s in samples] + QUESTIONS
    tok = train_bpe_tokenizer(texts, vocab_size=300)
    for frozen in ((), ("point_encoder", "vision")):
        cfg = dataclasses.replace(
            SMALL,
            freeze_point_encoder="point_encoder" in frozen,
            freeze_vision="vision" in frozen,
        )
        model, proc = build_tiny_policy(tok, cfg)
        model.train()
        model(**proc.batch(samples[:2])).loss.backward()
        for name, params in model.param_groups().items():
            grads = [p.grad for p in params]
            if name in frozen:
                assert all(not p.requires_grad for p in params), name
                assert all(g is None for g in grads), name
            else:
                assert all(g is not None for g in grads), name
                assert sum(float(g.abs().sum()) for g in grads) > 0, name
        if frozen:
            assert not model.point_encoder.training  # frozen BatchNorm stays in eval


def test_point_tokens_and_image_change_the_logits(policy, samples):
    model, proc = policy
    batch = proc.batch(samples[:1])
    base = logits_of(model, batch)
    completion = batch["labels"][0] != IGNORE_INDEX
    other_points = dict(batch, point_clouds=torch.rand_like(batch["point_clouds"]) - 0.5)
    other_image = dict(batch, pixel_values=torch.randn_like(batch["pixel_values"]))
    for ablated in (other_points, other_image):
        diff = (logits_of(model, ablated) - base)[0, completion].abs().max()
        assert diff > 1e-3
    # the image also reaches the point tokens through the cross-attention (Eq. 2)
    img = lambda pv: tuple(  # noqa: E731
        model.model.get_image_features(pv, batch["image_grid_thw"]).pooler_output
    )
    with torch.no_grad():
        e1 = model.get_point_features(
            batch["point_clouds"], *model._pad_image_tokens(img(batch["pixel_values"]), 1)
        )
        e2 = model.get_point_features(
            batch["point_clouds"], *model._pad_image_tokens(img(other_image["pixel_values"]), 1)
        )
    assert (e1 - e2).abs().max() > 1e-4


def test_sample_logits_do_not_depend_on_batch_mates(policy, samples):
    model, proc = policy
    alone = [logits_of(model, proc.batch([s])) for s in samples]
    batch = proc.batch(samples)
    together = logits_of(model, batch)
    for i in range(len(samples)):
        n = alone[i].shape[1]
        assert batch["attention_mask"][i, -n:].all() and batch["attention_mask"][i, :-n].sum() == 0
        torch.testing.assert_close(together[i, -n:], alone[i][0], atol=2e-4, rtol=1e-4)


def test_shared_samples_equal_repeated_inputs(policy, samples):
    """``sample_index``: U distinct samples encoded once and used by B rows give the logits of
    the repeated inputs and their gradients (Point-BERT, fusion and vision tower included)."""
    model, proc = policy
    batch = proc.batch([samples[1], samples[0]])  # U = 2 samples (equal prompt lengths)
    idx = torch.tensor([0, 1, 1, 0, 1, 0])  # B = 6 rows, shuffled as TRL's split does
    pv = batch["pixel_values"].view(2, -1, batch["pixel_values"].shape[-1])
    common = {
        "input_ids": batch["input_ids"][idx],
        "attention_mask": batch["attention_mask"][idx],
        "labels": batch["labels"][idx],
    }
    repeated = {
        "point_clouds": batch["point_clouds"][idx],
        "pixel_values": pv[idx].flatten(0, 1),
        "image_grid_thw": batch["image_grid_thw"][idx],
    }
    shared = {
        "point_clouds": batch["point_clouds"],
        "pixel_values": batch["pixel_values"],
        "image_grid_thw": batch["image_grid_thw"],
        "sample_index": idx,
    }
    outs = []
    for extra in (repeated, shared):
        model.zero_grad()
        out = model(**common, **extra)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        outs.append((out.logits.detach(), grads))
    (l1, g1), (l2, g2) = outs
    torch.testing.assert_close(l1, l2, rtol=0, atol=1e-5)
    assert set(g1) == set(g2) and any(n.startswith("point_encoder") for n in g1)
    for n in g1:
        torch.testing.assert_close(g1[n], g2[n], rtol=1e-4, atol=1e-6, msg=n)


def test_save_and_auto_from_pretrained_round_trip(policy, samples, tmp_path):
    model, proc = policy
    batch = proc.batch(samples[:2])
    model.save_pretrained(tmp_path / "m")
    proc.save_pretrained(tmp_path / "m")
    assert type(AutoConfig.from_pretrained(tmp_path / "m")) is PointVLConfig
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert type(loaded) is PointVLForConditionalGeneration
    proc2 = PointVLProcessor.from_pretrained(tmp_path / "m")
    auto = AutoProcessor.from_pretrained(tmp_path / "m")  # the processor, not just a tokenizer
    assert type(auto) is PointVLProcessor
    for p in (proc2, auto):
        batch2 = p.batch(samples[:2])
        for k in batch:
            assert torch.equal(batch[k], batch2[k]), k
    torch.testing.assert_close(logits_of(loaded, batch), logits_of(model, batch), atol=0, rtol=0)


def test_processor_of_an_older_checkpoint_still_loads(policy, samples, tmp_path):
    """A folder with only the tokenizer and ``pointvl_processor.json`` (written before the
    processor was a ``ProcessorMixin``) loads with ``PointVLProcessor.from_pretrained``."""
    import json

    from pointvl.model.processor import PROCESSOR_FILE

    _, proc = policy
    proc.tokenizer.save_pretrained(tmp_path / "old")
    settings = {k: v for k, v in proc.to_dict().items() if k != "processor_class"}
    (tmp_path / "old" / PROCESSOR_FILE).write_text(json.dumps(settings))
    old = PointVLProcessor.from_pretrained(tmp_path / "old")
    batch, again = proc.batch(samples[:1]), old.batch(samples[:1])
    assert all(torch.equal(batch[k], again[k]) for k in batch)


def test_generate_with_point_clouds(policy, samples):
    model, proc = policy
    batch = proc.batch(samples[:2], with_target=False)
    L = batch["input_ids"].shape[1]
    kw = dict(max_new_tokens=6, do_sample=False, eos_token_id=proc.eos_token_ids, pad_token_id=0)
    with torch.no_grad():
        cached = model.generate(**batch, **kw)
        uncached = model.generate(**batch, use_cache=False, **kw)
        first = model(**batch).logits[:, -1].argmax(-1)
    assert cached.shape[0] == 2 and cached.shape[1] <= L + 6
    assert torch.equal(cached[:, L], first)
    assert torch.equal(cached, uncached)
    broken = batch["input_ids"].clone()
    broken[0, int((broken[0] == model.config.point_token_id).nonzero()[0])] = 0
    with pytest.raises(ValueError, match="point_pad"):
        model(**dict(batch, input_ids=broken))


def test_paper_path_loads_backbone_weights_by_path(tmp_path):
    """``build_policy`` for size=paper: a Qwen2.5-VL checkpoint by path (a tiny one stands in
    for the 3B), the published Point-BERT from a checkpoint, fusion/projector new."""
    tok = train_bpe_tokenizer(QUESTIONS * 3, vocab_size=300)
    tiny, _ = build_tiny_policy(tok, SMALL)
    qwen_keys = set(Qwen2_5_VLConfig().to_dict())
    qwen_cfg = Qwen2_5_VLConfig(
        **{k: v for k, v in tiny.config.to_dict().items() if k in qwen_keys and k != "model_type"}
    )
    torch.manual_seed(1)
    backbone = Qwen2_5_VLForConditionalGeneration(qwen_cfg).to(torch.bfloat16)
    backbone.save_pretrained(tmp_path / "qwen")  # released in bf16, as Qwen2.5-VL-3B
    assert AutoConfig.from_pretrained(tmp_path / "qwen").model_type == "qwen2_5_vl"
    point_bert = PointBertEncoder(PointBertConfig())  # published size; a released .pth stand-in
    torch.save(
        {
            "base_model": {
                f"module.transformer_q.{k}": v for k, v in point_bert.state_dict().items()
            }
        },
        tmp_path / "point_bert.pth",
    )
    cfg = dataclasses.replace(
        paper_model_config(),
        backbone=str(tmp_path / "qwen"),
        point_bert_checkpoint=str(tmp_path / "point_bert.pth"),
        image_size=56,
    )
    model, proc = build_policy(cfg, tok)
    own = model.state_dict()
    # fp32 master weights whatever the checkpoint's dtype (AdamW never updates bf16 weights)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    for k, v in backbone.state_dict().items():
        torch.testing.assert_close(own[k], v.float(), rtol=0, atol=0)
    for k, v in point_bert.state_dict().items():
        torch.testing.assert_close(own[f"point_encoder.{k}"], v, rtol=0, atol=0)
    assert model.config.num_point_tokens == 513 and proc.num_point_tokens == 513
    assert not any(p.requires_grad for p in model.point_encoder.parameters())
    assert not any(p.requires_grad for p in model.model.visual.parameters())
    assert all(p.requires_grad for p in model.fusion.parameters())
    assert all(p.requires_grad for p in model.model.language_model.parameters())


def test_paper_config_counts_on_meta_device():
    cfg = paper_pointvl_config()
    with torch.device("meta"):
        model = PointVLForConditionalGeneration(cfg)
    counts = {k: sum(p.numel() for p in v) for k, v in model.param_groups().items()}
    backbone = counts["vision"] + counts["language_model"]
    assert 3.70e9 < backbone < 3.80e9  # Qwen2.5-VL-3B: 3.75 B parameters
    assert 21e6 < counts["point_encoder"] < 23e6
    assert cfg.num_point_tokens == 513
    assert not any(p.requires_grad for p in model.point_encoder.parameters())
    assert not any(p.requires_grad for p in model.model.visual.parameters())


def test_model_section_of_params_yaml_and_validation():
    from pathlib import Path

    from pointvl.config import ConfigError, from_dict, load_section
    from pointvl.model import paper_model_config

    params = Path(__file__).resolve().parent.parent / "params.yaml"
    assert load_section(params, "model", ModelConfig, "paper") == paper_model_config()
    tiny = load_section(params, "model", ModelConfig, "tiny")
    assert tiny.size == "tiny" and not tiny.freeze_point_encoder
    with pytest.raises(ConfigError, match="model.size='huge'"):
        from_dict(ModelConfig, {"size": "huge"}, "model")
    with pytest.raises(ConfigError, match="model.image_size"):
        ModelConfig(image_size=100).validate()


def test_hf_config_defaults_are_the_model_sections():
    """One set of defaults: PointVLConfig's own are ModelConfig's (fusion heads were 8 vs 4)."""
    hf, typed = PointVLConfig(), ModelConfig()
    for key, value in typed.policy_fields().items():
        if key != "point_config":
            assert getattr(hf, key) == value, key


def test_a_checkpoint_saved_with_the_old_group_size_key_still_loads(policy, samples, tmp_path):
    import json

    model, proc = policy
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    k = cfg["point_config"].pop("points_per_group")
    cfg["point_config"]["group_size"] = k  # as written before the rename
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    again = PointVLForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert again.config.point_config.points_per_group == k == SMALL.points_per_group
    batch = proc.batch(samples[:2])
    torch.testing.assert_close(logits_of(again, batch), logits_of(model, batch), atol=0, rtol=0)
