"""Where a decoding step of the RL rollout spends its time (the RL issue's speed target).

    python benchmarks/profile_decode.py [--prompts 2] [--threads 1]

The ``tiny`` SFT checkpoint completes ``--prompts`` validation prompts G = 8 times with the
rollout sampler (``pointvl.eval.generate.decode``, T = rl.temperature), once untimed (warm-up),
once timed and once under cProfile. Writes ``results/bench/decode_profile.json``: wall time,
tokens and decoding steps, ms per step, and the profile's self time grouped by what it is
(linear layers, KV-cache concatenation, attention, the Exp(1) draws that reproduce
``torch.multinomial``, RMSNorm / rotary arithmetic, and the rest: Python and module calls),
each as a share of the profiled total. Needs ``checkpoints/tiny/sft/final`` and ``data/tiny``.
"""

from __future__ import annotations

import argparse
import cProfile
import platform
import pstats
import time
from pathlib import Path

import torch

from pointvl.config import load_params
from pointvl.io import atomic_write_json

ROOT = Path(__file__).resolve().parent.parent
GROUPS = {  # profile entry (substring of "file:line(function)") -> group
    "torch._C._nn.linear": "linear layers",
    "torch.cat": "KV cache + mask concatenation (torch.cat)",
    "scaled_dot_product_attention": "attention (SDPA)",
    "exponential_": "Exp(1) draws (multinomial-equivalent sampling)",
    "'mean'": "RMSNorm / rotary arithmetic",
    "'pow'": "RMSNorm / rotary arithmetic",
    "rotate_half": "RMSNorm / rotary arithmetic",
    "embedding": "embedding lookup",
}


def _group(key: tuple) -> str:
    name = f"{key[0]}:{key[1]}({key[2]})"
    for pattern, group in GROUPS.items():
        if pattern in name:
            return group
    return "Python, module calls and other ops"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "results/bench/decode_profile.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from pointvl.data.dataset import PointVLDataset
    from pointvl.eval.generate import decode, load_checkpoint
    from pointvl.train.config import RLConfig
    from pointvl.train.rl import rollout_sampling

    params = load_params(ROOT / "params.yaml", "tiny")
    rl = RLConfig(**{k: v for k, v in params["rl"].items() if k in RLConfig.__dataclass_fields__})
    model, proc = load_checkpoint(ROOT / "checkpoints/tiny/sft/final")
    ds = PointVLDataset(ROOT / "data/tiny", "val")
    batch = proc.batch([ds[i] for i in range(args.prompts)], with_target=False)
    sampling = rollout_sampling(rl, proc)
    G = rl.num_generations

    def once():
        torch.manual_seed(0)
        return decode(model, batch, sampling, group_size=G)

    once()  # warm-up
    t0 = time.perf_counter()
    out = once()
    wall = time.perf_counter() - t0
    prof = cProfile.Profile()
    prof.enable()
    once()
    prof.disable()
    st = pstats.Stats(prof)
    groups: dict[str, float] = {}
    for key, (_, _, tottime, _, _) in st.stats.items():
        groups[_group(key)] = groups.get(_group(key), 0.0) + tottime
    total = sum(groups.values())
    steps = max(len(r) for r in out.ids)
    tokens = sum(len(r) for r in out.ids)
    atomic_write_json(args.out, {
        "machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads()},
        "prompts": args.prompts, "G": G, "temperature": sampling.temperature,
        "completions": len(out.ids), "tokens": tokens, "decoding_steps": steps,
        "wall_s": wall, "ms_per_step": 1000 * wall / steps,
        "completions_per_s": len(out.ids) / wall,
        "profiled_s": total,
        "self_time_share": {k: v / total for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
    })  # fmt: skip
    print(f"{len(out.ids)} completions, {steps} steps, {1000 * wall / steps:.2f} ms/step")


if __name__ == "__main__":
    main()
