"""Per-GPU memory estimate of the `paper` profile -> results/bench/memory_paper.json.

    python benchmarks/bench_memory.py [--out results/bench/memory_paper.json] [--gpus 4]

The paper config (Qwen2.5-VL-3B + Point-BERT, params.yaml's paper profile) is built on the
meta device for its parameter counts (frozen blocks from the profile's freezing policy); the
activation bytes per token of one Qwen2.5-VL-3B decoder layer are *measured* on the CPU
(autograd's saved tensors under bf16 autocast, sdpa: the slope between two lengths and the
difference between a 2- and a 1-layer model, so weights and the final norm drop out).
Sequence lengths: the prompt (chat + 513 point + 256 image tokens + question) and the
longest valid target under a Qwen-layout tokenizer (every digit a token, Q = 1000, M = 16,
448 px; ``pointvl.budget``). Everything else is ``pointvl.train.memory``: model states per
DDP / ZeRO-2 / ZeRO-3, activations with and without checkpointing, the log-prob chunk, the
rollouts' KV cache and ZeRO-3's gathered weights, for SFT and RL steps, against the paper's
4 x A800 80 GB (Sec. 4.2) and, for comparison, 48 GB cards.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pointvl.budget import longest_target  # noqa: E402
from pointvl.config import load_params  # noqa: E402
from pointvl.model import PointVLForConditionalGeneration, paper_pointvl_config  # noqa: E402
from pointvl.model.config import QWEN25_VL_3B_TEXT  # noqa: E402
from pointvl.train import memory as mem  # noqa: E402

GIB = mem.GIB
DESCRIPTION = ("An airplane with a fuselage, a wing, a tail fin, a stabilizer and four engines; "
               "it is deeper than it is wide. The camera sees its front side, from slightly above.")  # fmt: skip
QUESTION = "What is the object in the image? Give its 2D and 3D boxes and its 16 keypoints."


def paper_shape() -> tuple[mem.ModelShape, dict]:
    """Parameter counts of the paper policy (meta device) and the LM's shape."""
    cfg = paper_pointvl_config()
    with torch.device("meta"):
        model = PointVLForConditionalGeneration(cfg)
    blocks = {k: sum(p.numel() for p in v) for k, v in model.param_groups().items()}
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    layer = model.model.language_model.layers[0]
    t = cfg.text_config
    shape = mem.ModelShape(
        params=total, trainable=trainable, hidden=t.hidden_size, layers=t.num_hidden_layers,
        kv_heads=t.num_key_value_heads, head_dim=t.hidden_size // t.num_attention_heads,
        vocab=t.vocab_size, largest_layer=sum(p.numel() for p in layer.parameters()),
    )  # fmt: skip
    return shape, {**blocks, "total": total, "trainable": trainable}


