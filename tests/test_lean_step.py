"""The lean decoding step (``pointvl.eval.lean_step.LeanStep``) against the model's own modules.

``decode`` runs every decoding step through ``LeanStep`` when the model has a Qwen2-style text
stack: the layers' arithmetic on a preallocated KV cache, in the order and with the kernels
transformers uses. These tests pin that it is the same computation, not an approximation:
the completions and the log-prob of every drawn token are *bitwise* equal to the module path
(``decode(lean=False)``: the model's forward and ``DynamicCache``), which is itself tested
token for token against Hugging Face ``generate`` (``test_rollout_equivalence.py``).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_rollout_equivalence import G, _samples, _sampling
from test_rollout_equivalence import policy as policy  # noqa: F401  (the module fixture)

from pointvl.eval.generate import Sampling, decode, hf_generate
from pointvl.eval.lean_step import LeanStep
from pointvl.train.lab import prompt_batch


def _both(model, batch, sampling, n: int) -> tuple:
    torch.manual_seed(7)
    lean = decode(model, batch, sampling, n, return_logprobs=True, lean=True)
    torch.manual_seed(7)
    ref = decode(model, batch, sampling, n, return_logprobs=True, lean=False)
    return lean, ref


@pytest.mark.parametrize("prompts", [1, 3])  # 1: no padding (no key mask); 3: left padding
@pytest.mark.parametrize("do_sample", [False, True])
@pytest.mark.parametrize("num_generations", [1, G])
def test_lean_decode_is_bitwise_the_module_decode(policy, prompts, do_sample, num_generations):  # noqa: F811
    model, proc = policy
    assert LeanStep.supports(model)
    batch = proc.batch(_samples(prompts, seed=2), with_target=False)
    assert bool((batch["attention_mask"] == 0).any()) == (prompts > 1)
    lean, ref = _both(model, batch, _sampling(proc, do_sample), num_generations)
    assert lean.ids == ref.ids
    assert lean.logprobs == ref.logprobs  # floats equal to the last bit


def test_finished_rows_leave_the_lean_buffers_and_nothing_changes(policy, monkeypatch):  # noqa: F811
    """Rows that end early are compacted out of the KV buffers (a quarter at a time); the
    completions still equal ``generate``'s and the module path's."""
    model, proc = policy
    batch = proc.batch(_samples(3, seed=2), with_target=False)
    sampling = _sampling(proc, do_sample=True)
    torch.manual_seed(7)
    first = hf_generate(model, batch, sampling, G).ids
    # more end-of-turn ids, taken from the rows, so that many rows end early at different steps
    ends = (*sampling.eos_token_ids, *(first[i][2 + i] for i in range(0, 3 * G, 2)))
    sampling = dataclasses.replace(sampling, eos_token_ids=ends)
    kept = []
    select = LeanStep.select
    monkeypatch.setattr(
        LeanStep, "select", lambda self, rows: kept.append(len(rows)) or select(self, rows)
    )
    lean, ref = _both(model, batch, sampling, G)
    torch.manual_seed(7)
    assert lean.ids == ref.ids == hf_generate(model, batch, sampling, G).ids
    assert lean.logprobs == ref.logprobs
    print([len(r) for r in lean.ids], kept)
    assert kept and kept == sorted(kept, reverse=True)  # the buffers shrank, row sets only lose
    assert len({len(r) for r in lean.ids}) > 2


def _tiny_text_lm(attn: str):
    from pointvl.train.tiny import tiny_lm, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_lm(tok, hidden=64, layers=2, seed=5)
    model.config._attn_implementation = attn
    with torch.no_grad():  # sharpen attention so that positions and masks matter
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(6.0)
    return model.eval(), tok


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_lean_decode_on_a_text_only_qwen2_equals_module_and_generate(attn):
    """A plain Qwen2 causal LM (the credit lab's policy): 1-D positions, both attention
    implementations transformers offers on the CPU, left-padded prompts."""
    model, tok = _tiny_text_lm(attn)
    assert LeanStep.supports(model)
    batch = prompt_batch(tok, [{"prompt": p} for p in ("a", "the box is", "12 3")])
    end = tok.convert_tokens_to_ids("<|im_end|>")
    sampling = Sampling(max_new_tokens=20, eos_token_ids=(end,), pad_token_id=tok.pad_token_id,
                        do_sample=True, temperature=1.0)  # fmt: skip
    lean, ref = _both(model, batch, sampling, 3)
    assert lean.ids == ref.ids
    assert lean.logprobs == ref.logprobs
    torch.manual_seed(7)
    assert lean.ids == hf_generate(model, batch, sampling, 3).ids


def test_models_the_lean_step_does_not_reproduce_use_their_own_modules():
    """Sliding-window attention or a wrapped linear layer (an adapter, a ZeRO-3 shard): not
    supported, and ``decode`` falls back to the module path instead of computing wrongly."""
    model, tok = _tiny_text_lm("sdpa")
    model.config.use_sliding_window = True
    assert not LeanStep.supports(model)
    model.config.use_sliding_window = False
    layer = model.model.layers[0].self_attn
    bias, layer.k_proj.bias = layer.k_proj.bias, None
    assert not LeanStep.supports(model)
    layer.k_proj.bias = bias
    assert LeanStep.supports(model)

    class Adapter(torch.nn.Linear):
        pass

    original = layer.q_proj
    layer.q_proj = Adapter(original.in_features, original.out_features)
    layer.q_proj.load_state_dict(original.state_dict())
    assert not LeanStep.supports(model)
    batch = {
        "input_ids": torch.tensor([[5, 6, 7]]),
        "attention_mask": torch.ones(1, 3, dtype=torch.long),
    }
    sampling = Sampling(max_new_tokens=5, eos_token_ids=(0,), pad_token_id=tok.pad_token_id)
    assert decode(model, batch, sampling).ids == decode(model, batch, sampling, lean=False).ids
