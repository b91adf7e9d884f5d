"""The point-cloud layer of the RL trainer: a policy's extra inputs (point clouds, images)
through generation and every log-prob pass, on-policy by construction.

``PointCloudInputs`` is a mixin placed before a ``GRPOTrainer`` subclass::

    class GRCATrainer(PointCloudInputs, RoutedGRPOTrainer): ...

Per generation batch (TRL's rows, G consecutive copies of each prompt):

    rows --model_inputs_fn--> extras, B-first: point_clouds (B, N, C), pixel_values (B, p, d),
                              image_grid_thw (B, 1, 3) (``concat_keys`` are flattened over
                              dims 0-1 before reaching the model)
    rollouts: ``pointvl.eval.generate.decode`` — the evaluation sampler — on the unique prompts
              (each prefilled once, its cache repeated G times); returns the sampling log-probs
    extras are stored under ``extra.<key>`` in the batch (TRL's shuffle/split keeps them with
    their rows) and passed to every log-prob forward (old, reference, current policy).

Loss passes share work between the G rows of a prompt (``prompt_sharing``): ``encoders``
(default) runs Point-BERT, the fusion and the vision tower once per distinct sample
(``sample_index``); ``prefix`` also runs the prompt's tokens once and the completions on its
KV cache (``pointvl.train.shared_prompt``); ``none`` runs every row in full, as stock TRL does.

The policy that is sampled and the policy that is scored are the same function of the same
inputs: softmax(logits / T) with ``suppress_tokens`` at probability 0, positions built by the
model (M-RoPE from ``mm_token_type_ids``). Each loss pass logs ``rollout/logp_gap_max``, the
largest |log π_sample − log π_θ| over the micro-batch's completion tokens: ~1e-6 while the
parameters have not moved since sampling (TRL's default schedule), i.e. the update is
on-policy (tested in ``tests/test_rollout_equivalence.py``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from trl.models import unwrap_model_for_generation
from trl.trainer.utils import pad, selective_log_softmax

from pointvl.eval.generate import Sampling, decode
from pointvl.train.config import PROMPT_SHARING
from pointvl.train.logprobs import chunked_logps, masked_entropy
from pointvl.train.shared_prompt import prefix_shared_hidden

EXTRA_PREFIX = "extra."


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
    after ``model.train()``: a forward pre-hook sets ``training = False``. Returns the count.

    In train mode a row's log-prob would depend on its batch-mates, so rollouts (generation
    batch) and the loss (micro-batch) would score the same policy differently."""

    def _eval_mode(module, args):
        module.training = False

    n = 0
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.register_forward_pre_hook(_eval_mode)
            n += 1
    return n


