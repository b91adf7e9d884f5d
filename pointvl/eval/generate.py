"""Generation, shared by evaluation and the RL trainer: one sampler, so rollouts and evaluation
are conditioned exactly alike (the eval path of DESIGN.md, and the rollouts of the rl step).

    prompts (B0 unique, left-padded) + point clouds / images
      -> prefill once per prompt (Point-BERT, vision tower, prompt tokens)      (B0, L)
      -> KV cache repeated G times, group-major: row i*G + g                    (B0*G, L)
      -> decode: logits -> suppress -> / temperature -> softmax -> draw        (B, V)
         once a quarter of the rows reached end-of-turn, they leave the batch (cache rows too)
      -> completion ids (up to and including the first end-of-turn), log-probs of the
         distribution each token was drawn from

``decode`` is exactly Hugging Face's ``generate`` for the same inputs and the same seed
(tested token for token, greedy and sampled), without its per-step bookkeeping: the same
model forward at prefill, then each decoding step as ``LeanStep`` (``pointvl.eval.lean_step``:
the text layers' arithmetic on a preallocated KV cache, bitwise equal to the model's own
modules on a ``DynamicCache``, which ``lean=False`` runs instead) with the positions
``generate`` would build (text positions + ``rope_deltas`` of the M-RoPE prompt), and the same
random draws (``torch.multinomial(p, 1)`` is ``argmax(p / q)``, q ~ Exp(1) over the full
(B, V) batch, which is drawn whole even after rows finished). On the CPU each step's draws are
made on a second thread during the step before (``_Noise``): the same numbers from the same
generator in the same order, and the generator ends where ``generate`` leaves it
(``tests/test_draw_ahead.py``); a decode of 8 prompts x 8 is 1.29x faster for it
(``benchmarks/profile_decode.py``).
Two things can differ in the last float bits: the prompt is prefilled once for its G
completions, and finished rows leave the batch (a quarter at a time), so matrix products run
on other batch sizes. ``bench_train`` counts the completions that stay identical.

The sampling distribution is the policy the RL loss scores: softmax(logits / T) with
``suppress_tokens`` (the point / image placeholders) at probability 0.
``pointvl.train.pointcloud`` scores completions with the same rule.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from tqdm.auto import tqdm

from pointvl.eval.lean_step import LeanStep


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How completions are drawn (the evaluation default is greedy)."""

    max_new_tokens: int
    """Tokens per completion at most (end-of-turn included)."""
    eos_token_ids: tuple[int, ...]
    """A completion ends at the first of these (kept in the completion)."""
    pad_token_id: int
    """Fills finished rows."""
    do_sample: bool = False
    """False: greedy (argmax of the suppressed logits); True: draw from softmax(logits / T)."""
    temperature: float = 1.0
    """T of the sampling distribution (ignored when greedy)."""
    suppress_tokens: tuple[int, ...] = ()
    """Token ids that are never generated (probability 0), e.g. the placeholders."""

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"Sampling.max_new_tokens={self.max_new_tokens}: expected >= 1")
        if not self.eos_token_ids:
            raise ValueError("Sampling.eos_token_ids is empty: a completion could never end")
        if self.do_sample and not self.temperature > 0:
            raise ValueError(f"Sampling.temperature={self.temperature}: expected > 0 when sampling")


@dataclasses.dataclass
class Decoded:
    """Completions of one batch, row-aligned with the (expanded) prompts."""

    ids: list[list[int]]
    """Completion token ids, up to and including the first end-of-turn token."""
    logprobs: list[list[float]] | None
    """log pi(y_t | x, y_<t) under the sampling distribution, one per id (None if not asked)."""


