"""Sampling draws made a step ahead on a second thread (``pointvl.eval.generate._Noise``).

On the CPU, ``decode`` draws step k + 1's Exp(1) noise while step k + 1's forward runs. That
is only a speed change if it is invisible: the same completions and log-probs as drawing each
step in turn, and the generator left exactly where ``generate`` leaves it (the draw made for a
step that never comes is undone), whether the rows end early or run to ``max_new_tokens``,
and also when decoding stops with an error.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_rollout_equivalence import G, _samples, _sampling
from test_rollout_equivalence import policy as policy  # noqa: F401  (the module fixture)

from pointvl.eval.generate import _Noise, decode, hf_generate


def _run(fn, seed: int = 5):
    torch.manual_seed(seed)
    out = fn()
    return out, torch.get_rng_state()


def test_the_cpu_generator_is_one_stream_drawn_element_by_element():
    """What drawing ahead relies on: one (2, B, V) draw is two (B, V) draws in turn."""
    torch.manual_seed(0)
    whole = torch.empty(2, 16, 848).exponential_(1)
    torch.manual_seed(0)
    first, second = torch.empty(16, 848).exponential_(1), torch.empty(16, 848).exponential_(1)
    assert torch.equal(whole[0], first) and torch.equal(whole[1], second)


@pytest.mark.parametrize("early_end", [True, False])  # rows end early / run to max_new_tokens
def test_drawing_ahead_changes_no_draw_and_leaves_the_generator_as_generate(policy, early_end):  # noqa: F811
    model, proc = policy
    batch = proc.batch(_samples(3, seed=2), with_target=False)
    sampling = _sampling(proc, do_sample=True)
    ref, ref_state = _run(lambda: hf_generate(model, batch, sampling, G).ids)
    if early_end:  # each row's own 4th token ends a turn too: every row ends by step 4
        ends = {*sampling.eos_token_ids, *(r[min(3, len(r) - 1)] for r in ref)}
        sampling = dataclasses.replace(sampling, eos_token_ids=tuple(sorted(ends)))
        ref, ref_state = _run(lambda: hf_generate(model, batch, sampling, G).ids)
        assert max(len(r) for r in ref) < sampling.max_new_tokens
    else:  # a placeholder id (never drawn) as the only end-of-turn: every row runs to T
        sampling = dataclasses.replace(sampling, eos_token_ids=sampling.suppress_tokens[:1])
        ref, ref_state = _run(lambda: hf_generate(model, batch, sampling, G).ids)
        assert {len(r) for r in ref} == {sampling.max_new_tokens}
    for ahead in (True, False):
        got, state = _run(lambda a=ahead: decode(model, batch, sampling, G, True, draw_ahead=a))
        assert got.ids == ref
        assert torch.equal(state, ref_state), f"draw_ahead={ahead}: generator moved"
    ahead, _ = _run(lambda: decode(model, batch, sampling, G, True, draw_ahead=True))
    inline, _ = _run(lambda: decode(model, batch, sampling, G, True, draw_ahead=False))
    assert ahead.logprobs == inline.logprobs  # floats equal to the last bit


def test_an_error_mid_decode_stops_the_thread_and_undoes_the_draw_ahead(policy, monkeypatch):  # noqa: F811
    """The step after the second raises: the generator holds the two steps' draws only."""
    from pointvl.eval import lean_step

    model, proc = policy
    batch = proc.batch(_samples(1, seed=2), with_target=False)
    sampling = _sampling(proc, do_sample=True)
    calls = []
    real = lean_step.LeanStep.__call__

    def failing(self, tok, pos):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("step failed")
        return real(self, tok, pos)

    monkeypatch.setattr(lean_step.LeanStep, "__call__", failing)
    torch.manual_seed(5)
    with pytest.raises(RuntimeError, match="step failed"):
        decode(model, batch, sampling, G, draw_ahead=True)
    after = torch.get_rng_state()
    torch.manual_seed(5)
    V = model.get_output_embeddings().out_features
    torch.empty(2, G, V).exponential_(1)  # the two steps that were sampled
    assert torch.equal(after, torch.get_rng_state())


def test_noise_buffers_alternate_and_close_is_idempotent():
    torch.manual_seed(1)
    noise = _Noise(4, 10, "cpu", ahead=True)
    a = noise.take(more=True).clone()
    b = noise.take(more=False)
    noise.close()
    noise.close()
    torch.manual_seed(1)
    ref = torch.empty(2, 4, 10).exponential_(1)
    assert torch.equal(a, ref[0]) and torch.equal(b, ref[1])
    assert noise.pool is None
