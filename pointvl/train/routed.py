"""``RoutedGRPOTrainer``: TRL's GRPO with per-field advantages routed to their tokens, for any
structured-output task (Secs. 3.3-3.5 of the paper, written for any TRL user).

A *field task* says, for a batch of completions, what each field's reward is and where each
field's value sits in the text::

    task.fields                      ("bbox2d", "bbox3d", ...)       F routed fields
    task.score(completions, inputs)  -> FieldScores:
        rewards  (B, F)              r_{i,k}, one reward per field
        spans    [{field: (start, end) | None}] * B   character span of each field's value
        columns  {name: (B,)}        anything else (logged as reward/<name>; usable by
                                     ``TaskReward`` as a TRL reward function or for shaping)

The trainer keeps TRL's whole GRPO step — generation, ``reward_funcs``, its (B,) sequence
advantage, the clipped loss — and replaces only the advantage tensor by a (B, T) one::

    Â_{i,k}   = (r_{i,k} − mean_g r_{·,k}) / (std_g r_{·,k} + ε)             (Eq. 9, per field)
    A^bg_i    = TRL's advantage of completion i (from ``reward_funcs``),  or 0  (Eq. 10b)
    A^bg_i   ← (1 − λ) A^bg_i + λ Â_{i,shaping}                                (Eq. 14, optional)
    A_{i,t}   = Σ_k m_{i,t,k} Â_{i,k}   if token t lies in some field span, else A^bg_i  (Eq. 10)

m_{i,t,k} = 1 when token t belongs to field k's span (the majority-of-characters rule of
``pointvl.spans``; disjoint spans give the partition of Eq. 7, so the sum has one term).
Two reductions are tested against TRL itself: with every field reward equal to the sequence
reward this is TRL's GRPO; with every field spanning the whole completion and
``aggregation="normalize_then_sum"`` it is TRL's GDPO (``multi_objective_aggregation=
"normalize_then_sum"``): then A is additionally standardized over the batch like GDPO's sum.

``routing=None`` (or ``Routing(enabled=False)``) keeps TRL's advantages (broadcast to (B, T),
which TRL's loss treats exactly like its (B,)): the GRPO and GDPO arms run through the same
class, so they log the same metrics.

Example, a user's own JSON task (the credit lab's ``pointvl.train.lab.DigitTask`` is the
full version, tested against TRL)::

    class MyTask:
        fields = ("name", "year")
        def score(self, completions, inputs):            # one row per completion
            rewards, spans = [], []
            for text, row in zip(completions, inputs):
                m = {f: re.search(rf'"{f}": "?([^",}}]*)', text) for f in self.fields}
                spans.append({f: m[f].span(1) if m[f] else None for f in self.fields})
                rewards.append([float(m[f] is not None and m[f].group(1) == str(row[f]))
                                for f in self.fields])
            r = np.array(rewards)
            return FieldScores(r, spans, {"seq": r.mean(1)})

    task = MyTask()
    trainer = RoutedGRPOTrainer(model, reward_funcs=[TaskReward(task, "seq")], args=GRPOConfig(...),
                                train_dataset=ds, processing_class=tok, task=task, routing=Routing())

What this relies on in TRL (pinned to 1.16, tested in ``tests/test_train_routed.py``; TRL has
no public advantage hook yet, issues #4525 / #7291): ``_calculate_rewards`` returns the
gathered (B_global, n_funcs) rewards, ``_generate_and_score_completions`` returns a dict whose
``"advantages"`` (local rows) the loss reads, and the loss unsqueezes only 1-D advantages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from trl import GRPOTrainer

from pointvl.config import check_unit_interval
from pointvl.credit import routed_advantages, standardize_in_groups, zero_std_fraction
from pointvl.spans import TokenLengths, _assign, _span_array

Span = tuple[int, int]


@dataclasses.dataclass
class FieldScores:
    """What a field task returns for a batch of B completions."""

    rewards: np.ndarray
    """(B, F) reward of each field, columns in ``task.fields`` order."""
    spans: list[Mapping[str, Span | None]]
    """Per completion, the character span of each field's value (None: no span)."""
    columns: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    """Other per-completion numbers (B,), e.g. the sequence reward; logged as reward/<name>."""
    parse_ok: np.ndarray | None = None
    """(B,) bool, the completion parsed cleanly (logged as spans/parse_fail_frac)."""

    def column(self, name: str, fields: Sequence[str]) -> np.ndarray:
        """A field's reward or another column, (B,)."""
        if name in fields:
            return self.rewards[:, list(fields).index(name)]
        if name not in self.columns:
            raise KeyError(f"no score column {name!r}; have {[*fields, *self.columns]}")
        return self.columns[name]


