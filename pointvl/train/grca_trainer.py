"""``GRCATrainer``: TRL's ``GRPOTrainer`` with per-token (routed) advantages, Sec. 3.2-3.5.

One RL step (the ``rl step`` row of DESIGN.md)::

    rows (prompt, target, point_clouds, ...)  x G   (TRL's RepeatSampler, group-major)
      -> generate (point clouds passed to ``model.generate``)
      -> _calculate_rewards: parse_output -> score_batch, once per completion   (Eqs. 8, 13)
         keeps per_field_rewards (B, F), rpc, seq ...; returns r_seq to TRL
      -> super()._generate_and_score_completions  (TRL: old/ref log-probs, its (B,) advantages)
      -> field ids (B, T) from char spans + token offsets                        (Eqs. 6-7)
      -> ADVANTAGE_BUILDERS[variant] -> (B, T) advantages replace TRL's (B,)    (Eqs. 9-14, 16)
      -> TRL's clipped surrogate, unchanged (it accepts (B, T) advantages)      (Eqs. 15-16)

The variants (``grpo``, ``grca``, ``grca_rpc``) differ *only* in the advantage builder taken
from ``pointvl.credit.ADVANTAGE_BUILDERS``; everything else, including the logged metrics, is
the same code path. ``grpo`` reproduces TRL's own broadcast advantages (tested).

Extra model inputs (point clouds). Dataset rows carry the model's extra inputs as columns
(``model_input_keys``, e.g. ``("point_clouds", "pixel_values", "image_grid_thw")``). They are
stacked per row into B-first tensors, passed to ``generate``, stored in the generation batch
under ``extra.<key>`` (so TRL's shuffle/split keeps them aligned with their rows) and passed to
every log-prob recomputation (old, reference and current policy). Keys in ``concat_keys`` are
flattened over their first two dims before reaching the model (Qwen-style ``pixel_values``
(B, patches, d) -> (B * patches, d), ``image_grid_thw`` (B, 1, 3) -> (B, 3)).
With extra inputs, log-probs come from the model's ordinary forward (logits of the completion
positions, divided by the temperature) instead of TRL's fused LM head: the fused head calls the
text backbone directly and would silently drop the point clouds. Both give the same log-probs
on a plain LM (tested).

Departures from TRL: none in the loss. ``loss/clipfrac`` is TRL's ``clip_ratio/region_mean``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, TrainerCallback
from trl import GRPOTrainer
from trl.trainer.utils import entropy_from_logits, selective_log_softmax

from pointvl.credit import ADVANTAGE_BUILDERS, CreditConfig, CreditInputs, zero_std_fraction
from pointvl.rewards import score_batch
from pointvl.schema import GEOMETRIC_FIELDS, NUM_KEYPOINTS, parse_output
from pointvl.spans import TokenLengths, batch_field_token_ids
from pointvl.train.sft import LoadByFromPretrained

EXTRA_PREFIX = "extra."
# columns of the gathered score table, in order
SCORE_COLUMNS = ("seq", *GEOMETRIC_FIELDS, "rpc", "format", "answer", "description")


def completion_text(completion: Any) -> str:
    """TRL's completion (a string, or a conversational list of messages) -> its text."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], Mapping):
        return str(completion[-1].get("content", ""))
    return str(completion)


class SequenceReward:
    """r_seq (Eq. 10b) as a TRL reward function: parse each completion, score it.

    ``GRCATrainer`` does not call it (it scores every field once in ``_calculate_rewards``);
    it is what an unmodified ``GRPOTrainer`` uses for the same reward (benchmark, tests).
    """

    __name__ = "seq"

    def __init__(self, quant_bins: int, num_keypoints: int = NUM_KEYPOINTS, format_weight=0.1):
        self.quant_bins = quant_bins
        self.num_keypoints = num_keypoints
        self.format_weight = format_weight

    def __call__(self, prompts, completions, target, **kwargs) -> list[float]:
        parsed = [parse_output(completion_text(c), self.num_keypoints) for c in completions]
        scores = score_batch(parsed, target, self.quant_bins, self.format_weight)
        return scores["seq"].tolist()


