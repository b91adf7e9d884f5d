"""Where a decoding step of the RL rollout spends its time (the RL issue's speed target).

    python benchmarks/profile_decode.py [--prompts 2] [--threads 1] [--repeats 3]

The ``tiny`` SFT checkpoint completes ``--prompts`` validation prompts G = 8 times with the
rollout sampler (``pointvl.eval.generate.decode``, T = rl.temperature) with each decoding step
implementation: ``lean`` (``pointvl.eval.lean_step.LeanStep``: the layers' arithmetic on a
preallocated KV cache, what RL and evaluation use) and ``module`` (the model's own modules and
``DynamicCache``, ``decode(lean=False)``). Each is run once untimed (warm-up), ``--repeats``
times timed (the median is reported) and once under cProfile. Writes
``results/bench/decode_profile.json``: per implementation the wall time, ms per decoding step,
completions/s and the profile's self time grouped by what it is (linear layers, KV-cache
concatenation, attention, the Exp(1) draws that reproduce ``torch.multinomial``, RMSNorm /
rotary arithmetic, and the rest: Python and module calls); the lean / module speed-up; and
whether both gave the same completions. Needs ``checkpoints/tiny/sft/final`` and ``data/tiny``.
"""

from __future__ import annotations

import argparse
import cProfile
import platform
import pstats
import statistics
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
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "results/bench/decode_profile.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from pointvl.data.dataset import PointVLDataset
    from pointvl.eval.generate import load_checkpoint
    from pointvl.train.config import RLConfig
    from pointvl.train.rl import rollout_sampling

    params = load_params(ROOT / "params.yaml", "tiny")
    rl = RLConfig(**{k: v for k, v in params["rl"].items() if k in RLConfig.__dataclass_fields__})
    model, proc = load_checkpoint(ROOT / "checkpoints/tiny/sft/final")
    ds = PointVLDataset(ROOT / "data/tiny", "val")
    batch = proc.batch([ds[i] for i in range(args.prompts)], with_target=False)
    sampling = rollout_sampling(rl, proc)
    G = rl.num_generations

    runs = {name: _measure(model, batch, sampling, G, lean, args.repeats)
            for name, lean in (("lean", True), ("module", False))}  # fmt: skip
    ids = {name: run.pop("ids") for name, run in runs.items()}
    atomic_write_json(args.out, {
        "machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads()},
        "prompts": args.prompts, "G": G, "temperature": sampling.temperature,
        "completions": len(ids["lean"]), "tokens": sum(len(r) for r in ids["lean"]),
        "decoding_steps": max(len(r) for r in ids["lean"]),
        "identical_completions": ids["lean"] == ids["module"],
        "speedup_lean_over_module": runs["module"]["wall_s"] / runs["lean"]["wall_s"],
        "steps": runs,
    })  # fmt: skip
    for name, run in runs.items():
        print(
            f"{name}: {run['ms_per_step']:.2f} ms/step, {run['completions_per_s']:.1f} completions/s"
        )


def _measure(model, batch, sampling, G: int, lean: bool, repeats: int) -> dict:
    """Median wall time of ``repeats`` seeded decodes (after one warm-up) and one profile."""
    from pointvl.eval.generate import decode

    def once():
        torch.manual_seed(0)
        return decode(model, batch, sampling, num_generations=G, lean=lean)

    once()  # warm-up
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = once()
        walls.append(time.perf_counter() - t0)
    wall = statistics.median(walls)
    prof = cProfile.Profile()
    prof.enable()
    once()
    prof.disable()
    groups: dict[str, float] = {}
    for key, (_, _, tottime, _, _) in pstats.Stats(prof).stats.items():
        groups[_group(key)] = groups.get(_group(key), 0.0) + tottime
    total = sum(groups.values())
    steps = max(len(r) for r in out.ids)
    return {
        "ids": out.ids, "wall_s": wall, "wall_s_all": walls, "ms_per_step": 1000 * wall / steps,
        "completions_per_s": len(out.ids) / wall, "profiled_s": total,
        "self_time_share": {k: v / total for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
    }  # fmt: skip


if __name__ == "__main__":
    main()