def inference_device(device: str = "auto") -> tuple[torch.device, torch.dtype]:
    """Where and in what dtype a stage generates: ``auto`` is CUDA in bfloat16 when a GPU is
    present, else the CPU in float32 (``cpu`` / ``cuda[:N]`` force it; cuda is bfloat16)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    return dev, (torch.bfloat16 if dev.type == "cuda" else torch.float32)


def load_checkpoint(
    path: str | os.PathLike,
    dtype: torch.dtype | None = None,
    device: str | None = None,
    attn_implementation: str | None = None,
):
    """(model in eval mode, processor) from a checkpoint folder written by the train stages.

    ``device="auto"`` (``inference_device``): on the GPU in bfloat16 when CUDA is present,
    else the CPU in float32; ``dtype`` overrides the dtype. None: as saved, on the CPU."""
    from transformers import AutoModelForCausalLM

    import pointvl.model  # noqa: F401  (registers the Auto classes)
    from pointvl.model.processor import PointVLProcessor

    if not os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint folder {path} does not exist (run its stage first)")
    dev = None
    if device is not None:
        dev, auto_dtype = inference_device(device)
        dtype = dtype or auto_dtype
    kwargs = {"dtype": dtype} if dtype is not None else {}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    if dev is not None:
        model = model.to(dev)
    return model.eval(), PointVLProcessor.from_pretrained(path)


def to_model_device(model, batch: dict) -> dict:
    """The batch's tensors on the model's device (the processor builds them on the CPU)."""
    device = next(model.parameters()).device
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


# ----------------------------------------------------------------------------- the sampler
def _scores(logits: torch.Tensor, sampling: Sampling, suppress: torch.Tensor | None):
    """Processed scores as ``generate`` builds them: float32 copy, suppressed ids at -inf,
    divided by T when sampling. (B, V) -> (B, V)."""
    if sampling.do_sample:  # the same values as suppress-then-divide: -inf / T = -inf
        scores = logits.to(torch.float32) / sampling.temperature  # (B, V), a new tensor
    else:
        scores = logits.to(dtype=torch.float32, copy=True)  # (B, V)
    if suppress is not None:
        scores[:, suppress] = -float("inf")
    return scores


def _prompt_positions(model, batch: dict) -> torch.Tensor:
    """The prompt positions ``generate`` uses: (B, L) for a text LM, (4, B, L) for Qwen2.5-VL
    (a text row + 3 M-RoPE rows; this also sets ``model.model.rope_deltas``)."""
    kwargs = {k: v for k, v in batch.items() if k != "input_ids"}
    return model._prepare_position_ids_for_generation(batch["input_ids"], kwargs)


def _decode_step(model, tok, attention_mask, position_ids, cache) -> torch.Tensor:
    """Logits (b, V) of the next token after ``tok`` (b,) through the model's own modules. A
    Qwen2.5-VL policy runs its language model + LM head directly (the multimodal wrapper has
    nothing left to do once the prompt is in the cache); any other causal LM its forward."""
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "language_model") and hasattr(inner, "rope_deltas"):
        hidden = inner.language_model(
            inputs_embeds=model.get_input_embeddings()(tok[:, None]),
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
        ).last_hidden_state  # (b, 1, d)
        return model.lm_head(hidden[:, -1])  # (b, V)
    out = model(
        input_ids=tok[:, None],
        attention_mask=attention_mask,
        position_ids=position_ids,
        cache=cache,
        use_cache=True,
    )
    return out.logits[:, -1]  # (b, V)


class _ModuleStep:
    """Decoding steps through the model's modules and its ``DynamicCache`` (the reference
    ``LeanStep`` is tested against, and the path for models it does not support)."""

    def __init__(self, model, cache, attention_mask: torch.Tensor | None):
        self.model, self.cache, self.am = model, cache, attention_mask  # am: (B, L) or None

    def select(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows)
        self.am = self.am[rows] if self.am is not None else None

    def __call__(self, tok: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        if self.am is not None:
            self.am = torch.cat([self.am, self.am.new_ones(self.am.shape[0], 1)], dim=1)
        return _decode_step(self.model, tok, self.am, position_ids, self.cache)  # (b, V)


def _prefill(model, batch: dict, G: int, max_new_tokens: int, lean: bool):
    """The full forward once per prompt with the positions ``generate`` would use, its cache
    repeated G times (group-major). -> (logits (B, V), next positions (B, 1) or (4, B, 1),
    the stepper that continues from that cache)."""
    position_ids = _prompt_positions(model, batch)  # (B0, L) or (4, B0, L)
    am = batch["attention_mask"]  # (B0, L)
    if bool((am == 1).all()):
        am = None  # no padding: generate drops the mask (causal attention without one)
    out = model(**{**batch, "attention_mask": am}, position_ids=position_ids, use_cache=True,
                logits_to_keep=1)  # fmt: skip
    logits = out.logits[:, -1, :]  # (B0, V)
    # each new token: the previous position + 1 in every row of the positions (generate's rule)
    next_pos = position_ids[..., -1:] + 1  # (B0, 1) or (4, B0, 1)
    if G > 1:
        out.cache.batch_repeat_interleave(G)
        logits = logits.repeat_interleave(G, 0)
        am = am.repeat_interleave(G, 0) if am is not None else None
        next_pos = next_pos.repeat_interleave(G, next_pos.dim() - 2)
    if lean and LeanStep.supports(model):
        return logits, next_pos, LeanStep(model, out.cache, am, max_new_tokens)
    return logits, next_pos, _ModuleStep(model, out.cache, am)


class _Noise:
    """The Exp(1) draws of the sampling steps of one ``decode`` call, (B, V) per step, all B
    rows (finished ones too, as ``generate`` does).

    On the CPU the next step's draws are made on a second thread while this step's forward
    runs (``ahead=True``): the draws are the same numbers in the same order as drawing each
    step's in turn, since the CPU generator is one stream consumed element by element, and
    nothing else draws from it during decoding (``decode`` draws ahead only with ``LeanStep``
    steps, which are arithmetic only; the model's own modules may hold dropout). The draw
    made ahead for a step that never comes is undone at ``close`` (the generator is put back
    to its state before that draw), so the generator ends where ``generate`` leaves it. Two
    buffers alternate: step k's draws are read while step k + 1's are written.

        take() -> q_k (B, V);  close() after the last step
    """

    def __init__(self, B: int, V: int, device, ahead: bool):
        self.gen = torch.default_generator if torch.device(device).type == "cpu" else None
        self.ahead = bool(ahead) and self.gen is not None
        n = 2 if self.ahead else 1
        self.buffers = [torch.empty((B, V), dtype=torch.float32, device=device) for _ in range(n)]
        self.pool = ThreadPoolExecutor(1, "pointvl-noise") if self.ahead else None
        self.k = 0  # the next step to take
        self.pending = None  # (future of step k's draws, generator state before them)
        if self.ahead:
            self._submit()

    def _submit(self) -> None:
        state = self.gen.get_state()
        buf = self.buffers[self.k % len(self.buffers)]
        self.pending = (self.pool.submit(buf.exponential_, 1), state)

    def take(self, more: bool) -> torch.Tensor:
        """Step k's draws (B, V); ``more``: a step k + 1 may follow (its draws start now)."""
        buf = self.buffers[self.k % len(self.buffers)]
        if self.ahead:
            self.pending[0].result()
            self.pending = None
        else:
            buf.exponential_(1)
        self.k += 1
        if self.ahead and more:
            self._submit()
        return buf

    def close(self) -> None:
        """Undo a draw made for a step that did not come; stop the thread."""
        if self.pending is not None:
            future, state = self.pending
            future.result()
            self.gen.set_state(state)
            self.pending = None
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None


def _draw(scores: torch.Tensor, noise: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor:
    """The next token of each batch row (b,) from its processed scores (b, V): argmax when
    greedy (``noise`` None); else ``torch.multinomial(p, 1)`` as ``argmax(p / q)``, with
    ``noise`` q (B, V) this step's Exp(1) draws for all B rows of the batch (``_Noise``), read
    at ``rows``."""
    if noise is None:
        return scores.argmax(-1)
    probs = torch.softmax(scores, dim=-1)  # (b, V)
    q = noise
    if rows.numel() < q.shape[0]:
        q = q[rows]  # (b, V)
    return probs.div_(q).argmax(-1)


@torch.no_grad()
def decode(
    model,
    batch: dict[str, torch.Tensor],
    sampling: Sampling,
    num_generations: int = 1,
    return_logprobs: bool = False,
    lean: bool = True,
    draw_ahead: bool = True,
) -> Decoded:
    """Complete each of the B0 prompts of ``batch`` ``num_generations`` = G times (rows
    group-major: row i*G + g).

    ``batch``: left-padded ``input_ids`` / ``attention_mask`` (B0, L) plus the model's other
    inputs for those prompts (``point_clouds`` (B0, N, C), ``pixel_values``,
    ``image_grid_thw`` (B0, 3), optional ``mm_token_type_ids``). Works for the PointVL
    policy, any Qwen2.5-VL-style model and any causal LM whose forward takes ``cache``;
    ``lean=False`` forces the model's own modules at every step (``_ModuleStep``).
    ``draw_ahead``: on the CPU with ``LeanStep`` steps, each sampling step's Exp(1) draws are
    made on a second thread during the step before (``_Noise``; the same draws either way,
    tested).
    Rows stay in the batch after their end-of-turn until a quarter of it has finished, then
    leave it; the tokens they draw meanwhile are cut at the first end-of-turn.
    """
    G = int(num_generations)
    if G < 1:
        raise ValueError(f"num_generations={num_generations}: expected >= 1")
    T = sampling.max_new_tokens
    device = batch["input_ids"].device
    eos = torch.tensor(sampling.eos_token_ids, device=device)
    suppress = torch.tensor(sampling.suppress_tokens, device=device, dtype=torch.long)
    suppress = suppress if suppress.numel() else None
    logits, next_pos, step_fn = _prefill(model, batch, G, T, lean)
    B, bdim = logits.shape[0], next_pos.dim() - 2

    rows = torch.arange(B, device=device)  # batch row -> completion index
    done = torch.zeros(B, dtype=torch.bool, device=device)  # per batch row: ended its turn
    # ahead only with LeanStep: its steps draw nothing (module steps may hold dropout)
    ahead = draw_ahead and isinstance(step_fn, LeanStep)
    noise = _Noise(B, logits.shape[1], device, ahead) if sampling.do_sample else None
    ids = torch.full((B, T), sampling.pad_token_id, dtype=torch.long, device=device)
    lps = torch.zeros((B, T), device=device) if return_logprobs else None
    at = slice(None)  # where this step's rows are written: all, until rows leave (then rows)
    steps = 0
    try:
        for step in range(T):
            scores = _scores(logits, sampling, suppress)  # (b, V)
            q = noise.take(more=step + 1 < T) if noise is not None else None  # (B, V)
            tok = _draw(scores, q, rows)  # (b,)
            ids[at, step] = tok
            if return_logprobs:
                lps[at, step] = torch.log_softmax(scores, -1).gather(1, tok[:, None])[:, 0]
            done |= torch.isin(tok, eos)
            steps = step + 1
            done_here = int(done.sum())
            if done_here == rows.numel() or steps == T:
                break
            if done_here >= max(1, rows.numel() // 4):  # a quarter finished: they leave
                sel = (~done).nonzero()[:, 0]  # (b',)
                step_fn.select(sel)
                rows, tok, next_pos = rows[sel], tok[sel], next_pos.index_select(bdim, sel)
                done, at = done[sel], rows
            logits = step_fn(tok, next_pos)  # (b, V)
            next_pos = next_pos + 1
    finally:
        if noise is not None:
            noise.close()  # the generator as generate leaves it
    eos_ids = sampling.eos_token_ids
    out_ids = [_trim(r, eos_ids) for r in ids[:, :steps].tolist()]
    out_lps = None
    if return_logprobs:
        out_lps = [r[: len(i)] for r, i in zip(lps[:, :steps].tolist(), out_ids)]
    return Decoded(ids=out_ids, logprobs=out_lps)


def hf_generate(model, batch: dict, sampling: Sampling, num_generations: int = 1) -> Decoded:
    """The same completions through Hugging Face's ``generate`` on the expanded batch (the
    reference ``decode`` is tested against, and the benchmark's baseline)."""
    G = int(num_generations)
    expanded = {k: _repeat_rows(k, v, G, batch) for k, v in batch.items()}
    L = expanded["input_ids"].shape[1]
    out = model.generate(
        **expanded,
        max_new_tokens=sampling.max_new_tokens,
        do_sample=sampling.do_sample,
        temperature=sampling.temperature if sampling.do_sample else None,
        top_k=0 if sampling.do_sample else None,
        top_p=1.0 if sampling.do_sample else None,
        suppress_tokens=list(sampling.suppress_tokens) or None,
        eos_token_id=list(sampling.eos_token_ids),
        pad_token_id=sampling.pad_token_id,
    )  # (B, L + T)
    return Decoded(
        ids=[_trim(r, sampling.eos_token_ids) for r in out[:, L:].tolist()], logprobs=None
    )


def _repeat_rows(key: str, value, G: int, batch: dict):
    """Repeat a batch input G times per prompt; ``pixel_values`` are per image patch."""
    if G == 1 or not torch.is_tensor(value):
        return value
    if key == "pixel_values":
        per = batch["image_grid_thw"].prod(-1)  # (B0,) patches per image
        chunks = value.split(per.tolist())
        return torch.cat([c for c in chunks for _ in range(G)])
    return value.repeat_interleave(G, 0)


def _trim(row: Sequence[int], eos: Sequence[int]) -> list[int]:
    """Ids up to and including the first end-of-turn (all of them if none)."""
    for j, t in enumerate(row):
        if t in eos:
            return list(row[: j + 1])
    return list(row)


# ----------------------------------------------------------------------------- evaluation
def suppressed_ids(processor) -> tuple[int, ...]:
    """Ids never generated, in evaluation and in RL rollouts: the image and point placeholders
    (a completion holding one would break the point-token count of the next forward)."""
    t = processor.token_ids
    return (t["image_token_id"], t["point_token_id"])


def eval_sampling(processor, max_new_tokens: int) -> Sampling:
    """Greedy decoding for evaluation, with the placeholders suppressed as in RL."""
    return Sampling(
        max_new_tokens=max_new_tokens,
        eos_token_ids=tuple(processor.eos_token_ids),
        pad_token_id=processor.token_ids["pad_token_id"],
        suppress_tokens=suppressed_ids(processor),
    )


@torch.no_grad()
def generate_token_ids(
    model,
    processor,
    samples: Sequence[dict],
    batch_size: int = 16,
    max_new_tokens: int = 400,
    progress: bool = False,
) -> list[list[int]]:
    """Greedy completion token ids (up to and including the first end-of-turn) per sample."""
    sampling = eval_sampling(processor, max_new_tokens)
    out: list[list[int]] = []
    steps = range(0, len(samples), batch_size)
    for start in tqdm(steps, desc="generate", disable=not progress):
        batch = processor.batch(list(samples[start : start + batch_size]), with_target=False)
        out += decode(model, to_model_device(model, batch), sampling).ids
    return out


def generate_completions(
    model,
    processor,
    samples: Sequence[dict],
    batch_size: int = 16,
    max_new_tokens: int = 400,
    progress: bool = True,
) -> list[str]:
    """Greedy completions for dataset samples (``points``, ``image``, ``question``), in order."""
    ids = generate_token_ids(model, processor, samples, batch_size, max_new_tokens, progress)
    return processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
