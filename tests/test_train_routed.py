"""``RoutedGRPOTrainer`` for any structured-output task, checked against TRL itself.

The task is the credit lab's (``pointvl.train.lab.DigitTask``: 4 digit fields of a JSON); the
model a random tiny LM; completions are scripted so the rewards are controlled. Reductions:
every field reward = the sequence reward -> TRL's GRPO; every field spanning the whole
completion with ``aggregation="normalize_then_sum"`` -> TRL's GDPO. Also: a user's own plain
reward function keeps working (it sets the background), and the TRL internals the trainer
relies on are pinned.
"""

from __future__ import annotations

import copy
import inspect

import numpy as np
import pytest
import torch
import trl
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from pointvl.train.lab import DigitTask, make_rows, target_text
from pointvl.train.routed import FieldScores, RoutedGRPOTrainer, Routing, TaskReward, route
from pointvl.train.tiny import tiny_lm

G = 8


class Scripted:
    script: list[list[int]] = []

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, **kw):
        return [list(self.script[i % len(self.script)]) for i in range(len(prompt_ids))], None


class ScriptedRouted(Scripted, RoutedGRPOTrainer):
    pass


class ScriptedTRL(Scripted, GRPOTrainer):
    pass


class EqualFields(DigitTask):
    """Every field reward := the sequence reward."""

    def score(self, completions, inputs) -> FieldScores:
        s = super().score(completions, inputs)
        s.rewards = np.repeat(s.columns["seq"][:, None], len(self.fields), 1)
        return s


class WholeSpans(DigitTask):
    """Every field's span is the whole completion."""

    def score(self, completions, inputs) -> FieldScores:
        s = super().score(completions, inputs)
        s.spans = [{f: (0, len(c)) for f in self.fields} for c in completions]
        return s


@pytest.fixture(scope="module")
def tok():
    from pointvl.train.lab import LabConfig, build_tokenizer

    return build_tokenizer(LabConfig())


@pytest.fixture(scope="module")
def model(tok):
    return tiny_lm(tok)


@pytest.fixture(scope="module")
def rows():
    return make_rows(1, 4, seed=3)


def script_for(tok, row) -> list[list[int]]:
    """G completions with different right/wrong fields (and one broken JSON)."""
    rng = np.random.default_rng(0)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    texts = []
    for _ in range(G - 1):
        vals = [v if rng.random() < 0.5 else (v + 1) % 10 for v in row["answers"]]
        texts.append(target_text(vals))
    texts.append('{"a": 1, "b"')
    return [tok(t, add_special_tokens=False)["input_ids"] + [end] for t in texts]


def make(cls, model, tok, rows, task=None, routing=None, funcs=None, **kw):
    args = GRPOConfig(
        output_dir="/tmp/pointvl_test_routed", per_device_train_batch_size=G, num_generations=G,
        max_completion_length=64, max_steps=1, use_cpu=True, report_to=[], save_strategy="no",
        seed=0, loss_type="grpo", **kw,
    )  # fmt: skip
    task = task or DigitTask(4)
    funcs = funcs or [TaskReward(task, "seq")]
    extra = {} if cls is ScriptedTRL else {"task": task, "routing": routing}
    t = cls(
        copy.deepcopy(model), reward_funcs=funcs, args=args,
        train_dataset=Dataset.from_list(rows), processing_class=tok, **extra,
    )  # fmt: skip
    t.script = script_for(tok, rows[0])
    t.current_gradient_accumulation_steps = 1
    t.model.train()
    return t


def step(t, rows):
    batch = t._generate_and_score_completions([dict(rows[0]) for _ in range(G)])
    return batch, t._compute_loss(t.model, batch)


def test_equal_field_rewards_reduce_to_trl_grpo(model, tok, rows):
    ours = make(ScriptedRouted, model, tok, rows, EqualFields(4), Routing())
    ref = make(ScriptedTRL, model, tok, rows)
    b1, l1 = step(ours, rows)
    b2, l2 = step(ref, rows)
    mask = b1["completion_mask"].bool()
    assert (b1["field_ids"][mask] > 0).any()  # routing did happen
    want = b2["advantages"][:, None].expand_as(b1["advantages"])
    torch.testing.assert_close(b1["advantages"][mask], want[mask], rtol=0, atol=2e-6)
    torch.testing.assert_close(l1, l2, rtol=0, atol=2e-6)


