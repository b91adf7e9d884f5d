"""On-policy rollouts: the RL trainer samples from exactly the policy it scores and evaluates.

Three equalities, each on the PointVL policy with point clouds and images:

1. greedy completions through the trainer's generation path (TRL's ``_generate_and_score_
   completions`` with our point-cloud inputs) equal, token for token, greedy completions
   through the evaluation path (``pointvl.eval.generate.generate_completions``);
2. the per-token log-probs the trainer computes for *sampled* completions equal those of a
   plain forward of the same model on the same tokens (processor-built inputs);
3. the log-probs of the sampling distribution itself (the scores ``generate`` sampled from,
   KV cache and all) equal the trainer's log-probs: the update is on-policy.

These failed before the policy built its M-RoPE inputs (``mm_token_type_ids``) inside
``generate``: TRL's generate call does not pass them, so Qwen2.5-VL fell back to 1-D text
positions for the rollouts while every log-prob pass and evaluation used 3-D positions.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pointvl.model import ModelConfig
from pointvl.model.policy import build_tiny_policy
from pointvl.train.tiny import tiny_tokenizer

SMALL = dataclasses.replace(ModelConfig(), num_points=128, num_groups=8, points_per_group=16)
G = 4
T_MAX = 24


def _samples(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    questions = ["Locate the object.", "What is the object?", "Describe it."]
    return [
        {
            "points": rng.uniform(-0.5, 0.5, (SMALL.num_points, 6)).astype(np.float32),
            "image": rng.integers(0, 256, (60, 80, 3), dtype=np.uint8),
            "question": questions[i % len(questions)],
            **{k: v for k, v in _target(i).items()},
        }
        for i in range(n)
    ]


def _target(i: int) -> dict:
    from pointvl.demo import demo_target

    t = demo_target(i)
    t["K"] = np.asarray(t["K"], dtype=np.float64).reshape(3, 3)
    t["R"] = np.asarray(t["R"], dtype=np.float64).reshape(3, 3)
    return t


@pytest.fixture(scope="module")
def policy():
    tok = tiny_tokenizer()
    model, proc = build_tiny_policy(tok, SMALL, seed=3)
    # sharpen attention: at the default init, attention is near-uniform and positions hardly
    # move the logits; scaled queries/keys make the completions depend on every position
    with torch.no_grad():
        for name, p in model.model.language_model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(6.0)
    model.eval()
    return model, proc


def _trainer(model, proc, samples, rl: dict | None = None, **gen):
    """The RL stage's trainer (``grpo_args`` + ``build_rl_trainer``) on ``samples``; ``rl``:
    other fields of the ``RLConfig``."""
    from pointvl.train.config import RLConfig
    from pointvl.train.rl import build_rl_trainer, grpo_args, rl_rows

    cfg = RLConfig(
        variant="grca",
        num_generations=G,
        prompts_per_step=len(samples),
        max_completion_length=T_MAX,
        mask_truncated_completions=False,
        **(rl or {}),
    )
    args = grpo_args(
        cfg, "/tmp/pointvl_test_rollout", proc, report_to=[], save_strategy="no",
        use_cpu=True, generation_kwargs=gen,
    )  # fmt: skip
    rows = rl_rows(samples, proc)
    trainer = build_rl_trainer(model, proc, samples, rows, cfg, args, 100, 16)
    trainer.current_gradient_accumulation_steps = 1
    return trainer, rows


def _sampling(proc, do_sample: bool, max_new_tokens: int = T_MAX):
    """The rollout sampler's settings for ``proc`` (T = 0.7, placeholders suppressed)."""
    from pointvl.eval.generate import Sampling

    t = proc.token_ids
    return Sampling(
        max_new_tokens=max_new_tokens,
        eos_token_ids=tuple(proc.eos_token_ids),
        pad_token_id=t["pad_token_id"],
        do_sample=do_sample,
        temperature=0.7,
        suppress_tokens=(t["image_token_id"], t["point_token_id"]),
    )


def _trim(ids: list[int], eos: list[int]) -> list[int]:
    for j, t in enumerate(ids):
        if t in eos:
            return ids[: j + 1]
    return ids


