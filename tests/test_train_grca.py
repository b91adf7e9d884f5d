"""GRCATrainer end to end on a tiny random LM: routing, broadcast, reductions to GRPO, TRL parity.

Completions are *scripted* (written target JSONs, tokenized) so that rewards are controlled;
everything after generation — parsing, scoring, span alignment, advantages, TRL's loss — is
the trainer's real code path.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from pointvl.credit import CreditConfig
from pointvl.schema import GEOMETRIC_FIELDS, format_target
from pointvl.step import Scoring
from pointvl.train.grca_trainer import GeometryTask, GRCATrainer
from pointvl.train.routed import FieldScores, TaskReward
from pointvl.train.tiny import scripted_completions, tiny_lm, tiny_rows, tiny_tokenizer

G = 8
Q = 100
BBOX3D = GEOMETRIC_FIELDS.index("bbox3d") + 1


class Scripted:
    """Replaces sampling by fixed completions (row i gets script[i % len(script)]); nothing else."""

    script: list[list[int]] = []

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, **kw):
        return [list(self.script[i % len(self.script)]) for i in range(len(prompt_ids))], None


class ScriptedGRCA(Scripted, GRCATrainer):
    probe: torch.Tensor | None = None

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        logps, ent, aux = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if torch.is_grad_enabled() and logps.requires_grad:
            logps.retain_grad()  # d loss / d log π(y_t) per token
            self.probe = logps
        return logps, ent, aux


class EqualFieldsTask(GeometryTask):
    """Every field reward set to the sequence reward (GRCA must then equal GRPO)."""

    def score(self, completions, inputs) -> FieldScores:
        s = super().score(completions, inputs)
        s.rewards = np.repeat(s.columns["seq"][:, None], len(self.fields), axis=1)
        return s


class EqualFieldsGRCA(ScriptedGRCA):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.task.task = EqualFieldsTask(self.scoring)


class ScriptedTRL(Scripted, GRPOTrainer):
    """TRL's GRPOTrainer, unmodified but for the scripted completions."""


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer(Q)


@pytest.fixture(scope="module")
def model(tok):
    return tiny_lm(tok)


@pytest.fixture(scope="module")
def rows(tok):
    return tiny_rows(1, tok)


def encode(tok, texts):
    end = tok.convert_tokens_to_ids("<|im_end|>")
    return [tok(t, add_special_tokens=False)["input_ids"] + [end] for t in texts]


def bbox3d_only(target: dict) -> list[str]:
    """G exact completions whose bbox3d alone differs (shifted by j bins)."""
    out = []
    for j in range(G):
        s = {
            k: np.asarray(v) if k != "answer" and k != "description" else v
            for k, v in target.items()
        }
        s["bbox3d"] = s["bbox3d"] + 0.02 * j * np.array([1, 0, 1, 1, 0, 1])
        out.append(format_target(s, Q))
    return out


def make(cls, model, tok, rows, script, variant, background="seq", seed=0, **kw):
    args = GRPOConfig(
        output_dir="/tmp/pointvl_test_grca",
        per_device_train_batch_size=G,
        num_generations=G,
        max_completion_length=512,
        max_steps=1,
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
        seed=seed,
        loss_type="grpo",
    )
    ds = Dataset.from_list(rows)
    if cls is ScriptedTRL:
        task = GeometryTask(Scoring(Q))
        columns = kw.pop("columns", ("seq",))
        for k, v in kw.items():
            setattr(args, k, v)
        t = cls(
            copy.deepcopy(model),
            reward_funcs=[TaskReward(task, c) for c in columns],
            args=args,
            train_dataset=ds,
            processing_class=tok,
        )
    else:
        t = cls(
            copy.deepcopy(model),
            args=args,
            train_dataset=ds,
            processing_class=tok,
            variant=variant,
            credit=CreditConfig(background=background),
            scoring=Scoring(Q),
            **kw,
        )
    t.script = script
    t.current_gradient_accumulation_steps = 1  # set by Trainer.train otherwise
    t.model.train()
    return t


def step(trainer, rows):
    """One generation batch (G copies of the prompt) -> (batch dict, loss)."""
    batch = trainer._generate_and_score_completions([dict(rows[0]) for _ in range(G)])
    loss = trainer._compute_loss(trainer.model, batch)
    return batch, loss