def test_whole_completion_spans_reduce_to_trl_gdpo(model, tok, rows):
    task = WholeSpans(4)
    funcs = [TaskReward(task, f) for f in task.fields]
    routing = Routing(aggregation="normalize_then_sum")
    gdpo = {"multi_objective_aggregation": "normalize_then_sum"}  # the background (EOS) too
    ours = make(ScriptedRouted, model, tok, rows, task, routing, funcs, **gdpo)
    ref = make(ScriptedTRL, model, tok, rows, funcs=funcs, **gdpo)
    b1, l1 = step(ours, rows)
    b2, l2 = step(ref, rows)
    mask = b1["completion_mask"].bool()
    want = b2["advantages"][:, None].expand_as(b1["advantages"])
    assert want[:, 0].std() > 0
    torch.testing.assert_close(b1["advantages"][mask], want[mask], rtol=0, atol=2e-5)
    torch.testing.assert_close(l1, l2, rtol=0, atol=2e-5)


def test_user_reward_function_sets_the_background(model, tok, rows):
    """A plain TRL reward function (not a task column) still works: it is TRL's sequence
    reward, hence the background advantage; field tokens get the field advantages."""

    def shortness(prompts, completions, **kwargs):
        return [1.0 / (1 + len(c)) for c in completions]

    t = make(ScriptedRouted, model, tok, rows, DigitTask(4), Routing(), funcs=[shortness])
    ref = make(ScriptedTRL, model, tok, rows, funcs=[shortness])
    b, _ = step(t, rows)
    b_ref, _ = step(ref, rows)
    bg = (b["field_ids"] == 0) & b["completion_mask"].bool()
    want = b_ref["advantages"][:, None].expand_as(b["advantages"])
    torch.testing.assert_close(b["advantages"][bg], want[bg])
    field = (b["field_ids"] > 0) & b["completion_mask"].bool()
    assert not torch.allclose(b["advantages"][field], want[field])
    assert "reward/a" in t._metrics["train"] and "spans/d_coverage" in t._metrics["train"]


def test_route_sums_overlapping_fields_and_matches_eq10_on_disjoint_ones():
    from pointvl.credit import routed_advantages

    rng = np.random.default_rng(0)
    fa = torch.tensor(rng.normal(size=(3, 4)))
    bg = torch.tensor(rng.normal(size=3))
    ids = torch.tensor(rng.integers(0, 5, (3, 7)))
    member = ids[..., None] == torch.arange(1, 5)  # (B, T, F) disjoint
    torch.testing.assert_close(route(fa, member, bg), routed_advantages(fa, ids, bg))
    both = torch.zeros(3, 7, 4, dtype=torch.bool)
    both[:, 2, :2] = True
    assert torch.allclose(route(fa, both, bg)[:, 2], fa[:, 0] + fa[:, 1])


def test_the_trl_internals_we_rely_on_are_pinned():
    """TRL has no public advantage hook (issues #4525, #7291): the trainer overrides these.
    A TRL upgrade that changes them must fail here first."""
    assert trl.__version__ == "1.16.0"
    calc = inspect.signature(GRPOTrainer._calculate_rewards).parameters
    assert list(calc) == ["self", "inputs", "prompts", "completions", "completion_ids_list"]
    src = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    assert '"advantages": advantages' in src or 'output["advantages"]' in src
    loss_src = inspect.getsource(GRPOTrainer._compute_loss)
    assert "advantages.dim() == 1" in loss_src  # (B, T) advantages pass through unchanged
    gen = inspect.signature(GRPOTrainer._generate_single_turn).parameters
    assert list(gen)[:5] == ["self", "prompt_ids", "images", "multimodal_fields", "num_generations"]


def test_digit_task_never_raises_and_scores_fields():
    task = DigitTask(4)
    row = {"answers": [1, 2, 3, 4]}
    texts = [
        '{"a": 1, "b": 5, "c": 3, "d": 4}',
        "",
        '{"a": 1, "a": 1}',
        '{"b": 99999999999999999999}',
    ]
    s = task.score(texts, [row] * 4)
    np.testing.assert_array_equal(s.rewards[0], [1, 0, 1, 1])
    assert s.rewards[1:].sum() == 0 and s.spans[2]["a"] is None  # a field written twice: no span
    assert texts[0][slice(*s.spans[0]["b"])] == "5"
    assert s.parse_ok.tolist() == [True, False, False, False]