def test_trainer_greedy_generation_equals_evaluation_generation(policy):
    from pointvl.eval.generate import generate_token_ids

    model, proc = policy
    samples = _samples(3)
    trainer, rows = _trainer(model, proc, samples, do_sample=False)
    trainer.model.eval()
    batch = [dict(r) for r in rows for _ in range(G)]  # group-major, as TRL's sampler
    out = trainer._generate_and_score_completions(batch)
    train_ids = [
        ids[m.bool()].tolist()
        for ids, m in zip(out["completion_ids"], out["completion_mask"], strict=True)
    ]
    eval_ids = generate_token_ids(model, proc, samples, batch_size=2, max_new_tokens=T_MAX)
    for i, s in enumerate(eval_ids):
        for g in range(G):
            assert train_ids[i * G + g] == _trim(s, proc.eos_token_ids), (i, g)


def test_trainer_prompt_ids_equal_processor_prompt_ids(policy):
    model, proc = policy
    samples = _samples(2)
    trainer, rows = _trainer(model, proc, samples)
    prompt_ids, _, _ = trainer._tokenize_prompts([r["prompt"] for r in rows])
    for s, ids in zip(samples, prompt_ids, strict=True):
        expected = proc(s["points"], s["image"], s["question"])["input_ids"].tolist()
        assert list(ids) == expected


def _plain_logps(model, proc, sample, completion: list[int], temperature: float) -> torch.Tensor:
    """log pi(y_t | x, y_<t) from one un-batched forward on processor-built inputs; the policy
    is softmax(logits / T) with the placeholders at probability 0 (never sampled)."""
    from pointvl.eval.generate import suppressed_ids

    one = proc(sample["points"], sample["image"], sample["question"])
    ids = torch.cat([one["input_ids"], torch.tensor(completion)])[None]  # (1, L + T)
    mm = (ids == model.config.image_token_id).int()
    with torch.no_grad():
        logits = model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            mm_token_type_ids=mm,
            point_clouds=one["point_clouds"][None],
            pixel_values=one["pixel_values"],
            image_grid_thw=one["image_grid_thw"],
        ).logits[0, -len(completion) - 1 : -1]  # (T, V)
    logits[:, list(suppressed_ids(proc))] = -float("inf")
    logp = torch.log_softmax(logits.double() / temperature, -1)
    return logp.gather(-1, torch.tensor(completion)[:, None])[:, 0]  # (T,)