def measured_bytes_per_token_layer(attn: str = "sdpa") -> float:
    """``a`` of one Qwen2.5-VL-3B decoder layer: saved bytes per token, bf16 autocast."""
    from transformers import Qwen2_5_VLTextConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLTextModel

    def per_token(layers: int) -> float:
        text = {**QWEN25_VL_3B_TEXT, "vocab_size": 16, "num_hidden_layers": layers,
                "bos_token_id": None, "eos_token_id": None}  # fmt: skip
        cfg = Qwen2_5_VLTextConfig(**text)
        cfg._attn_implementation = attn
        torch.manual_seed(0)
        model = Qwen2_5_VLTextModel(cfg)

        def run(x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                model(inputs_embeds=x, use_cache=False)

        def make(T):
            return (torch.randn(1, T, cfg.hidden_size, requires_grad=True),)

        return mem.bytes_per_token(run, make, (32, 64))

    return per_token(2) - per_token(1)


def sequence_lengths(params: dict) -> dict:
    """Prompt and target tokens of the paper profile (see the module docstring)."""
    from pointvl.rehearsal import backbone_tokenizer

    p = params
    q, m, px = p["schema"]["quant_bins"], p["schema"]["num_keypoints"], p["shared"]["image_size"]
    tok = backbone_tokenizer(q, px)
    length = longest_target(tok, q, m, px, ["airplane"], [DESCRIPTION])
    point_tokens = p["model"]["num_groups"] + 1
    image_tokens = (px // 14) ** 2 // 4
    chat = len(tok("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                   f"<|vision_start|><|vision_end|>{QUESTION}<|im_end|>\n<|im_start|>assistant\n")
               ["input_ids"])  # fmt: skip
    return {"prompt": chat + point_tokens + image_tokens, "point_tokens": point_tokens,
            "image_tokens": image_tokens, "target": length.tokens, "budget": length.budget}  # fmt: skip


def estimate(shape: mem.ModelShape, a: float, lens: dict, params: dict, gpus: int) -> dict:
    sft, rl = params["sft"], params["rl"]
    L_sft = lens["prompt"] + lens["target"] + 1
    L_rl = lens["prompt"] + lens["budget"]
    rows = rl["prompts_per_step"] * params["shared"]["num_generations"]
    chunk = rl["logprob_chunk_tokens"]
    out = {}
    for strategy in mem.STRATEGIES:
        states = mem.model_states(strategy, shape, gpus)
        s = sum(states.values())
        act = {
            "sft": {ck: mem.activations(sft["per_device_batch_size"] * L_sft, shape, a, ck)
                    for ck in (False, True)},
            "rl": {ck: mem.activations(rows * L_rl, shape, a, ck) for ck in (False, True)},
        }  # fmt: skip
        logits = {"chunked": mem.logits_bytes(min(chunk, rows * lens["budget"]), shape.vocab),
                  "full": mem.logits_bytes(rows * lens["budget"], shape.vocab)}  # fmt: skip
        kv = mem.kv_cache(rows, L_rl, shape)
        gathered = 2 * shape.params if strategy == "zero3" else 0
        ck_sft, ck_rl = sft["gradient_checkpointing"], rl["gradient_checkpointing"]
        phases = {
            "sft_step": s + act["sft"][ck_sft],
            "rl_loss_step": s + act["rl"][ck_rl] + logits["chunked"],
            "rl_generation": s + gathered + kv,
        }
        out[strategy] = {
            "model_states_gib": {k: v / GIB for k, v in states.items()},
            "activations_gib": {
                f"{stage}_{'checkpointing' if ck else 'no_checkpointing'}": v / GIB
                for stage, d in act.items()
                for ck, v in d.items()
            },  # fmt: skip
            "logprob_logits_gib": {k: v / GIB for k, v in logits.items()},
            "generation_kv_cache_gib": kv / GIB,
            "generation_gathered_weights_gib": gathered / GIB,
            "phases_gib": {k: v / GIB for k, v in phases.items()},
            "peak_gib": max(phases.values()) / GIB,
        }
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/bench/memory_paper.json")
    ap.add_argument("--gpus", type=int, default=4)
    args = ap.parse_args(argv)
    params = load_params(profile="paper")
    shape, counts = paper_shape()
    a = measured_bytes_per_token_layer()
    lens = sequence_lengths(params)
    per = estimate(shape, a, lens, params, args.gpus)
    budgets = {"A800 80GB (the paper: 4 x A800, ~48 h, Sec. 4.2)": 80.0, "48 GB cards": 48.0}
    result = {
        "what": "estimate (pointvl/train/memory.py), not a measurement; gpu_check measures one GPU",
        "gpus": args.gpus,
        "params": counts,
        "shape": dataclasses.asdict(shape),
        "activation_bytes_per_token_per_layer": {
            "measured_bf16_autocast_sdpa": a,
            "checkpointed": 2 * shape.hidden,
        },  # fmt: skip
        "sequence_tokens": lens,
        "micro_batches": {
            "sft_rows": params["sft"]["per_device_batch_size"],
            "rl_rows": params["rl"]["prompts_per_step"] * params["shared"]["num_generations"],
            "logprob_chunk_tokens": params["rl"]["logprob_chunk_tokens"],
            "gradient_checkpointing": {
                "sft": params["sft"]["gradient_checkpointing"],
                "rl": params["rl"]["gradient_checkpointing"],
            },
        },  # fmt: skip
        "per_gpu": per,
        "fits": {
            name: {s: per[s]["peak_gib"] <= gib for s in per} for name, gib in budgets.items()
        },
        "paper_launch": params["launch"]["accelerate_config"],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    for s, r in per.items():
        print(f"{s:6s} peak {r['peak_gib']:6.1f} GiB  " + "  ".join(
            f"{k} {v:5.1f}" for k, v in r["phases_gib"].items()))  # fmt: skip


if __name__ == "__main__":
    main()
