"""Benchmark the PointVL policy -> results/bench/model.json.

- ``tiny`` on CPU: forward+backward tokens/s (batch of 8 SFT samples) and greedy generation
  tokens/s (8 prompts x ``--new-tokens``), random init, synthetic inputs.
- Parameter counts per block (point_encoder, fusion, projector, vision, language_model) for
  ``tiny`` and ``paper`` (the paper config built on the meta device: no weights needed).
- Where CUDA is available, the ``paper`` config forward in bf16 (random init) is timed too.

    python benchmarks/bench_model.py [--out results/bench/model.json] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pointvl.demo import random_geometry  # noqa: E402
from pointvl.model import (  # noqa: E402
    ModelConfig,
    PointVLForConditionalGeneration,
    paper_pointvl_config,
    train_bpe_tokenizer,
)
from pointvl.model.policy import build_tiny_policy  # noqa: E402
from pointvl.schema import format_target  # noqa: E402


def synthetic_sample(seed: int, num_points: int) -> dict:
    rng = np.random.default_rng(seed)
    geometry = random_geometry(rng, 16, px_origin=(0, 40), px_size=(20, 60))
    target = format_target({"answer": "chair", "description": "a chair with four legs", **geometry})
    return {
        "points": rng.uniform(-0.5, 0.5, (num_points, 6)).astype(np.float32),
        "image": rng.integers(0, 256, (112, 112, 3), dtype=np.uint8),
        "question": "Where is the chair? Give its boxes and keypoints.",
        "target": target,
    }


def counts(model) -> dict[str, int]:
    per_block = {k: sum(p.numel() for p in v) for k, v in model.param_groups().items()}
    per_block["total"] = sum(per_block.values())
    per_block["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return per_block


def bench_tiny(steps: int, new_tokens: int, batch_size: int = 8) -> dict:
    cfg = ModelConfig()
    samples = [synthetic_sample(i, cfg.num_points) for i in range(batch_size)]
    tok = train_bpe_tokenizer(
        [format_target(_gt(i)) for i in range(200)] + [s["question"] for s in samples],
        vocab_size=1024,
    )
    model, proc = build_tiny_policy(tok, cfg)
    batch = proc.batch(samples)
    B, L = batch["input_ids"].shape
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # the first step warms up
            times.append(time.perf_counter() - t0)
    fb = statistics.median(times)

    model.eval()
    prompts = proc.batch(samples, with_target=False)
    Lp = prompts["input_ids"].shape[1]
    gen_times = []
    with torch.no_grad():
        for _ in range(2):
            t0 = time.perf_counter()
            out = model.generate(
                **prompts,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=proc.token_ids["pad_token_id"],
            )
            gen_times.append(time.perf_counter() - t0)
    gen = min(gen_times)
    n_new = int(out.shape[1] - Lp) * B
    return {
        "config": {
            "num_points": cfg.num_points,
            "point_tokens": cfg.num_groups + 1,
            "image_tokens": proc.num_image_tokens,
            "lm_hidden": cfg.lm_hidden_size,
            "lm_layers": cfg.lm_layers,
            "vocab": len(tok),
        },
        "params": counts(model),
        "forward_backward": {
            "batch": B,
            "seq_len": L,
            "completion_tokens": int((batch["labels"] != -100).sum()),
            "s_per_step_median": fb,
            "tokens_per_s": B * L / fb,
            "steps_timed": steps,
        },
        "generation": {
            "batch": B,
            "prompt_len": Lp,
            "new_tokens_per_seq": int(out.shape[1] - Lp),
            "seconds": gen,
            "tokens_per_s": n_new / gen,
        },
    }


def _gt(i: int) -> dict:
    rng = np.random.default_rng(1000 + i)
    geometry = random_geometry(rng, 16, px_origin=(0, 40), px_size=(20, 60))
    return {"answer": "chair", "description": "a chair with four legs", **geometry}


def bench_paper_params() -> dict:
    cfg = paper_pointvl_config()
    with torch.device("meta"):
        model = PointVLForConditionalGeneration(cfg)
    return {
        "backbone": "Qwen2.5-VL-3B-Instruct (config written out in pointvl/model/config.py)",
        "point_tokens": cfg.num_point_tokens,
        "params": counts(model),
    }


def bench_paper_gpu() -> dict | None:
    if not torch.cuda.is_available():
        return None
    cfg = paper_pointvl_config()
    with torch.device("cuda"):
        model = PointVLForConditionalGeneration(cfg).to(torch.bfloat16).eval()
    B, L_text = 2, 128
    P = cfg.num_point_tokens
    ids = torch.randint(0, 151000, (B, L_text), device="cuda")
    ids[:, 10 : 10 + P] = cfg.point_token_id
    pts = torch.rand(B, 8192, 3, device="cuda") - 0.5
    times = []
    with torch.no_grad():
        for _ in range(4):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(input_ids=ids, point_clouds=pts)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return {
        "device": torch.cuda.get_device_name(),
        "dtype": "bfloat16",
        "batch": B,
        "seq_len": L_text,
        "s_per_forward": statistics.median(times[1:]),
        "note": "random init, no image (pixel_values=None), Point-BERT 8192 pts",
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/bench/model.json")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=64)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    result = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "load_avg_at_start": os.getloadavg()[0],
        },
        "tiny_cpu": bench_tiny(args.steps, args.new_tokens),
        "paper_params": bench_paper_params(),
        "paper_gpu_bf16_forward": bench_paper_gpu(),
    }
    result["machine"]["load_avg_at_end"] = os.getloadavg()[0]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
