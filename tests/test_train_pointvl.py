"""Point clouds flow through GRCATrainer with the PointVL policy: generation, old log-probs,
TRL's shuffle/split of the generation batch, and the loss's log-prob recomputation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig

from pointvl.model import ModelConfig
from pointvl.model.policy import build_tiny_policy
from pointvl.train.grca_trainer import EXTRA_PREFIX, GRCATrainer
from pointvl.train.tiny import tiny_policy_rows, tiny_tokenizer

SMALL = dataclasses.replace(ModelConfig(), num_points=128, num_groups=8, points_per_group=16)
KEYS = ("point_clouds", "pixel_values", "image_grid_thw")
G = 4


@pytest.fixture(scope="module")
def setup():
    tok = tiny_tokenizer()
    model, proc = build_tiny_policy(tok, SMALL)
    model.generation_config.eos_token_id = proc.eos_token_ids
    rows = tiny_policy_rows(proc, 2, SMALL.num_points, (60, 80), "Locate the object.")
    args = GRPOConfig(
        output_dir="/tmp/pointvl_test_pointvl",
        per_device_train_batch_size=G,
        steps_per_generation=2,  # old log-probs are computed, then the batch is shuffled + split
        num_generations=G,
        max_completion_length=12,
        max_steps=1,
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
        seed=0,
        generation_kwargs={
            "suppress_tokens": [model.config.image_token_id, model.config.point_token_id]
        },
    )
    trainer = GRCATrainer(
        model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=proc.tokenizer,
        variant="grca_rpc",
        model_input_keys=KEYS,
        concat_keys=("pixel_values", "image_grid_thw"),
    )
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    gen_rows = [dict(trainer.train_dataset[j]) for j in (0, 1) for _ in range(G)]
    return trainer, gen_rows


def logps_of(trainer, inputs, extras):
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    am = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    trainer._model_extras = extras
    with torch.no_grad():
        lp, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, am, inputs["completion_ids"].shape[1]
        )
    return lp


def test_point_clouds_stay_aligned_through_shuffle_and_split(setup):
    trainer, gen_rows = setup
    torch.manual_seed(0)
    inputs = trainer._prepare_inputs(gen_rows)  # generate, score, shuffle, split: first slice
    assert trainer.frozen_batchnorm > 0  # Point-BERT BatchNorm runs on running statistics
    assert inputs["completion_ids"].shape[0] == G
    extras = {k[len(EXTRA_PREFIX) :]: v for k, v in inputs.items() if k.startswith(EXTRA_PREFIX)}
    assert set(extras) == set(KEYS) and extras["point_clouds"].shape[0] == G
    mask = inputs["completion_mask"].bool()
    # recomputed with the (shuffled) point clouds == computed before the shuffle
    lp = logps_of(trainer, inputs, extras)
    torch.testing.assert_close(lp[mask], inputs["old_per_token_logps"][mask], rtol=1e-5, atol=1e-5)
    # and the point clouds matter: other clouds give other log-probs
    other = dict(extras, point_clouds=torch.rand_like(extras["point_clouds"]) - 0.5)
    assert (logps_of(trainer, inputs, other) - lp)[mask].abs().max() > 1e-4
    # one training step through TRL's loss runs with them
    loss = trainer.compute_loss(trainer.model, inputs)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in trainer.model.point_encoder.parameters() if p.requires_grad]
    assert not grads or any(g is not None for g in grads)


def test_reference_model_path_with_beta(setup, tmp_path):
    """beta > 0: TRL rebuilds the reference policy from the checkpoint path (Auto classes);
    its log-probs also receive the point clouds, and start equal to the policy's (KL = 0)."""
    from pointvl.model import PointVLForConditionalGeneration

    trainer, gen_rows = setup
    trainer.model.save_pretrained(tmp_path / "policy")
    model = PointVLForConditionalGeneration.from_pretrained(tmp_path / "policy")
    model.generation_config.eos_token_id = trainer.model.generation_config.eos_token_id
    args = trainer.args
    args.beta = 0.1
    t = GRCATrainer(
        model,
        args=args,
        train_dataset=trainer.train_dataset,
        processing_class=trainer.processing_class,
        variant="grca",
        model_input_keys=KEYS,
        concat_keys=("pixel_values", "image_grid_thw"),
    )
    assert (
        t.ref_model is not None and type(t.ref_model).__name__ == "PointVLForConditionalGeneration"
    )
    t.current_gradient_accumulation_steps = 1
    t.model.train()
    torch.manual_seed(0)
    inputs = t._prepare_inputs(gen_rows)
    mask = inputs["completion_mask"].bool()
    ref, old = inputs["ref_per_token_logps"], inputs["old_per_token_logps"]
    torch.testing.assert_close(ref[mask], old[mask], rtol=1e-5, atol=1e-5)
    t.compute_loss(t.model, inputs)
    assert abs(t._metrics["train"]["kl"][-1]) < 1e-5
