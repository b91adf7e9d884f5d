"""The memory estimate's measured parts (pointvl/train/memory.py) against known answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pointvl.train import memory as mem

ROOT = Path(__file__).resolve().parent.parent


def test_a_linear_layer_saves_its_input_per_token():
    """y = x W^T saves x (and W, which does not grow with the tokens): 4 d bytes per token."""
    d = 24
    lin = torch.nn.Linear(d, 7)

    def make(T):
        return (torch.randn(T, d, requires_grad=True),)

    assert mem.bytes_per_token(lin, make, (10, 30)) == 4 * d


def test_checkpointed_layers_keep_only_their_inputs():
    """With gradient checkpointing every decoder layer keeps its input (h per token, fp32 here;
    bf16 in training: the estimate's 2 h), against the full activations without it."""
    from transformers import Qwen2Config, Qwen2Model

    h, L = 64, 3
    cfg = Qwen2Config(hidden_size=h, intermediate_size=4 * h, num_hidden_layers=L,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=32)  # fmt: skip
    model = Qwen2Model(cfg).train()

    def run(x):
        model(inputs_embeds=x, use_cache=False)

    def make(T):
        return (torch.randn(1, T, h, requires_grad=True),)

    full = mem.bytes_per_token(run, make, (16, 48))
    model.gradient_checkpointing_enable({"use_reentrant": False})
    ckpt = mem.bytes_per_token(run, make, (16, 48))
    assert L * 4 * h <= ckpt <= L * 4 * h + 3 * 4 * h  # + the final norm, outside the layers
    assert full > 5 * ckpt


def test_model_states_shrink_with_sharding():
    shape = mem.ModelShape(params=10**9, trainable=8 * 10**8, hidden=1024, layers=24,
                           kv_heads=2, head_dim=64, vocab=1000, largest_layer=10**7)  # fmt: skip
    per = {s: sum(mem.model_states(s, shape, 4).values()) for s in mem.STRATEGIES}
    assert per["zero3"] < per["zero2"] < per["ddp"]
    assert per["ddp"] == 4 * 10**9 + 12 * 8 * 10**8  # fp32 weights, grads, AdamW m and v
    with pytest.raises(ValueError, match="fsdp"):
        mem.model_states("fsdp", shape, 4)


def test_the_committed_paper_estimate_says_what_fits():
    path = ROOT / "results/bench/memory_paper.json"
    if not path.is_file():
        pytest.skip("python benchmarks/bench_memory.py writes it")
    data = json.loads(path.read_text())
    assert data["gpus"] == 4 and data["params"]["trainable"] < data["params"]["total"]
    assert 3.7e9 < data["params"]["total"] < 3.9e9
    assert data["sequence_tokens"]["target"] >= 478  # digits split, Q = 1000
    for s in mem.STRATEGIES:
        r = data["per_gpu"][s]
        assert r["peak_gib"] == max(r["phases_gib"].values())
    assert data["fits"]["A800 80GB (the paper: 4 x A800, ~48 h, Sec. 4.2)"]["zero3"]
