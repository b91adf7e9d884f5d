"""Per-GPU memory of a training step: model states, activations, log-prob chunk, rollouts.

An estimate from parameter counts and shapes, for the launch configs of the paper profile
(``configs/accelerate/{ddp,zero2,zero3}.yaml``: bf16 compute, fp32 master weights, AdamW),
on N GPUs. Bytes per parameter (P = all, P_t = trainable, N = GPUs):

    strategy  weights (module)   fp32 master  gradients        AdamW m, v
    ddp       4 P (fp32)         (= weights)  4 P_t            8 P_t
    zero2     2 P (bf16)         4 P_t / N    2 P_t / N        8 P_t / N
    zero3     2 P / N + live     4 P_t / N    2 P_t / N        8 P_t / N

``live`` (ZeRO-3): the layers gathered at a time (the one computing and the one prefetched,
2 x the largest decoder layer in bf16). Activations per micro-batch of T tokens through L
decoder layers, a = bytes saved per token per layer (measured, ``saved_bytes``):

    no checkpointing:  T L a
    checkpointing:     T L (2 h)  +  T a        (each layer keeps its bf16 input; one layer
                                                 is recomputed at a time in the backward)

Log-probs (``pointvl.train.logprobs``): one chunk of c tokens holds its logits c x V in bf16,
an fp32 copy and the temperature-scaled fp32 (10 B per entry); its backward recomputes them
and adds the fp32 and bf16 gradients (16 B per entry, the peak). Without chunking the whole
micro-batch's logits T x V are materialised (the same 16 B per entry).

Rollouts (``pointvl.eval.generate.decode``): the KV cache of the generation batch, rows x
(prompt + new tokens) x 2 (K, V) x L x kv_heads x head_dim in bf16; under ZeRO-3 the
parameters are gathered whole for generation (TRL's ``ds3_gather_for_generation``): 2 P.

Not counted (small at these sizes, or allocator-dependent): the frozen encoders' transient
activations (no graph is built through them), DeepSpeed's communication buckets, CUDA
context (~0.5 GiB) and fragmentation. The estimate is a planning number, not a measurement
of peak allocation; ``scripts/gpu_check.py`` measures the peak of the real step on one GPU.
"""

from __future__ import annotations

import dataclasses

import torch

GIB = 2**30
STRATEGIES = ("ddp", "zero2", "zero3")


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know of the policy."""

    params: int
    """P: every parameter (language model, vision tower, Point-BERT, fusion, projector)."""
    trainable: int
    """P_t: the parameters AdamW updates (frozen blocks excluded)."""
    hidden: int
    """h: the language model's width."""
    layers: int
    """L: decoder layers."""
    kv_heads: int
    head_dim: int
    vocab: int
    """V: rows of the LM head."""
    largest_layer: int
    """Parameters of the largest decoder layer (ZeRO-3's live working set)."""


def model_states(strategy: str, shape: ModelShape, gpus: int) -> dict[str, float]:
    """Bytes per GPU of weights, master copy, gradients and AdamW states (module docstring)."""
    P, Pt, N = shape.params, shape.trainable, gpus
    if strategy == "ddp":
        return {"weights": 4 * P, "master": 0, "gradients": 4 * Pt, "optimizer": 8 * Pt}
    if strategy == "zero2":
        return {"weights": 2 * P, "master": 4 * Pt / N, "gradients": 2 * Pt / N,
                "optimizer": 8 * Pt / N}  # fmt: skip
    if strategy == "zero3":
        live = 2 * 2 * shape.largest_layer
        return {"weights": 2 * P / N + live, "master": 4 * Pt / N, "gradients": 2 * Pt / N,
                "optimizer": 8 * Pt / N}  # fmt: skip
    raise ValueError(f"strategy={strategy!r}: expected one of {STRATEGIES}")


def activations(tokens: int, shape: ModelShape, per_token_layer: float, checkpointing: bool):
    """Bytes of the activations kept for the backward of one micro-batch of ``tokens``."""
    if checkpointing:
        return tokens * shape.layers * 2 * shape.hidden + tokens * per_token_layer
    return tokens * shape.layers * per_token_layer


def logits_bytes(tokens: int, vocab: int) -> float:
    """Peak bytes of ``tokens`` rows of logits through the log-prob backward (16 B / entry)."""
    return 16.0 * tokens * vocab


def kv_cache(rows: int, length: int, shape: ModelShape) -> float:
    """Bytes of a bf16 KV cache of ``rows`` sequences of ``length`` tokens."""
    return 2.0 * rows * length * 2 * shape.layers * shape.kv_heads * shape.head_dim


def saved_bytes(fn, *args) -> int:
    """Bytes of the distinct storages autograd saves for the backward while ``fn(*args)`` runs
    (``saved_tensors_hooks``; a storage saved twice, or through two views, counts once)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return sum(seen.values())


def bytes_per_token(fn, make_input, tokens: tuple[int, int] = (64, 128)) -> float:
    """``a``: saved bytes per token, the slope of ``saved_bytes`` between two lengths, so that
    what does not grow with the tokens (weights, autocast's bf16 weight copies) drops out.
    ``make_input(T)`` -> the arguments of ``fn`` for T tokens."""
    t1, t2 = tokens
    s1, s2 = saved_bytes(fn, *make_input(t1)), saved_bytes(fn, *make_input(t2))
    return (s2 - s1) / (t2 - t1)