def test_trainer_logps_equal_plain_forward_and_sampling_distribution(policy):
    from pointvl.train.pointcloud import EXTRA_PREFIX

    model, proc = policy
    samples = _samples(2, seed=1)
    trainer, rows = _trainer(model, proc, samples)
    trainer.model.eval()
    T = trainer.temperature
    batch = [dict(r) for r in rows for _ in range(G)]
    torch.manual_seed(0)
    out = trainer._generate_and_score_completions(batch)
    extras = {k[len(EXTRA_PREFIX) :]: v for k, v in out.items() if k.startswith(EXTRA_PREFIX)}
    trainer._model_extras = extras
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    am = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    with torch.no_grad():
        lp, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, am, out["completion_ids"].shape[1]
        )  # (B, T)
    sampled = trainer._last_sampling_logps  # (B, T) log-probs of the distribution sampled from
    assert sampled is not None
    for b in range(len(batch)):
        m = out["completion_mask"][b].bool()
        comp = out["completion_ids"][b][m].tolist()
        plain = _plain_logps(model, proc, samples[b // G], comp, T)
        torch.testing.assert_close(lp[b][m].double(), plain, rtol=0, atol=2e-4)
        torch.testing.assert_close(sampled[b][m].double(), plain, rtol=0, atol=2e-4)


def _record_positions(model):
    """Hook the language model: the position_ids of every prefill (seq len > 1) call."""
    seen = []

    def hook(module, args, kwargs):
        pos = kwargs.get("position_ids")
        embeds = kwargs.get("inputs_embeds")
        if embeds is not None and embeds.shape[1] > 1:
            seen.append(None if pos is None else pos.detach().clone())

    return seen, model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)


def test_generation_and_logprob_passes_use_the_same_mrope_positions(policy):
    """The prompt's positions at the rollout prefill equal those of the log-prob forward and
    of evaluation (image tokens on Qwen's 3-D grid, text after them shifted by rope_deltas)."""
    from pointvl.eval.generate import generate_token_ids
    from pointvl.train.pointcloud import EXTRA_PREFIX

    model, proc = policy
    samples = _samples(1)
    trainer, rows = _trainer(model, proc, samples, do_sample=False)
    trainer.model.eval()
    seen, handle = _record_positions(model)
    try:
        out = trainer._generate_and_score_completions([dict(rows[0]) for _ in range(G)])
        rollout = seen[-1]
        generate_token_ids(model, proc, samples, batch_size=1, max_new_tokens=2)
        evaluation = seen[-1]
        trainer._model_extras = {
            k[len(EXTRA_PREFIX) :]: v for k, v in out.items() if k.startswith(EXTRA_PREFIX)
        }
        ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
        am = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
        with torch.no_grad():
            trainer._get_per_token_logps_and_entropies(model, ids, am, ids.shape[1] - 1)
        logprob = seen[-1]
    finally:
        handle.remove()
    L = out["prompt_ids"].shape[1]
    # generation passes (4, B, L) (text row + 3 M-RoPE rows), a forward (3, B, L): compare M-RoPE
    rollout, evaluation, logprob = rollout[-3:, :1], evaluation[-3:], logprob[-3:, :1, :L]
    assert int(evaluation.amax()) < L - 1  # the 3-D grid really compresses the image tokens
    torch.testing.assert_close(rollout, evaluation, rtol=0, atol=0)
    torch.testing.assert_close(rollout, logprob, rtol=0, atol=0)


@pytest.mark.parametrize("do_sample", [False, True])
@pytest.mark.parametrize("num_generations", [1, 3])
def test_decode_equals_hf_generate(policy, do_sample, num_generations):
    """The shared sampler reproduces ``generate`` token for token for the same seed, with the
    prompt prefilled once per group and finished rows leaving the batch."""
    from pointvl.eval.generate import decode, hf_generate

    model, proc = policy
    batch = proc.batch(_samples(3, seed=2), with_target=False)
    sampling = _sampling(proc, do_sample)
    torch.manual_seed(11)
    ref = hf_generate(model, batch, sampling, num_generations).ids
    # one more end-of-turn id, taken from the first row, so that rows end at different steps
    sampling = dataclasses.replace(sampling, eos_token_ids=(*sampling.eos_token_ids, ref[0][5]))
    torch.manual_seed(11)
    ref = hf_generate(model, batch, sampling, num_generations).ids
    torch.manual_seed(11)
    got = decode(model, batch, sampling, num_generations, return_logprobs=True)
    assert got.ids == ref
    assert len({len(r) for r in ref}) > 1  # rows finished at different steps
    assert [len(x) for x in got.logprobs] == [len(r) for r in got.ids]


def test_chunked_logprobs_equal_full_logits_with_gradients(policy):
    """Log-probs from hidden states with the LM head in checkpointed chunks (paper sizes) equal
    the full-logits forward, and so do the gradients they send back."""
    from pointvl.train.pointcloud import EXTRA_PREFIX

    model, proc = policy
    samples = _samples(2, seed=4)
    trainer, rows = _trainer(model, proc, samples)
    trainer.model.eval()
    torch.manual_seed(0)
    out = trainer._generate_and_score_completions([dict(r) for r in rows for _ in range(G)])
    extras = {k[len(EXTRA_PREFIX) :]: v for k, v in out.items() if k.startswith(EXTRA_PREFIX)}
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    am = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    T = out["completion_ids"].shape[1]
    m = out["completion_mask"].bool()
    results = []
    for chunk in (0, 37):  # 37 tokens: many chunks of one row or less
        trainer.logprob_chunk_tokens = chunk
        trainer._model_extras = extras
        model.zero_grad()
        lp, ent, _ = trainer._get_per_token_logps_and_entropies(
            model, ids, am, T, compute_entropy=True
        )
        (lp[m].sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((lp.detach(), ent, grads))
    trainer.logprob_chunk_tokens = 0
    (l0, e0, g0), (l1, e1, g1) = results
    torch.testing.assert_close(l1[m], l0[m], rtol=0, atol=1e-5)
    assert torch.isfinite(e0[m]).all()  # suppressed ids: p log p = 0, not NaN
    torch.testing.assert_close(e1[m], e0[m], rtol=0, atol=1e-4)
    assert set(g0) == set(g1) and "lm_head.weight" in g0
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-4, atol=1e-5, msg=n)
