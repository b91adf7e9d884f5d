"""The loss pass with each prompt run once for its group (``prompt_sharing="prefix"``,
``pointvl.train.shared_prompt``) equals the full pass to float rounding (log-probs,
entropies, gradients), on the PointVL policy with point clouds and images, rows shuffled as
TRL shuffles them, and two prompts that share a sample but not a question; ``none`` (every
row in full) equals ``encoders`` bitwise in log-probs."""

from __future__ import annotations

import pytest
import torch
from test_rollout_equivalence import G, _samples, _trainer, policy  # noqa: F401 (fixture)

from pointvl.train.pointcloud import EXTRA_PREFIX


def _rollout(model, proc, **trainer_kw):
    """Sampled completions of 3 prompts (the first two: one sample, two questions), rows
    shuffled; -> (trainer, ids, attention mask, T)."""
    samples = _samples(3, seed=4)
    samples[1] = {**samples[0], "question": "What is the object?"}
    trainer, rows = _trainer(model, proc, samples)
    trainer.model.eval()
    torch.manual_seed(0)
    out = trainer._generate_and_score_completions([dict(r) for r in rows for _ in range(G)])
    perm = torch.randperm(len(rows) * G, generator=torch.Generator().manual_seed(1))
    out = {k: v[perm] if torch.is_tensor(v) and v.dim() > 0 else v for k, v in out.items()}
    trainer._model_extras = {
        k[len(EXTRA_PREFIX) :]: v for k, v in out.items() if k.startswith(EXTRA_PREFIX)
    }
    for k, v in trainer_kw.items():
        setattr(trainer, k, v)
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    am = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    return trainer, ids, am, out["completion_ids"].shape[1]


def _logps_and_grads(trainer, ids, am, T, sharing: str):
    trainer.prompt_sharing = sharing
    model = trainer.model
    model.zero_grad()
    lp, ent, _ = trainer._get_per_token_logps_and_entropies(model, ids, am, T, compute_entropy=True)
    mask = am[:, -T:].bool()
    (lp[mask] * torch.linspace(-1, 1, int(mask.sum()))).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return lp.detach(), ent, mask, grads


@pytest.mark.parametrize("chunk_tokens", [0, 64])
def test_prefix_sharing_equals_the_full_pass(policy, chunk_tokens):  # noqa: F811
    model, proc = policy
    trainer, ids, am, T = _rollout(model, proc, logprob_chunk_tokens=chunk_tokens)
    assert trainer._prompt_groups(trainer._model_extras, ids[:, :-T])[0].unique().numel() == 3
    lp_e, ent_e, mask, g_e = _logps_and_grads(trainer, ids, am, T, "encoders")
    lp_p, ent_p, _, g_p = _logps_and_grads(trainer, ids, am, T, "prefix")
    lp_n, _, _, g_n = _logps_and_grads(trainer, ids, am, T, "none")
    assert torch.isfinite(lp_e[mask]).all() and mask.sum() > 3 * G
    # the prompt's matrix products run on U rows instead of B: equal to float rounding
    torch.testing.assert_close(lp_p[mask], lp_e[mask], rtol=0, atol=1e-5)
    torch.testing.assert_close(ent_p[mask], ent_e[mask], rtol=0, atol=1e-5)
    assert torch.equal(lp_n[mask], lp_e[mask])  # encoders once per sample: bitwise
    assert g_p.keys() == g_e.keys() == g_n.keys() and len(g_e) > 50
    for name, g in g_e.items():
        scale = float(g.abs().max()) + 1e-6
        torch.testing.assert_close(g_p[name], g, rtol=0, atol=1e-4 * scale, msg=name)
        torch.testing.assert_close(g_n[name], g, rtol=0, atol=1e-4 * scale, msg=name)


def test_prefix_sharing_with_micro_batches_and_one_token_completions(policy):  # noqa: F811
    """Micro-batches that split a prompt's rows, and completions of one token (no completion
    pass: the prompt's last hidden state alone)."""
    model, proc = policy
    trainer, ids, am, T = _rollout(model, proc)
    for args in (
        (ids, am, T, 5),
        (ids[:, : ids.shape[1] - T + 1], am[:, : am.shape[1] - T + 1], 1, None),
    ):
        x, m, t, bs = args
        with torch.no_grad():
            trainer.prompt_sharing = "encoders"
            ref = trainer._get_per_token_logps_and_entropies(model, x, m, t, batch_size=bs)[0]
            trainer.prompt_sharing = "prefix"
            got = trainer._get_per_token_logps_and_entropies(model, x, m, t, batch_size=bs)[0]
        mask = m[:, -t:].bool()
        assert got.shape == ref.shape == (x.shape[0], t)
        torch.testing.assert_close(got[mask], ref[mask], rtol=0, atol=1e-5)


def test_prefix_sharing_refuses_what_it_cannot_run(policy):  # noqa: F811
    from pointvl.config import ConfigError
    from pointvl.train.config import RLConfig

    model, proc = policy
    samples = _samples(1)
    trainer, _ = _trainer(model, proc, samples)
    trainer.prompt_sharing = "prefix"
    trainer.args.gradient_checkpointing = True
    with pytest.raises(ValueError, match="gradient checkpointing turns off"):
        trainer._check_prompt_sharing()
    trainer.args.gradient_checkpointing = False
    trainer._check_prompt_sharing()  # one process, no checkpointing: accepted
    with pytest.raises(ConfigError, match="rl.prompt_sharing='prefix' needs"):
        RLConfig(prompt_sharing="prefix", gradient_checkpointing=True).validate()
    with pytest.raises(ConfigError, match="prompt_sharing"):
        RLConfig(prompt_sharing="all").validate()


def test_rl_trainer_takes_prompt_sharing_from_the_config(policy):  # noqa: F811
    model, proc = policy
    trainer, _ = _trainer(model, proc, _samples(1), rl={"prompt_sharing": "prefix"})
    assert trainer.prompt_sharing == "prefix"
    assert _trainer(model, proc, _samples(1))[0].prompt_sharing == "encoders"