def test_bbox3d_rewards_route_gradient_only_to_bbox3d_tokens(model, tok, rows):
    texts = bbox3d_only(rows[0]["target"])
    t = make(ScriptedGRCA, model, tok, rows, encode(tok, texts), "grca", background="zero")
    batch, loss = step(t, rows)
    log = t._metrics["train"]
    assert log["adv/bbox3d_zero_std_frac"][-1] == 0.0
    for name in ("bbox2d", "kpts2d", "kpts3d"):
        assert log[f"adv/{name}_zero_std_frac"][-1] == 1.0
    loss.backward()
    grad = t.probe.grad  # (B, T)
    mask = batch["completion_mask"].bool()
    on_bbox3d = (batch["field_ids"] == BBOX3D) & mask
    assert on_bbox3d.sum(1).min() > 0  # every completion has bbox3d tokens
    assert torch.equal(grad != 0, on_bbox3d)
    # the parameter gradient is non-zero (the signal reaches the model)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in t.model.parameters())


def test_grpo_gives_every_token_the_same_advantage(model, tok, rows):
    texts = scripted_completions(rows[0]["target"], Q)
    t = make(ScriptedGRCA, model, tok, rows, encode(tok, texts), "grpo")
    batch, _ = step(t, rows)
    adv, mask = batch["advantages"], batch["completion_mask"].bool()
    assert adv.shape == batch["completion_ids"].shape
    for i in range(G):
        row = adv[i][mask[i]]
        assert torch.all(row == row[0])
    assert adv[:, 0].std() > 0  # the completions differ


def test_grca_with_equal_field_rewards_reproduces_grpo(model, tok, rows):
    """Field advantages are standardized in float64, TRL's in float32: equal to 1e-6."""
    script = encode(tok, scripted_completions(rows[0]["target"], Q))
    grpo = make(ScriptedGRCA, model, tok, rows, script, "grpo")
    grca = make(EqualFieldsGRCA, model, tok, rows, script, "grca")
    b1, l1 = step(grpo, rows)
    b2, l2 = step(grca, rows)
    mask = b1["completion_mask"].bool()
    assert (b2["field_ids"][mask] > 0).float().mean() > 0.5  # most tokens are routed
    torch.testing.assert_close(b1["advantages"][mask], b2["advantages"][mask], rtol=0, atol=2e-6)
    torch.testing.assert_close(l1, l2, rtol=0, atol=2e-6)


def test_grpo_variant_matches_trl_grpo_trainer(model, tok, rows):
    script = encode(tok, scripted_completions(rows[0]["target"], Q))
    ours = make(ScriptedGRCA, model, tok, rows, script, "grpo")
    trl = make(ScriptedTRL, model, tok, rows, script, None)
    b1, l1 = step(ours, rows)
    b2, l2 = step(trl, rows)
    mask = b1["completion_mask"].bool()
    # TRL's (B,) advantages broadcast == our (B, T) ones
    torch.testing.assert_close(
        b1["advantages"], b2["advantages"].unsqueeze(1).expand_as(mask) * 1.0
    )
    # on-policy, the surrogate's value is -mean(A) ~ 0: compare it loosely, gradients tightly
    torch.testing.assert_close(l1, l2, rtol=0, atol=1e-6)
    l1.backward()
    l2.backward()
    for (n, p1), p2 in zip(ours.model.named_parameters(), trl.model.parameters()):
        assert p1.grad is not None and p1.grad.abs().sum() > 0, n
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-4, atol=1e-7, msg=n)