def stack_rows(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """Per-row model inputs -> B-first tensors; float64 is cast to float32."""
    out = {}
    for key in keys:
        ts = []
        for r in rows:
            if key not in r:
                raise KeyError(f"dataset row lacks model input column {key!r}")
            t = torch.as_tensor(np.asarray(r[key]) if not torch.is_tensor(r[key]) else r[key])
            ts.append(t.float() if t.dtype == torch.float64 else t)
        out[key] = torch.stack(ts)  # (B, ...)
    return out


def freeze_batchnorm_statistics(model: torch.nn.Module) -> int:
    """Make every BatchNorm layer of ``model`` use (and keep) its running statistics, even
    after ``model.train()``: a forward pre-hook sets ``training = False``. Returns the count."""

    def _eval_mode(module, args):
        module.training = False

    n = 0
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.register_forward_pre_hook(_eval_mode)
            n += 1
    return n


class GRCATrainer(LoadByFromPretrained, GRPOTrainer):
    """``GRPOTrainer`` whose advantages are built per token by ``ADVANTAGE_BUILDERS[variant]``.

    Args beyond ``GRPOTrainer``'s (``reward_funcs`` is fixed: r_seq, scored here):
        variant: ``grpo`` | ``grca`` | ``grca_rpc``.
        credit: ``CreditConfig`` (background mode, λ, ε).
        quant_bins, num_keypoints, format_weight: how completions are parsed and scored.
        target_key: dataset column holding each row's reward target (see ``pointvl.rewards``).
        model_input_keys: dataset columns passed to the model (e.g. ``point_clouds``).
        concat_keys: those of ``model_input_keys`` flattened over dims 0-1 for the model.
        model_inputs_fn: instead of stacking columns, build the B-first extra inputs from the
            rows (e.g. look the point cloud up by a row index); its keys are the extra keys.
        freeze_batchnorm: run BatchNorm layers (Point-BERT's mini-PointNet) on their running
            statistics. In train mode a row's log-prob would depend on its batch-mates, so the
            old (generation-batch) and new (micro-batch) log-probs of the same policy would
            differ and the ratio of Eq. (15) would not start at 1.
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
        quant_bins: int = 100,
        num_keypoints: int = NUM_KEYPOINTS,
        format_weight: float = 0.1,
        target_key: str = "target",
        model_input_keys: Sequence[str] = (),
        concat_keys: Sequence[str] = (),
        model_inputs_fn: Callable[[list[dict]], dict[str, torch.Tensor]] | None = None,
        freeze_batchnorm: bool = True,
        callbacks=None,
        **kwargs,
    ):
        if variant not in ADVANTAGE_BUILDERS:
            raise ValueError(
                f"unknown RL variant {variant!r}; accepted: {tuple(ADVANTAGE_BUILDERS)}"
            )
        self.variant = variant
        self.advantage_builder = ADVANTAGE_BUILDERS[variant]
        self.credit = credit or CreditConfig()
        self.quant_bins = quant_bins
        self.num_keypoints = num_keypoints
        self.format_weight = format_weight
        self.target_key = target_key
        self.model_input_keys = tuple(model_input_keys)
        self.concat_keys = tuple(concat_keys)
        unknown = sorted(set(self.concat_keys) - set(self.model_input_keys))
        if unknown and model_inputs_fn is None:
            raise ValueError(f"concat_keys {unknown} are not in model_input_keys")
        self.model_inputs_fn = model_inputs_fn
        self._model_extras: dict[str, torch.Tensor] = {}
        self._local: dict[str, Any] = {}
        reward = SequenceReward(quant_bins, num_keypoints, format_weight)
        # beta > 0: TRL rebuilds the reference policy from the checkpoint path; name its class
        # (TRL's fallback reads ``config.auto_map``, which only remote-code configs have)
        named_ref = args is not None and args.beta != 0.0 and isinstance(model, PreTrainedModel)
        if named_ref:
            init_kwargs = args.model_init_kwargs
            args.model_init_kwargs = {**(init_kwargs or {}), "architecture": type(model)}
        super().__init__(
            model=model,
            reward_funcs=[reward],
            args=args,
            train_dataset=train_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            **kwargs,
        )
        if named_ref:
            self.args.model_init_kwargs = init_kwargs  # keep the arguments serializable
        self._token_lengths = TokenLengths(self._tokenizer)
        self.frozen_batchnorm = freeze_batchnorm_statistics(self.model) if freeze_batchnorm else 0

    # ------------------------------------------------------------------ extra model inputs
    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        for key in (self.target_key, *self.model_input_keys):
            if key not in self._signature_columns:
                self._signature_columns.append(key)

    def _extras_to_model_kwargs(self, extras: Mapping[str, torch.Tensor], start=0, end=None):
        """Rows [start, end) of the B-first extras -> keyword arguments of the model."""
        device = self.accelerator.device
        out = {}
        for key, value in extras.items():
            v = value[start:end].to(device)
            if key in self.concat_keys:
                v = v.flatten(0, 1)  # (B * k, ...)
            out[key] = v
        return out

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, **kw):
        if self._model_extras:
            # point clouds (etc.) of this generation batch, row-aligned with prompt_ids
            multimodal_fields = {
                **multimodal_fields,
                **self._extras_to_model_kwargs(self._model_extras),
            }
        return super()._generate_single_turn(
            prompt_ids, images, multimodal_fields, num_generations, **kw
        )

    def _get_per_token_logps_and_entropies(
        self,
        model,
        input_ids,
        attention_mask,
        logits_to_keep,
        batch_size=None,
        compute_entropy=False,
        compute_aux_loss=False,
        **multimodal,
    ):
        """TRL's fused path without extra inputs; the model's own forward with them."""
        if not self._model_extras:
            return super()._get_per_token_logps_and_entropies(
                model,
                input_ids,
                attention_mask,
                logits_to_keep,
                batch_size=batch_size,
                compute_entropy=compute_entropy,
                compute_aux_loss=compute_aux_loss,
                **multimodal,
            )
        B = input_ids.size(0)
        for key, value in self._model_extras.items():
            if value.shape[0] != B:
                raise ValueError(f"extra input {key!r} has {value.shape[0]} rows, batch has {B}")
        batch_size = batch_size or B
        all_logps, all_entropies = [], []
        for start in range(0, B, batch_size):
            end = min(start + batch_size, B)
            ids = input_ids[start:end]  # (b, P + T)
            kwargs = self._extras_to_model_kwargs(self._model_extras, start, end)
            with self.accelerator.autocast():
                logits = model(
                    input_ids=ids,
                    attention_mask=attention_mask[start:end],
                    logits_to_keep=logits_to_keep + 1,
                    use_cache=False,
                    **kwargs,
                ).logits  # (b, T + 1, V)
            # position t predicts token t + 1: drop the last, scale by the sampling temperature
            logits = logits[:, :-1, :] / self.temperature  # (b, T, V)
            all_logps.append(selective_log_softmax(logits, ids[:, -logits_to_keep:]))  # (b, T)
            if compute_entropy:
                with torch.no_grad():
                    all_entropies.append(entropy_from_logits(logits))  # (b, T)
        logps = torch.cat(all_logps, dim=0)  # (B, T)
        entropies = torch.cat(all_entropies, dim=0) if compute_entropy else None
        aux = None
        if compute_aux_loss:
            raise NotImplementedError("MoE aux loss with extra model inputs is not supported")
        return logps, entropies, aux

    # ------------------------------------------------------------------ rewards, once
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        """Parse and score every completion once; keep all rewards, return r_seq to TRL.

        Returns the gathered (B_global, 1) r_seq (TRL's single reward function). The gathered
        score table (B_global, len(SCORE_COLUMNS)) and the local parses stay on ``self``.
        """
        texts = [completion_text(c) for c in completions]
        parsed = [parse_output(t, self.num_keypoints) for t in texts]
        targets = [x[self.target_key] for x in inputs]
        s = score_batch(parsed, targets, self.quant_bins, self.format_weight)
        table = np.column_stack(
            [s["seq"], s["per_field_rewards"], s["rpc"], s["format"], s["answer"], s["description"]]
        )  # (B_local, 1 + F + 4)
        local = torch.as_tensor(table, dtype=torch.float64, device=self.accelerator.device)
        scores = self.accelerator.gather(local)  # (B_global, 1 + F + 4)
        self._local = {
            "parsed": parsed,
            "texts": texts,
            "ids": completion_ids_list,
            "B": len(texts),
        }
        self._scores = scores
        return scores[:, :1].float()  # (B_global, 1)

    # ------------------------------------------------------------------ advantages
    def _generate_and_score_completions(self, inputs):
        if self.model_inputs_fn is not None:
            self._model_extras = dict(self.model_inputs_fn(inputs))
        elif self.model_input_keys:
            self._model_extras = stack_rows(inputs, self.model_input_keys)
        else:
            self._model_extras = {}
        out = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        G = self.num_generations if mode == "train" else self.num_generations_eval
        device = self.accelerator.device
        completion_ids = out["completion_ids"]  # (B, T)
        B, T = completion_ids.shape
        parsed = self._local["parsed"]

        # Eqs. (6-7): per-token field ids of the local rows
        # a row without any geometric span is all background: skip its offsets (on unparsable
        # text with broken UTF-8 they would take the O(T^2) cumulative-decode path)
        spans = [p.char_spans for p in parsed]
        has_span = [any(sp.get(f) is not None for f in GEOMETRIC_FIELDS) for sp in spans]
        ids, texts, empty = self._local["ids"], self._local["texts"], np.zeros((0, 2), np.int64)
        offsets = [
            self._token_lengths.offsets(ids[i], texts[i]) if has_span[i] else empty
            for i in range(B)
        ]
        field_ids = batch_field_token_ids(spans, offsets, T)  # (B, T)

        # Standardization needs whole groups: build on all processes' rows, keep ours.
        # Routing is row-local, so other rows' field ids are not needed (left background).
        scores = self._scores.cpu()  # (B_global, K)
        start = self.accelerator.process_index * B
        all_ids = torch.zeros(scores.shape[0], T, dtype=torch.long)  # (B_global, T)
        all_ids[start : start + B] = field_ids
        F = len(GEOMETRIC_FIELDS)
        batch = CreditInputs(
            per_field_rewards=scores[:, 1 : 1 + F],
            seq_rewards=scores[:, 0],
            rpc_rewards=scores[:, 1 + F],
            field_ids=all_ids,
            group_size=G,
        )
        advantages = self.advantage_builder(batch, self.credit)[start : start + B]  # (B, T)
        out["advantages"] = advantages.to(device=device, dtype=torch.float32)
        out["field_ids"] = field_ids.to(device)
        for key, value in self._model_extras.items():
            out[EXTRA_PREFIX + key] = value
        self._log_credit_metrics(mode, batch, scores, field_ids, parsed)
        return out

    def _log_credit_metrics(self, mode, batch, scores, field_ids, parsed) -> None:
        """reward/*, adv/*_zero_std_frac (global), spans/* (local rows, averaged over processes)."""
        m = self._metrics[mode]
        for j, name in enumerate(SCORE_COLUMNS):
            m[f"reward/{name}"].append(float(scores[:, j].mean()))
        G = batch.group_size
        frac = zero_std_fraction(batch.per_field_rewards, G)  # (F,)
        for k, name in enumerate(GEOMETRIC_FIELDS):
            m[f"adv/{name}_zero_std_frac"].append(float(frac[k]))
        m["adv/seq_zero_std_frac"].append(float(zero_std_fraction(batch.seq_rewards, G)))
        m["adv/rpc_zero_std_frac"].append(float(zero_std_fraction(batch.rpc_rewards, G)))
        local = [
            float((field_ids == k + 1).any(dim=1).double().mean())
            for k in range(len(GEOMETRIC_FIELDS))
        ]
        local.append(float(np.mean([not p.ok for p in parsed])))
        stats = self.accelerator.gather(
            torch.tensor([local], dtype=torch.float64, device=self.accelerator.device)
        ).mean(0)  # (F + 1,)
        for k, name in enumerate(GEOMETRIC_FIELDS):
            m[f"spans/{name}_coverage"].append(float(stats[k]))
        m["spans/parse_fail_frac"].append(float(stats[-1]))

    # ------------------------------------------------------------------ loss
    def _compute_loss(self, model, inputs):
        self._model_extras = {
            k[len(EXTRA_PREFIX) :]: v for k, v in inputs.items() if k.startswith(EXTRA_PREFIX)
        }
        loss = super()._compute_loss(model, inputs)
        m = self._metrics["train" if self.model.training else "eval"]
        if m.get("clip_ratio/region_mean"):
            m["loss/clipfrac"].append(m["clip_ratio/region_mean"][-1])
        return loss


class MetricsLogger(TrainerCallback):
    """Every ``on_log`` record -> one JSON line; ``on_train_end`` -> a CSV of all records.

    Written by the main process only. The CSV has the union of keys (empty where absent), so
    DVC plots and pandas read it directly. TensorBoard is handled by ``report_to``.
    """

    def __init__(self, jsonl_path: str | Path, csv_path: str | Path | None = None):
        self.jsonl_path = Path(jsonl_path)
        self.csv_path = Path(csv_path) if csv_path is not None else None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)
            if not self.jsonl_path.exists() or state.global_step == 0:
                self.jsonl_path.write_text("")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, **{k: _jsonable(v) for k, v in logs.items()}}
        with self.jsonl_path.open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.csv_path is not None:
            write_csv(read_jsonl(self.jsonl_path), self.csv_path)


def _jsonable(v):
    if isinstance(v, torch.Tensor):
        v = v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_csv(records: list[dict], path: str | Path) -> None:
    """Records -> CSV with the union of keys (step first), written atomically."""
    import io

    from pointvl.io import atomic_write_text

    keys = sorted({k for r in records for k in r} - {"step"})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["step", *keys], restval="")
    w.writeheader()
    for r in records:
        w.writerow({k: v for k, v in r.items() if not isinstance(v, (list, dict))})
    atomic_write_text(path, buf.getvalue())
