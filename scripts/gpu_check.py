"""GPU check of the `paper` code path: the paper-size policy, random weights, no downloads.

    python scripts/gpu_check.py [--out results/bench/gpu.json]      (make gpu-check)

On one CUDA GPU, with the Qwen2.5-VL-3B + published Point-BERT architecture (random init,
float32 master weights as every training launch loads them, bf16 autocast compute; the
frozen Point-BERT and vision tower in bf16, as nothing updates them): a forward/backward at the paper's
input sizes (8,192 points, 448 px, 513 point tokens), batched generation with the RL rollout
sampler, and two GRCA steps with G = 8 through the real trainer (chunked log-probs, flash
attention when available). Writes tokens/s, step time, peak memory and what ran.

Departure, stated in the JSON: the vocabulary is a locally trained BPE (no tokenizer can be
downloaded), so the embedding and LM head have len(tokenizer) rows instead of 151,936; their
memory at the real size is added as an estimate.
Exits 0 with {"ran": false, "reason": ...} without CUDA (CI has none).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _paper_policy(tok, attn: str):
    import torch

    from pointvl.model.config import (
        QWEN25_VL_3B_TEXT,
        QWEN25_VL_3B_TOKENS,
        QWEN25_VL_3B_VISION,
        PointVLConfig,
        paper_model_config,
    )
    from pointvl.model.policy import PointVLForConditionalGeneration
    from pointvl.model.processor import PointVLProcessor
    from pointvl.model.tokenizer import special_token_ids

    ids = special_token_ids(tok)
    cfg = paper_model_config()
    text = {**QWEN25_VL_3B_TEXT, "vocab_size": len(tok), "bos_token_id": ids["bos_token_id"],
            "eos_token_id": ids["eos_token_id"], "pad_token_id": ids["pad_token_id"]}  # fmt: skip
    config = PointVLConfig(
        text_config=text,
        vision_config=QWEN25_VL_3B_VISION,
        **{
            **QWEN25_VL_3B_TOKENS,
            **{
                k: ids[k]
                for k in (
                    "image_token_id",
                    "video_token_id",
                    "vision_start_token_id",
                    "vision_end_token_id",
                )
            },
        },  # fmt: skip
        point_config=cfg.point_config(),
        point_token_id=ids["point_token_id"],
        fusion_num_heads=cfg.fusion_num_heads,
        freeze_point_encoder=cfg.freeze_point_encoder,
        freeze_vision=cfg.freeze_vision,
    )
    config._attn_implementation = attn
    from pointvl.train.launch import MASTER_DTYPE

    with torch.device("cuda"):
        model = PointVLForConditionalGeneration(config).to(MASTER_DTYPE)
    model.point_encoder.to(torch.bfloat16)  # frozen: no master copy needed
    model.model.visual.to(torch.bfloat16)
    proc = PointVLProcessor.for_model(tok, config, image_size=cfg.image_size)
    return model, proc, config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "results/bench/gpu.json"))
    ap.add_argument("--new-tokens", type=int, default=256)
    args = ap.parse_args()
    import numpy as np
    import torch

    from pointvl.io import atomic_write_json

    if not torch.cuda.is_available():
        print(json.dumps({"ran": False, "reason": "no CUDA device"}))
        return
    from pointvl.eval.generate import decode
    from pointvl.train.config import RLConfig
    from pointvl.train.rl import build_rl_trainer, grpo_args, rl_rows, rollout_sampling
    from pointvl.train.tiny import tiny_tokenizer

    out: dict = {"ran": True, "device": torch.cuda.get_device_name(), "torch": torch.__version__,
                 "platform": platform.platform(), "compute": "bf16 autocast",
                 "weights": "float32 master (trained blocks), bf16 (frozen encoders)"}  # fmt: skip
    bf16 = torch.autocast("cuda", dtype=torch.bfloat16)
    tok = tiny_tokenizer(quant_bins=1000, vocab_size=1024)
    try:
        import flash_attn  # noqa: F401

        attn = "flash_attention_2"
    except ImportError:
        attn = "sdpa"
    out["attention"] = attn
    model, proc, config = _paper_policy(tok, attn)
    out["params"] = sum(p.numel() for p in model.parameters())
    out["vocab_note"] = (f"vocabulary {len(tok)} (local BPE) instead of 151,936: embedding + LM head "
                         f"at the real size add {2 * 151936 * 2048 * 2 / 2**30:.2f} GiB of bf16 weights")  # fmt: skip
    rng = np.random.default_rng(0)
    samples = [
        {"points": rng.uniform(-0.5, 0.5, (8192, 3)).astype(np.float32),
         "image": rng.integers(0, 256, (448, 448, 3), dtype=np.uint8),
         "question": "Locate the object in 2D and 3D.", "target": "{}"}
        for _ in range(4)
    ]  # fmt: skip
    batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in proc.batch(samples).items()}
    torch.cuda.reset_peak_memory_stats()
    model.train()
    t0 = time.perf_counter()
    with bf16:
        loss = model(**batch).loss
    loss.backward()
    torch.cuda.synchronize()
    L = batch["input_ids"].shape[1]
    out["forward_backward"] = {"batch": 4, "seq_len": L, "s": time.perf_counter() - t0,
                               "tokens_per_s": 4 * L / (time.perf_counter() - t0),
                               "peak_gib": torch.cuda.max_memory_allocated() / 2**30}  # fmt: skip
    model.zero_grad(set_to_none=True)
    cfg = RLConfig(num_generations=8, prompts_per_step=2, max_steps=2, max_completion_length=args.new_tokens,
                   logprob_chunk_tokens=8192, val_prompts=0, bf16=True, gradient_checkpointing=True,
                   temperature=0.7)  # fmt: skip
    sampling = rollout_sampling(cfg, proc)
    gen = proc.batch(samples[:2], with_target=False)
    gen = {k: v.cuda() for k, v in gen.items()}
    model.eval()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with bf16:  # as the trainer's rollouts (accelerator.autocast)
        ids = decode(model, gen, sampling, num_generations=8).ids
    torch.cuda.synchronize()
    n_tok = sum(map(len, ids))
    out["generation"] = {"prompts": 2, "G": 8, "tokens": n_tok, "s": time.perf_counter() - t0,
                         "tokens_per_s": n_tok / (time.perf_counter() - t0),
                         "peak_gib": torch.cuda.max_memory_allocated() / 2**30}  # fmt: skip
    from pointvl.demo import demo_target
    from pointvl.train.rl import reward_target  # noqa: F401  (rows carry a demo target)

    ds = [{**s, **demo_target(i)} for i, s in enumerate(samples)]
    for s in ds:
        s["K"] = np.asarray(s["K"]).reshape(3, 3)
        s["R"] = np.asarray(s["R"]).reshape(3, 3)
    rows = rl_rows(ds, proc)
    model.train()
    torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        targs = grpo_args(cfg, tmp, proc, report_to=[], save_strategy="no", use_cpu=False)
        trainer = build_rl_trainer(model, proc, ds, rows, cfg, targs, 1000, 16)
        t0 = time.perf_counter()
        trainer.train()
        torch.cuda.synchronize()
    steps = [r["step_time"] for r in trainer.state.log_history if "step_time" in r]
    out["grca_steps"] = {"steps": 2, "G": 8, "prompts_per_step": 2, "s_per_step": steps,
                         "wall_s": time.perf_counter() - t0,
                         "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
                         "logprob_chunk_tokens": cfg.logprob_chunk_tokens}  # fmt: skip
    atomic_write_json(args.out, out)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