def test_gdpo_variant_matches_trl_gdpo(model, tok, rows):
    """gdpo = TRL's own normalize-then-sum over r_seq's components (fields + format)."""
    script = encode(tok, scripted_completions(rows[0]["target"], Q))
    ours = make(ScriptedGRCA, model, tok, rows, script, "gdpo")
    trl = make(
        ScriptedTRL, model, tok, rows, script, None,
        columns=(*GEOMETRIC_FIELDS, "format"),
        multi_objective_aggregation="normalize_then_sum",
        reward_weights=[0.25] * 4 + [0.1],
    )  # fmt: skip
    b1, l1 = step(ours, rows)
    b2, l2 = step(trl, rows)
    torch.testing.assert_close(
        b1["advantages"], b2["advantages"][:, None].expand_as(b1["advantages"])
    )
    assert b1["advantages"].std() > 0
    torch.testing.assert_close(l1, l2, rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", ["grpo", "gdpo", "grca", "grca_bg0", "grca_rpc"])
def test_trainer_advantages_equal_the_rl_step(model, tok, rows, variant):
    """The trainer's (B, T) advantages are ``pointvl.step.score_and_route`` of the batch."""
    from pointvl.spans import TokenLengths
    from pointvl.step import score_and_route

    script = encode(tok, scripted_completions(rows[0]["target"], Q))
    t = make(ScriptedGRCA, model, tok, rows, script, variant)
    batch, _ = step(t, rows)
    mask = batch["completion_mask"].bool()
    texts = tok.batch_decode(script, skip_special_tokens=True)
    ref = score_and_route(
        texts, script, [rows[0]["target"]] * G, TokenLengths(tok), G, [variant],
        CreditConfig(), Scoring(Q), num_tokens=mask.shape[1],
    )  # fmt: skip
    torch.testing.assert_close(
        batch["advantages"][mask], ref.advantages[variant][mask].float(), rtol=1e-5, atol=1e-5
    )
    assert torch.equal(batch["field_ids"][mask], ref.field_ids[mask])


def test_every_variant_logs_the_same_metric_names(model, tok, rows):
    script = encode(tok, scripted_completions(rows[0]["target"], Q))
    names = {}
    for v in ("grpo", "gdpo", "grca", "grca_bg0", "grca_rpc"):
        t = make(ScriptedGRCA, model, tok, rows, script, v)
        step(t, rows)
        names[v] = {n for n in t._metrics["train"] if not n.startswith("rewards/")}
    assert len({frozenset(n) for n in names.values()}) == 1, names
    expected = {f"reward/{f}" for f in GEOMETRIC_FIELDS} | {"reward/rpc", "reward/seq"}
    expected |= {f"adv/{f}_zero_std_frac" for f in GEOMETRIC_FIELDS}
    expected |= {f"spans/{f}_coverage" for f in GEOMETRIC_FIELDS} | {"spans/parse_fail_frac"}
    expected |= {"loss/clipfrac", "entropy", "completions/mean_length"}
    assert expected <= names["grca"]


def test_fused_and_forward_log_probs_agree(model, tok, rows):
    """The extra-input path (model forward) gives TRL's fused-head log-probs on a plain LM."""
    script = encode(tok, scripted_completions(rows[0]["target"], Q))
    t = make(ScriptedGRCA, model, tok, rows, script, "grca")
    batch, _ = step(t, rows)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    am = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    K = batch["completion_ids"].shape[1]
    with torch.no_grad():
        t._model_extras = {}
        fused, ent_f, _ = t._get_per_token_logps_and_entropies(
            t.model, ids, am, K, compute_entropy=True
        )
        # a zero-width extra input switches to the forward path without changing the model input
        t._model_extras = {"dummy": torch.zeros(ids.shape[0], 0)}
        t.concat_keys = ()
        orig = t._extras_to_model_kwargs
        t._extras_to_model_kwargs = lambda extras, s=0, e=None: {}
        plain, ent_p, _ = t._get_per_token_logps_and_entropies(
            t.model, ids, am, K, compute_entropy=True
        )
        t._extras_to_model_kwargs = orig
    m = batch["completion_mask"].bool()
    torch.testing.assert_close(fused[m], plain[m], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent_f[m], ent_p[m], rtol=1e-4, atol=1e-4)


def test_unknown_variant_is_rejected(model, tok, rows):
    with pytest.raises(ValueError, match="grca_rpc"):
        make(ScriptedGRCA, model, tok, rows, [[1]], "ppo")


class LengthTask(GeometryTask):
    """Rewards that vary with the sampled text (a random LM writes no JSON), so the loss moves."""

    def score(self, completions, inputs) -> FieldScores:
        s = super().score(completions, inputs)
        r = np.array([(len(c) % 7) / 7.0 for c in completions])
        s.columns["seq"] = r  # r_seq: the background advantage of grca (background="seq")
        s.columns["rpc"] = 1.0 - r
        return s


class LengthRewards(GRCATrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.task.task = LengthTask(self.scoring)


def test_rl_resume_ends_with_the_same_weights(model, tok, tmp_path):
    """Sampling, data order, optimizer and weights all resume: killed after step 3 of 4 and
    resumed from checkpoint-2, the run ends bitwise where the uninterrupted one does."""
    from pointvl.train.sft import CompleteMarker, StopAfter, last_complete_checkpoint

    def train(out, callbacks=(), resume=False):
        args = GRPOConfig(
            output_dir=str(out), per_device_train_batch_size=4, num_generations=4,
            max_completion_length=16, max_steps=4, save_steps=2, learning_rate=1e-3,
            use_cpu=True, bf16=False, report_to=[], seed=0, disable_tqdm=True,
        )  # fmt: skip
        t = LengthRewards(
            copy.deepcopy(model), args=args, train_dataset=Dataset.from_list(tiny_rows(8, tok)),
            processing_class=tok, variant="grca_rpc", callbacks=[CompleteMarker(), *callbacks],
        )  # fmt: skip
        t.train(resume_from_checkpoint=last_complete_checkpoint(out) if resume else None)
        return {k: v.clone() for k, v in t.model.state_dict().items()}

    straight = train(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", [StopAfter(3)])
    assert last_complete_checkpoint(tmp_path / "b").endswith("checkpoint-2")
    resumed = train(tmp_path / "b", resume=True)
    moved = [k for k in straight if not torch.equal(straight[k], model.state_dict()[k])]
    assert moved  # the run did learn something
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=0, atol=0, msg=k)
