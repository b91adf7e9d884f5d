"""Throughput of the GRCA credit path: parse -> spans -> rewards -> routed advantages.

    python benchmarks/bench_credit.py [--batch 1024] [--repeats 3]

One core (affinity + torch threads = 1). A batch of B completions (G = 8 per prompt, the
demo's eight cases over B/8 random objects) is pushed through the whole per-step credit path
of an RL step, with token offsets either from the tokenizer (our fast path) or from the
paper's cumulative decoding (the naive peer). Writes results/bench/credit.json.
Target: >= 5,000 completions/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from pointvl.credit import CreditConfig, CreditInputs, build_advantages
from pointvl.demo import demo_completions, demo_target
from pointvl.io import atomic_write_json
from pointvl.model.tokenizer import train_bpe_tokenizer
from pointvl.rewards import score_batch
from pointvl.schema import format_target, parse_output
from pointvl.spans import (
    TokenLengths,
    batch_field_token_ids,
    batch_token_offsets,
    offsets_from_cumulative_decode,
)

ROOT = Path(__file__).resolve().parent.parent


def credit_step(texts, ids, targets, tok, quant_bins, align) -> torch.Tensor:
    """The per-step work GRCA adds to GRPO, for one batch; returns (B, T) advantages."""
    parsed = [parse_output(t) for t in texts]
    offsets = align(ids, texts)
    T = max(len(i) for i in ids)
    field_ids = batch_field_token_ids([p.char_spans for p in parsed], offsets, T)  # (B, T)
    s = score_batch(parsed, targets, quant_bins)
    batch = CreditInputs(s["per_field_rewards"], s["seq"], s["rpc"], field_ids, num_generations=8)
    return build_advantages("grca_rpc", batch, CreditConfig())  # (B, T)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--naive-batch", type=int, default=128, help="the O(T^2) peer is slow")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "results/bench/credit.json"))
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)

    Q = 100
    tok = train_bpe_tokenizer([format_target(demo_target(1000 + i), Q) for i in range(200)], 400)
    texts, targets = [], []
    for p in range(args.batch // 8):
        target = demo_target(p)
        texts += demo_completions(target, Q, seed=p)
        targets += [target] * 8
    ids = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]

    table = TokenLengths(tok)  # built once per tokenizer, as a trainer would

    def fast(ids_b, texts_b):
        return batch_token_offsets(ids_b, table, texts_b)

    def naive(ids_b, texts_b):
        def decode(x):
            return tok.decode(x, skip_special_tokens=True)

        return [offsets_from_cumulative_decode(i, decode) for i in ids_b]

    def timeit(align, n):
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            credit_step(texts[:n], ids[:n], targets[:n], tok, Q, align)
            best = min(best, time.perf_counter() - t0)
        return n / best

    # stage by stage, fast path, for the reader
    t0 = time.perf_counter()
    parsed = [parse_output(t) for t in texts]
    t1 = time.perf_counter()
    offsets = fast(ids, texts)
    t2 = time.perf_counter()
    field_ids = batch_field_token_ids([p.char_spans for p in parsed], offsets, max(map(len, ids)))
    t3 = time.perf_counter()
    s = score_batch(parsed, targets, Q)
    t4 = time.perf_counter()
    batch = CreditInputs(s["per_field_rewards"], s["seq"], s["rpc"], field_ids, num_generations=8)
    build_advantages("grca_rpc", batch, CreditConfig())
    t5 = time.perf_counter()

    fast_cps = timeit(fast, args.batch)
    naive_cps = timeit(naive, args.naive_batch)
    result = {
        "batch": args.batch,
        "mean_tokens_per_completion": float(np.mean([len(i) for i in ids])),
        "completions_per_s": fast_cps,
        "naive_cumulative_decode_completions_per_s": naive_cps,
        "speedup_vs_naive": fast_cps / naive_cps,
        "target_completions_per_s": 5000,
        "meets_target": fast_cps >= 5000,
        "seconds_per_stage_one_pass": {
            "parse": t1 - t0,
            "offsets": t2 - t1,
            "field_ids": t3 - t2,
            "rewards": t4 - t3,
            "advantages": t5 - t4,
        },
        "cores": 1,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