class FieldTask(Protocol):
    """A structured-output task: named fields, each with a reward and a character span."""

    fields: tuple[str, ...]

    def score(self, completions: Sequence[str], inputs: Sequence[Mapping]) -> FieldScores: ...


def completion_text(completion: Any) -> str:
    """TRL's completion (a string, or a conversational list of messages) -> its text."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], Mapping):
        return str(completion[-1].get("content", ""))
    return str(completion)


class CachedTask:
    """Wraps a ``FieldTask`` so a batch is scored once, however many reward functions and the
    router read it (keyed by the completion texts)."""

    def __init__(self, task: FieldTask):
        self.task = task
        self.fields = tuple(task.fields)
        self._key: tuple | None = None
        self._scores: FieldScores | None = None

    def score(self, completions: Sequence[Any], inputs: Sequence[Mapping]) -> FieldScores:
        texts = [completion_text(c) for c in completions]
        key = tuple(texts)
        if key != self._key:
            self._scores = self.task.score(texts, inputs)
            self._key = key
        return self._scores


class TaskReward:
    """One column of a field task's scores as a TRL reward function (``reward_funcs``).

    Works in any ``GRPOTrainer``; inside ``RoutedGRPOTrainer`` it reads the scores the router
    already computed instead of scoring again.
    """

    def __init__(self, task: CachedTask | FieldTask, column: str):
        self.task = task if isinstance(task, CachedTask) else CachedTask(task)
        self.column = column
        self.__name__ = column

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        n = len(completions)
        skip = {"trainer_state", "log_extra", "log_metric", "environments", "completion_ids"}
        keys = [k for k, v in kwargs.items() if k not in skip and isinstance(v, list)]
        inputs = [{k: kwargs[k][i] for k in keys} for i in range(n)]
        scores = self.task.score(completions, inputs)
        return scores.column(self.column, self.task.fields).astype(float).tolist()


@dataclasses.dataclass(frozen=True)
class Routing:
    """How per-field advantages replace TRL's broadcast one."""

    enabled: bool = True
    """False: TRL's advantages are kept (GRPO, GDPO arms)."""
    background: str = "trl"
    """Eq. (10b): ``trl`` = TRL's sequence advantage from ``reward_funcs``; ``zero`` = 0."""
    shaping: str | None = None
    """Eq. (14): a score column mixed into the background (e.g. ``rpc``); None: no shaping."""
    lam: float = 0.0
    """Eq. (14): mixing weight λ in [0, 1]."""
    aggregation: str = "route"
    """``route`` (GRCA) or ``normalize_then_sum`` (also batch-standardize, as TRL's GDPO)."""
    eps: float = 1e-4
    """ε of Eq. (9) (TRL: 1e-4)."""

    def __post_init__(self):
        if self.background not in ("trl", "zero"):
            raise ValueError(f"Routing.background={self.background!r}: expected 'trl' or 'zero'")
        check_unit_interval("Routing.lam", self.lam, ValueError)
        if self.aggregation not in ("route", "normalize_then_sum"):
            raise ValueError(
                f"Routing.aggregation={self.aggregation!r}: expected 'route' or 'normalize_then_sum'"
            )