class PointCloudInputs:
    """Mixin: extra model inputs through rollouts and log-prob passes (see the module doc).

    Args (keyword-only, consumed here; the rest goes to the trainer):
        model_input_keys: dataset columns stacked into the extras (or the keys that
            ``model_inputs_fn`` returns).
        model_inputs_fn: rows -> B-first extras (e.g. looks each row's sample up by index).
        concat_keys: extras flattened over dims 0-1 for the model (Qwen's pixel_values,
            image_grid_thw).
        extra_columns: other dataset columns the trainer must keep (e.g. ``index``, ``target``).
        group_key: a column naming each row's prompt (rows with equal keys in a run of G share
            one prefill); None: compare prompt ids and extras.
        freeze_batchnorm: run BatchNorm layers on their running statistics.
        rollouts: ``decode`` (the evaluation sampler, prefilled once per prompt) or ``trl``
            (TRL's own ``generate`` call on every row, the extras passed along: the stock
            path the speed benchmark compares against; same distribution, no log-probs).
        logprob_chunk_tokens: > 0: the LM head in chunks of this many tokens in loss passes.
        prompt_sharing: what the loss pass computes once per prompt for its G rows:
            ``encoders`` (point cloud and image), ``prefix`` (those and the prompt tokens; one
            process, no gradient checkpointing) or ``none`` (every row in full, stock TRL).
    """

    def __init__(
        self,
        *args,
        model_input_keys: Sequence[str] = (),
        model_inputs_fn: Callable[[list[dict]], dict[str, torch.Tensor]] | None = None,
        concat_keys: Sequence[str] = (),
        extra_columns: Sequence[str] = (),
        group_key: str | None = None,
        freeze_batchnorm: bool = True,
        rollouts: str = "decode",
        logprob_chunk_tokens: int = 0,
        prompt_sharing: str = "encoders",
        **kwargs,
    ):
        self.model_input_keys = tuple(model_input_keys)
        self.model_inputs_fn = model_inputs_fn
        self.concat_keys = tuple(concat_keys)
        unknown = sorted(set(self.concat_keys) - set(self.model_input_keys))
        if unknown:
            raise ValueError(f"concat_keys {unknown} are not in model_input_keys")
        self.extra_columns = tuple(extra_columns)
        self.group_key = group_key
        if rollouts not in ("decode", "trl"):
            raise ValueError(f"rollouts={rollouts!r}: expected 'decode' or 'trl'")
        self.rollouts = rollouts
        self.logprob_chunk_tokens = int(logprob_chunk_tokens)
        if prompt_sharing not in PROMPT_SHARING:
            raise ValueError(f"prompt_sharing={prompt_sharing!r}: expected one of {PROMPT_SHARING}")
        self.prompt_sharing = prompt_sharing
        self._model_extras: dict[str, torch.Tensor] = {}
        self._row_keys: list | None = None
        self._sampling_logps: torch.Tensor | None = None
        self._last_sampling_logps: torch.Tensor | None = None
        super().__init__(*args, **kwargs)
        self._check_sampling()
        self._check_prompt_sharing()
        self.frozen_batchnorm = freeze_batchnorm_statistics(self.model) if freeze_batchnorm else 0

    # ------------------------------------------------------------------ config
    def _check_sampling(self) -> None:
        """The rollout sampler draws from softmax(logits / T) only: filters that TRL's loss does
        not apply would make the sampled policy differ from the scored one."""
        bad = {
            "top_p": self.top_p != 1.0,
            "top_k": self.top_k not in (0, None),
            "min_p": self.min_p not in (0, None),
            "repetition_penalty": self.repetition_penalty != 1.0,
        }
        if any(bad.values()):
            raise ValueError(
                f"{[k for k, v in bad.items() if v]} set: the point-cloud trainer samples from "
                "softmax(logits / T) (the distribution the loss scores); leave them at TRL's "
                "defaults (top_p 1.0, top_k 0, min_p None, repetition_penalty 1.0)"
            )

    def _check_prompt_sharing(self) -> None:
        """``prefix`` needs the prompt pass's KV cache (gradient checkpointing turns it off)
        and one forward per backward per process (two forwards under DDP are untested)."""
        if self.prompt_sharing != "prefix":
            return
        if self.args.gradient_checkpointing:
            raise ValueError(
                "prompt_sharing='prefix' needs the prompt's KV cache, which gradient "
                "checkpointing turns off: set gradient_checkpointing=False or use 'encoders'"
            )
        if self.accelerator.num_processes > 1:
            raise ValueError(
                f"prompt_sharing='prefix' runs on one process (tested there); this launch has "
                f"{self.accelerator.num_processes}: use 'encoders'"
            )

    def rollout_sampling(self) -> Sampling:
        """The rollout distribution, from TRL's arguments and ``generation_kwargs``."""
        gen = dict(self.args.generation_kwargs or {})
        return Sampling(
            max_new_tokens=self.max_completion_length,
            eos_token_ids=tuple(self.eos_token_ids),
            pad_token_id=self._tokenizer.pad_token_id,
            do_sample=bool(gen.get("do_sample", True)),
            temperature=self.temperature,
            suppress_tokens=tuple(gen.get("suppress_tokens") or ()),
        )

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        for key in (*self.extra_columns, *self.model_input_keys):
            if key not in self._signature_columns:
                self._signature_columns.append(key)

    # ------------------------------------------------------------------ extras
    def _extras_to_model_kwargs(self, extras: Mapping[str, torch.Tensor], start=0, end=None):
        """Rows [start, end) of the B-first extras -> keyword arguments of the model."""
        device = self.accelerator.device
        out = {}
        for key, value in extras.items():
            v = value[start:end].to(device)
            out[key] = v.flatten(0, 1) if key in self.concat_keys else v
        return out

    def _generate_and_score_completions(self, inputs):
        if self.model_inputs_fn is not None:
            self._model_extras = dict(self.model_inputs_fn(inputs))
        elif self.model_input_keys:
            self._model_extras = stack_rows(inputs, self.model_input_keys)
        else:
            self._model_extras = {}
        self._row_keys = [x.get(self.group_key) for x in inputs] if self.group_key else None
        out = super()._generate_and_score_completions(inputs)
        for key, value in self._model_extras.items():
            out[EXTRA_PREFIX + key] = value
        return out

    # ------------------------------------------------------------------ rollouts
    def _group_size(self, prompt_ids: list[list[int]], num_generations: int) -> int:
        """G when the rows come in runs of G copies of one prompt (TRL's sampler), else 1."""
        G, B = num_generations, len(prompt_ids)
        if G <= 1 or B % G:
            return 1
        for start in range(0, B, G):
            first = start
            for i in range(start + 1, start + G):
                if prompt_ids[i] != prompt_ids[first]:
                    return 1
                if self._row_keys is not None and self._row_keys[i] != self._row_keys[first]:
                    return 1
                if self._row_keys is None and any(
                    not torch.equal(v[i], v[first]) for v in self._model_extras.values()
                ):
                    return 1
        return G

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, **kw):
        """Rollouts through the evaluation sampler; returns (completion ids, sampling log-probs)."""
        if self.rollouts == "trl":
            extras = self._extras_to_model_kwargs(self._model_extras)
            return super()._generate_single_turn(
                prompt_ids, images, {**multimodal_fields, **extras}, num_generations, **kw
            )
        if self.use_vllm or self.use_transformers_continuous_batching or self.tools:
            raise NotImplementedError(
                "the point-cloud trainer generates with pointvl.eval.generate.decode only "
                "(use_vllm / continuous batching / tools are not supported)"
            )
        G = self._group_size(prompt_ids, num_generations)
        rows = list(range(0, len(prompt_ids), G))
        unique = [torch.tensor(prompt_ids[i]) for i in rows]
        batch = {
            "input_ids": pad(
                unique, padding_value=self._tokenizer.pad_token_id, padding_side="left"
            ),
            "attention_mask": pad([torch.ones_like(t) for t in unique], 0, padding_side="left"),
        }
        extras = {k: v[rows] for k, v in self._model_extras.items()}
        batch = {k: v.to(self.accelerator.device) for k, v in batch.items()}
        batch.update(self._extras_to_model_kwargs(extras))
        with (
            unwrap_model_for_generation(
                self.model_wrapped,
                self.accelerator,
                gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs,
            ) as unwrapped_model,
            torch.no_grad(),
            self._dist.summon_full_params(self.model_wrapped, recurse=False),
            self.accelerator.autocast(),  # as the log-prob passes: fp32 master weights under DDP
        ):  # compute in bf16 there, so the KV cache is bf16 and π_sample matches π_θ's precision
            out = decode(unwrapped_model, batch, self.rollout_sampling(), G, return_logprobs=True)
        lp = [torch.tensor(x) for x in out.logprobs]
        self._last_sampling_logps = pad(lp, padding_value=0.0, padding_side="right") if lp else None
        return out.ids, out.logprobs

    # ------------------------------------------------------------------ log-probs
    def _suppressed_ids(self) -> list[int]:
        return list((self.args.generation_kwargs or {}).get("suppress_tokens") or ())

    def _check_extra_rows(self, B: int) -> None:
        """Every extra model input holds one row per sequence of the batch (``ValueError``)."""
        for key, value in self._model_extras.items():
            if value.shape[0] != B:
                raise ValueError(f"extra input {key!r} has {value.shape[0]} rows, batch has {B}")

    def _logps_from_hidden(self, model, kwargs, targets, logits_to_keep, suppress, entropy):
        """Log-probs (b, T) [and entropies (b, T)] of ``targets`` (b, T) from the language
        model's hidden states, the LM head applied in chunks of ``logprob_chunk_tokens``."""
        with self.accelerator.autocast():
            hidden = model(**kwargs, return_hidden=True).last_hidden_state  # (b, L, d)
        head = self.accelerator.unwrap_model(model).get_output_embeddings()
        # position t predicts token t + 1
        return chunked_logps(
            hidden[:, -logits_to_keep - 1 : -1], head, targets, self.temperature,
            suppress, self.logprob_chunk_tokens, entropy,
        )  # fmt: skip

    def _logps_from_logits(self, model, kwargs, targets, logits_to_keep, suppress, entropy):
        """Log-probs (b, T) [and entropies (b, T), else None] of ``targets`` (b, T) from the
        full logits / T, suppressed ids at -inf (entropy taken before, as in ``masked_entropy``)."""
        with self.accelerator.autocast():
            logits = model(**kwargs, logits_to_keep=logits_to_keep + 1).logits  # (b, T+1, V)
        # position t predicts token t + 1: drop the last
        return self._scaled_logps(logits[:, :-1, :], targets, suppress, entropy)

    def _scaled_logps(self, logits, targets, suppress, entropy):
        """(logits (b, T, V) that predict ``targets`` (b, T)) -> log-probs under the sampling
        distribution (/ T, suppressed ids at -inf) [and entropies, else None], (b, T) each."""
        logits = logits / self.temperature  # (b, T, V)
        ent = masked_entropy(logits.detach(), suppress) if entropy else None  # (b, T)
        if suppress:
            logits[..., suppress] = -float("inf")  # never sampled: probability 0
        return selective_log_softmax(logits, targets), ent  # (b, T)

    def _logps_prefix_shared(self, model, ids, mask, logits_to_keep, suppress, entropy, rows):
        """``prompt_sharing="prefix"``: the rows' distinct prompts run once, the completions on
        their KV cache (``pointvl.train.shared_prompt``); rows [start, end) = ``rows``."""
        T = logits_to_keep
        extras = {k: v[rows] for k, v in self._model_extras.items()}
        inverse, first = self._prompt_groups(extras, ids[:, :-T])
        prompt_batch = {"input_ids": ids[first, :-T], "attention_mask": mask[first, :-T]}
        prompt_batch.update(self._extras_to_model_kwargs({k: v[first] for k, v in extras.items()}))
        unwrapped = self.accelerator.unwrap_model(model)
        with self.accelerator.autocast():
            hidden = prefix_shared_hidden(
                model, unwrapped, prompt_batch, inverse, ids[:, -T:], mask[:, -T:]
            )  # (b, T, d)
        targets, head = ids[:, -T:], unwrapped.get_output_embeddings()
        if self.logprob_chunk_tokens > 0:
            return chunked_logps(hidden, head, targets, self.temperature, suppress,
                                 self.logprob_chunk_tokens, entropy)  # fmt: skip
        with self.accelerator.autocast():
            logits = head(hidden)  # (b, T, V)
        return self._scaled_logps(logits, targets, suppress, entropy)

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
        """log π(y_t | x, y_<t) under the rollout distribution: the model's forward with the
        extras, logits / T, suppressed ids at -inf (as sampled). (B, T) each."""
        if not self._model_extras:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **multimodal,
            )  # fmt: skip
        if compute_aux_loss:
            raise NotImplementedError("MoE aux loss with extra model inputs is not supported")
        B = input_ids.size(0)
        self._check_extra_rows(B)
        suppress = self._suppressed_ids()
        chunked = self.logprob_chunk_tokens > 0
        score = self._logps_from_hidden if chunked else self._logps_from_logits
        all_logps, all_entropies = [], []
        for start in range(0, B, batch_size or B):
            end = min(start + (batch_size or B), B)
            ids = input_ids[start:end]  # (b, P + T)
            if self.prompt_sharing == "prefix":
                lp, ent = self._logps_prefix_shared(
                    model, ids, attention_mask[start:end], logits_to_keep, suppress,
                    compute_entropy, slice(start, end),
                )  # fmt: skip
            else:
                kwargs = dict(
                    input_ids=ids,
                    attention_mask=attention_mask[start:end],
                    use_cache=False,
                    **self._shared_model_kwargs(model, start, end),
                )
                targets = ids[:, -logits_to_keep:]  # (b, T)
                lp, ent = score(model, kwargs, targets, logits_to_keep, suppress, compute_entropy)
            all_logps.append(lp)
            if compute_entropy:
                all_entropies.append(ent)
        logps = torch.cat(all_logps, dim=0)  # (B, T)
        self._log_logp_gap(logps, attention_mask[:, -logits_to_keep:])
        entropies = torch.cat(all_entropies, dim=0) if compute_entropy else None
        return logps, entropies, None

    def _shared_model_kwargs(self, model, start: int, end: int) -> dict:
        """The extras of rows [start, end); when the model takes ``sample_index`` (the PointVL
        policy), rows that share a sample (the G completions of a prompt) share one encoding
        of its point cloud and image (Point-BERT, fusion, vision tower run once per sample)."""
        extras = {k: v[start:end] for k, v in self._model_extras.items()}
        target = self.accelerator.unwrap_model(model)
        if (
            not extras
            or self.prompt_sharing == "none"
            or "sample_index" not in inspect.signature(target.forward).parameters
        ):
            return self._extras_to_model_kwargs(extras)
        inverse, first = self._prompt_groups(extras)
        unique = {k: v[first] for k, v in extras.items()}  # (U, ...)
        out = self._extras_to_model_kwargs(unique)
        out["sample_index"] = inverse.to(self.accelerator.device)
        return out

    def _prompt_groups(self, extras: Mapping[str, torch.Tensor], prompt_ids=None):
        """Rows with equal extras (and equal ``prompt_ids`` rows, when given) share a group:
        -> (inverse (b,): row -> group, in sorted order; first: a row of each group)."""
        parts = [v.flatten(1).float() for v in extras.values()]
        if prompt_ids is not None:
            parts.insert(0, prompt_ids.float())
        key = torch.cat(parts, dim=1)  # (b, K)
        _, inverse = torch.unique(key, dim=0, return_inverse=True)  # (b,) ids in sorted order
        first = [int((inverse == u).nonzero()[0]) for u in range(int(inverse.max()) + 1)]
        return inverse, first

    def _log_logp_gap(self, logps: torch.Tensor, mask: torch.Tensor) -> None:
        """In the loss pass: max |log π_sample − log π_θ| on the completion tokens."""
        sampled, self._sampling_logps = self._sampling_logps, None
        if sampled is None or sampled.shape != logps.shape:
            return
        m = mask.bool() & torch.isfinite(sampled)
        gap = (logps.detach() - sampled.to(logps.device)).abs()[m]
        if gap.numel():
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["rollout/logp_gap_max"].append(float(gap.max()))

    def _compute_loss(self, model, inputs):
        self._model_extras = {
            k[len(EXTRA_PREFIX) :]: v for k, v in inputs.items() if k.startswith(EXTRA_PREFIX)
        }
        self._sampling_logps = inputs.get("sampling_per_token_logps")
        loss = super()._compute_loss(model, inputs)
        m = self._metrics["train" if self.model.training else "eval"]
        if m.get("clip_ratio/region_mean"):
            m["loss/clipfrac"].append(m["clip_ratio/region_mean"][-1])
        return loss
