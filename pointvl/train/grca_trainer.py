"""``GRCATrainer``: the point-cloud layer + the routed GRPO trainer + our JSON field task.

    GRCATrainer = PointCloudInputs (pointvl.train.pointcloud)   extra inputs, on-policy rollouts
                + RoutedGRPOTrainer (pointvl.train.routed)      per-field routed advantages
                with GeometryTask (below)                       fields, rewards and spans of
                                                                ``pointvl.step`` (parse, score)

One RL step (the ``rl step`` row of DESIGN.md)::

    rows (prompt, target, index) x G        TRL's RepeatSampler, group-major
      -> rollouts: pointvl.eval.generate.decode (point clouds, images; the evaluation sampler)
      -> GeometryTask.score: parse_output -> score_batch, once per completion   (Eqs. 8, 13)
      -> TRL: reward_funcs (task columns) -> its (B,) sequence advantage       (Eq. 16)
      -> routing: per-field standardization, spans -> tokens, background       (Eqs. 6-10, 14)
      -> TRL's clipped surrogate, unchanged (it accepts (B, T) advantages)     (Eq. 15)

The arms (``VARIANTS``) differ only in their reward functions and routing:

    grpo       r_seq                               broadcast (TRL's GRPO)             Eq. 16
    gdpo       r_bbox2d..r_kpts3d, r_format        normalize-then-sum, broadcast      (ours)
    grca       r_seq (background) + field rewards  routed, A_bg = Â_seq               Eqs. 9-10
    grca_bg0   field rewards                       routed, A_bg = 0                   (ours)
    grca_rpc   as grca + r_rpc                     A_bg = (1-λ) Â_seq + λ Â_rpc       Eq. 14

``Scoring.keypoint_reward = "matched"`` swaps the paper's keypoint reward for a collapse-proof
one (``rewards.matched_keypoint_reward``) in any arm. The trainer's advantages equal
``pointvl.step.score_and_route`` of the same batch (tested).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from transformers import PreTrainedModel

from pointvl.credit import CreditConfig
from pointvl.schema import GEOMETRIC_FIELDS
from pointvl.step import Scoring, score
from pointvl.train.pointcloud import EXTRA_PREFIX, PointCloudInputs
from pointvl.train.routed import (
    CachedTask,
    FieldScores,
    RoutedGRPOTrainer,
    Routing,
    TaskReward,
    completion_text,
)
from pointvl.train.sft import LoadByFromPretrained

OTHER_COLUMNS = ("seq", "rpc", "format", "answer", "description")


class GeometryTask:
    """Our JSON task as a field task: the four geometric fields, their Eq. (8) rewards and
    value spans; ``seq``, ``rpc``, ``format``, ``answer``, ``description`` as columns."""

    fields = GEOMETRIC_FIELDS

    def __init__(self, scoring: Scoring | None = None, target_key: str = "target"):
        self.scoring = scoring or Scoring()
        self.target_key = target_key

    def score(self, completions: Sequence[str], inputs: Sequence[Mapping]) -> FieldScores:
        texts = [completion_text(c) for c in completions]
        scored = score(texts, [x[self.target_key] for x in inputs], self.scoring)
        s = scored.scores
        return FieldScores(
            rewards=s["per_field_rewards"],
            spans=[p.char_spans for p in scored.parsed],
            columns={name: s[name] for name in OTHER_COLUMNS},
            parse_ok=np.array([p.ok for p in scored.parsed]),
        )


@dataclasses.dataclass(frozen=True)
class Arm:
    """An RL arm: which task columns are TRL's reward functions, their weights, TRL's
    aggregation, and the routing of field advantages."""

    rewards: tuple[str, ...]
    weights: tuple[float, ...] | None
    aggregation: str
    routing: Routing


def arm(variant: str, credit: CreditConfig, format_weight: float) -> Arm:
    """The ``Arm`` of a variant name (see the module docstring's table)."""
    bg = "trl" if credit.background == "seq" else "zero"
    seq = dict(rewards=("seq",), weights=None, aggregation="sum_then_normalize")
    F = len(GEOMETRIC_FIELDS)
    arms = {
        "grpo": Arm(**seq, routing=Routing(enabled=False)),
        "gdpo": Arm(
            rewards=(*GEOMETRIC_FIELDS, "format"),
            weights=(*(1.0 / F,) * F, format_weight),
            aggregation="normalize_then_sum",
            routing=Routing(enabled=False),
        ),
        "grca": Arm(**seq, routing=Routing(background=bg, eps=credit.eps)),
        "grca_bg0": Arm(**seq, routing=Routing(background="zero", eps=credit.eps)),
        "grca_rpc": Arm(
            **seq, routing=Routing(background=bg, shaping="rpc", lam=credit.lam, eps=credit.eps)
        ),
    }
    if variant not in arms:
        raise ValueError(f"unknown RL variant {variant!r}; accepted: {tuple(arms)}")
    return arms[variant]


VARIANTS = ("grpo", "gdpo", "grca", "grca_bg0", "grca_rpc")


class GRCATrainer(LoadByFromPretrained, PointCloudInputs, RoutedGRPOTrainer):
    """The RL trainer of every arm (``variant``) on the PointVL policy or any causal LM.

    Args beyond ``GRPOTrainer``'s (``reward_funcs`` is set by the variant):
        variant: one of ``VARIANTS``.
        credit: ``CreditConfig`` (background mode, λ, ε).
        scoring: ``Scoring`` (Q, M, format weight, keypoint reward).
        target_key: dataset column holding each row's reward target (``pointvl.rewards``).
        model_input_keys, model_inputs_fn, concat_keys, extra_columns, group_key,
        freeze_batchnorm: the point-cloud layer (``pointvl.train.pointcloud``).
    ``args.reward_weights`` and ``args.multi_objective_aggregation`` are set from the arm (on a
    copy of ``args``).
    """

    def __init__(
        self,
        model,
        args=None,
        train_dataset=None,
        processing_class=None,
        *,
        variant: str = "grca",
        credit: CreditConfig | None = None,
        scoring: Scoring | None = None,
        target_key: str = "target",
        extra_columns: Sequence[str] = (),
        **kwargs,
    ):
        self.variant = variant
        self.credit = credit or CreditConfig()
        self.scoring = scoring or Scoring()
        self.arm = arm(variant, self.credit, self.scoring.format_weight)
        task = CachedTask(GeometryTask(self.scoring, target_key))
        init_kwargs = None
        if args is not None:
            args = copy.copy(args)
            args.reward_weights = list(self.arm.weights) if self.arm.weights else None
            args.multi_objective_aggregation = self.arm.aggregation
            # beta > 0: TRL rebuilds the reference policy from the checkpoint path; name its
            # class (TRL's fallback reads ``config.auto_map``, which only remote-code configs have)
            if args.beta != 0.0 and isinstance(model, PreTrainedModel):
                init_kwargs = args.model_init_kwargs
                args.model_init_kwargs = {**(init_kwargs or {}), "architecture": type(model)}
        super().__init__(
            model=model,
            reward_funcs=[TaskReward(task, c) for c in self.arm.rewards],
            args=args,
            train_dataset=train_dataset,
            processing_class=processing_class,
            task=task,
            routing=self.arm.routing,
            extra_columns=(target_key, *extra_columns),
            **kwargs,
        )
        if init_kwargs is not None or (args is not None and args.beta != 0.0):
            self.args.model_init_kwargs = init_kwargs  # keep the arguments serializable


__all__ = ["EXTRA_PREFIX", "GRCATrainer", "GeometryTask", "VARIANTS", "arm"]