def token_membership(
    spans: Sequence[Mapping[str, Span | None]],
    offsets: Sequence[np.ndarray],
    fields: Sequence[str],
    num_tokens: int,
) -> torch.Tensor:
    """(B, T, F) bool: token t of row i belongs to field k's span (majority of its characters).

    Disjoint spans: the partition of ``spans.batch_field_token_ids`` (one field at most per
    token). Overlapping spans (nested or equal): each field is assigned on its own, so a token
    can belong to several.
    """
    B, F = len(spans), len(fields)
    off = np.zeros((B, num_tokens, 2), dtype=np.int64)  # (B, T, 2)
    for i, o in enumerate(offsets):
        o = np.asarray(o, dtype=np.int64).reshape(-1, 2)[:num_tokens]
        off[i, : len(o)] = o
    arr = np.stack([_span_array(s, fields) for s in spans]) if B else np.zeros((0, F, 2), int)
    out = np.zeros((B, num_tokens, F), dtype=bool)
    for i in range(B):
        s = arr[i]  # (F, 2)
        order = np.argsort(s[:, 0], kind="stable")
        nonempty = s[order][s[order, 1] > s[order, 0]]
        disjoint = bool(np.all(nonempty[1:, 0] >= nonempty[:-1, 1]))
        if disjoint:
            ids = _assign(off[i], s)  # (T,) 0 = background
            out[i] = ids[:, None] == np.arange(1, F + 1)[None, :]
        else:
            for k in range(F):
                out[i, :, k] = _assign(off[i], s[k : k + 1]) == 1
    return torch.from_numpy(out)


def route(
    field_adv: torch.Tensor,
    membership: torch.Tensor,
    background: torch.Tensor,
) -> torch.Tensor:
    """A_{i,t} = Σ_k m_{i,t,k} Â_{i,k} where some m_{i,t,k} = 1, else A^bg_i.

    ``field_adv`` (B, F), ``membership`` (B, T, F) bool, ``background`` (B,) -> (B, T).
    With disjoint spans this is Eq. (10) (``credit.routed_advantages``)."""
    m = membership.to(field_adv.dtype)  # (B, T, F)
    in_field = membership.any(-1)  # (B, T)
    summed = torch.einsum("btf,bf->bt", m, field_adv)  # (B, T)
    return torch.where(in_field, summed, background[:, None].to(field_adv.dtype))  # (B, T)


class RoutedGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose (B,) advantages become (B, T) per-field routed advantages.

    Args beyond ``GRPOTrainer``'s:
        task: the field task (``FieldTask``).
        routing: ``Routing`` (None: TRL's advantages, unchanged).
    ``reward_funcs`` is TRL's: it defines the sequence advantage (the background). Use
    ``TaskReward(task, column)`` to turn a task's column into a reward function.
    """

    def __init__(self, *args, task: FieldTask, routing: Routing | None = None, **kwargs):
        self.task = task if isinstance(task, CachedTask) else CachedTask(task)
        self.routing = routing or Routing(enabled=False)
        self._field_scores: FieldScores | None = None
        self._gathered: torch.Tensor | None = None
        self._local: tuple[list[str], list[list[int]]] = ([], [])
        funcs = kwargs.get("reward_funcs", args[1] if len(args) > 1 else None)
        for f in funcs if isinstance(funcs, list | tuple) else [funcs]:
            if isinstance(f, TaskReward):
                f.task = self.task  # share the cache: the batch is scored once
        super().__init__(*args, **kwargs)
        self._token_lengths = TokenLengths(self._tokenizer)

    # ------------------------------------------------------------------ scores, once
    def _score_columns(self) -> list[str]:
        return [*self.task.fields, *sorted(self._field_scores.columns)]

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        """Score the task once (local rows), gather its table, then TRL's reward functions."""
        self._field_scores = self.task.score(completions, inputs)
        self._local = ([completion_text(c) for c in completions], list(completion_ids_list))
        cols = self._score_columns()
        table = np.column_stack([self._field_scores.column(c, self.task.fields) for c in cols])
        local = torch.as_tensor(table, dtype=torch.float64, device=self.accelerator.device)
        self._gathered = self.accelerator.gather(local)  # (B_global, F + C)
        return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)

    # ------------------------------------------------------------------ advantages
    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        G = self.num_generations if mode == "train" else self.num_generations_eval
        ids = out["completion_ids"]  # (B, T)
        B, T = ids.shape
        F = len(self.task.fields)
        gathered = self._gathered.cpu()  # (B_global, F + C)
        start = self.accelerator.process_index * B
        field_adv = standardize_in_groups(gathered[:, :F], G, self.routing.eps)  # (B_g, F)
        field_adv = field_adv[start : start + B]  # (B, F)
        membership = self._membership(T)  # (B, T, F)
        # 0 = background, k + 1 = the (first) field of the token, for logs, figures and tests
        out["field_ids"] = torch.where(membership.any(-1), membership.long().argmax(-1) + 1, 0).to(
            ids.device
        )  # (B, T)
        if self.routing.enabled:
            out["advantages"] = self._routed(out, field_adv, membership, gathered, G, start)
        else:  # TRL's advantage of each completion on each of its tokens (same loss)
            out["advantages"] = out["advantages"].unsqueeze(1).expand(-1, T).contiguous()
        self._log_fields(mode, gathered, membership, G)
        return out

    def _membership(self, T: int) -> torch.Tensor:
        """(B, T, F) field membership of the local completion tokens."""
        texts, ids = self._local
        spans = self._field_scores.spans
        empty = np.zeros((0, 2), np.int64)
        offsets = [
            self._token_lengths.offsets(row, text)
            if any(v is not None for v in sp.values())
            else empty
            for row, text, sp in zip(ids, texts, spans, strict=True)
        ]
        return token_membership(spans, offsets, self.task.fields, T)

    def _routed(self, out, field_adv, membership, gathered, G, start) -> torch.Tensor:
        """Eqs. (9), (10), (10b), (14): the (B, T) advantages of the local rows."""
        B = field_adv.shape[0]
        r = self.routing
        trl_adv = out["advantages"].detach().double().cpu()  # (B,)
        bg = trl_adv if r.background == "trl" else torch.zeros(B, dtype=torch.float64)
        if r.shaping is not None and r.lam > 0:
            col = self._score_columns().index(r.shaping)
            shaping = standardize_in_groups(gathered[:, col], G, r.eps)[start : start + B]  # (B,)
            bg = (1.0 - r.lam) * bg + r.lam * shaping  # (B,)
        adv = route(field_adv, membership, bg)  # (B, T)
        if r.aggregation == "normalize_then_sum":
            # GDPO's batch standardization of the per-completion sum s_i = Σ_k Â_{i,k}, applied
            # to the field tokens (the background already holds TRL's advantage)
            s = self.accelerator.gather(field_adv.sum(1).to(self.accelerator.device)).cpu()
            in_field = membership.any(-1)  # (B, T)
            adv = torch.where(in_field, (adv - s.mean()) / (s.std() + r.eps), adv)  # (B, T)
        return adv.to(device=out["advantages"].device, dtype=torch.float32)

    def _log_fields(self, mode: str, gathered, membership, G: int) -> None:
        """reward/<column>, adv/<field>_zero_std_frac (global); spans/* (local, averaged)."""
        m = self._metrics[mode]
        for j, name in enumerate(self._score_columns()):
            m[f"reward/{name}"].append(float(gathered[:, j].mean()))
        F = len(self.task.fields)
        frac = zero_std_fraction(gathered[:, :F], G)  # (F,)
        for k, name in enumerate(self.task.fields):
            m[f"adv/{name}_zero_std_frac"].append(float(frac[k]))
        local = [float(membership[:, :, k].any(1).double().mean()) for k in range(F)]
        ok = self._field_scores.parse_ok
        local.append(float(np.mean(~ok)) if ok is not None else float("nan"))
        stats = self.accelerator.gather(
            torch.tensor([local], dtype=torch.float64, device=self.accelerator.device)
        ).mean(0)  # (F + 1,)
        for k, name in enumerate(self.task.fields):
            m[f"spans/{name}_coverage"].append(float(stats[k]))
        m["spans/parse_fail_frac"].append(float(stats[-1]))


__all__ = [
    "CachedTask",
    "FieldScores",
    "FieldTask",
    "RoutedGRPOTrainer",
    "Routing",
    "TaskReward",
    "completion_text",
    "route",
    "routed_advantages",
    "token_membership",
]
