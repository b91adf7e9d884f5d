"""Where a decoding step of the RL rollout spends its time (the RL issue's speed target).

    python benchmarks/profile_decode.py [--prompts 2 8] [--threads 1] [--repeats 5]

The ``tiny`` SFT checkpoint completes ``--prompts`` validation prompts G = 8 times with the
rollout sampler (``pointvl.eval.generate.decode``, T = rl.temperature), three ways (``IMPLS``):

- ``lean``: what RL and evaluation use: ``pointvl.eval.lean_step.LeanStep`` (the layers'
  arithmetic on a preallocated KV cache), each step's Exp(1) draws made on a second thread
  during the step before (``draw_ahead``, ``pointvl.eval.generate._Noise``);
- ``lean_draws_inline``: the same steps, the draws made in turn on the main thread;
- ``module``: the model's own modules and ``DynamicCache`` (``decode(lean=False)``), draws
  inline: the step as Hugging Face's ``generate`` runs it.

Each is run once untimed (warm-up); then ``--repeats`` rounds time the three in turn (the
median is reported, so drift of the machine hits all three alike); then each runs once under
cProfile (main thread only: time spent waiting for draws made ahead shows as a lock wait).
Writes ``results/bench/decode_profile.json``: per prompt count and implementation the wall
time, ms per decoding step, completions/s and the profile's self time grouped by what it is
(linear layers, KV-cache concatenation, attention, the Exp(1) draws that reproduce
``torch.multinomial``, RMSNorm / rotary arithmetic, and the rest: Python and module calls);
the speed-ups of ``lean`` over ``module`` and over ``lean_draws_inline``; and whether the
three gave the same completions (and ``lean`` / ``lean_draws_inline`` the same log-probs, to
the bit). Needs ``checkpoints/tiny/sft/final`` and ``data/tiny``.
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
    "'acquire' of '_thread.lock'": "waiting for the Exp(1) draws made ahead (second thread)",
}
IMPLS = {  # name -> decode(lean=..., draw_ahead=...)
    "lean": (True, True),
    "lean_draws_inline": (True, False),
    "module": (False, False),
}


def _group(key: tuple) -> str:
    name = f"{key[0]}:{key[1]}({key[2]})"
    for pattern, group in GROUPS.items():
        if pattern in name:
            return group
    return "Python, module calls and other ops"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, nargs="+", default=[2, 8])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "results/bench/decode_profile.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from pointvl.data.dataset import PointVLDataset
    from pointvl.eval.generate import load_checkpoint
    from pointvl.train.allocator import keep_heap
    from pointvl.train.config import RLConfig
    from pointvl.train.rl import rollout_sampling

    allocator = keep_heap()  # as the rl stage sets it on a CPU launch
    params = load_params(ROOT / "params.yaml", "tiny")
    rl = RLConfig(**{k: v for k, v in params["rl"].items() if k in RLConfig.__dataclass_fields__})
    model, proc = load_checkpoint(ROOT / "checkpoints/tiny/sft/final")
    ds = PointVLDataset(ROOT / "data/tiny", "val")
    sampling = rollout_sampling(rl, proc)
    G = rl.num_generations
    result = {
        "machine": {
            "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(),
            "allocator": allocator,
        },
        "G": G,
        "temperature": sampling.temperature,
        "implementations": {k: {"lean": a, "draw_ahead": b} for k, (a, b) in IMPLS.items()},
        "runs": {},
    }
    for n in args.prompts:
        batch = proc.batch([ds[i] for i in range(n)], with_target=False)
        result["runs"][f"prompts_{n}"] = run = _compare(model, batch, sampling, G, args.repeats)
        run["prompts"] = n
        for name, r in run["steps"].items():
            print(f"{n} prompts, {name}: {r['ms_per_step']:.2f} ms/step, "
                  f"{r['completions_per_s']:.1f} completions/s")  # fmt: skip
    atomic_write_json(args.out, result)


def _compare(model, batch, sampling, G: int, repeats: int) -> dict:
    """The three implementations on one batch: alternating timed rounds, then profiles."""
    from pointvl.eval.generate import decode

    def once(name: str, logprobs: bool = False):
        lean, ahead = IMPLS[name]
        torch.manual_seed(0)
        return decode(model, batch, sampling, G, logprobs, lean=lean, draw_ahead=ahead)

    outs = {name: once(name, logprobs=True) for name in IMPLS}  # warm-up, and what is compared
    walls: dict[str, list[float]] = {name: [] for name in IMPLS}
    for _ in range(repeats):
        for name in IMPLS:
            t0 = time.perf_counter()
            once(name)
            walls[name].append(time.perf_counter() - t0)
    ids = outs["lean"].ids
    steps = {name: _profiled(lambda name=name: once(name), walls[name], ids) for name in IMPLS}
    return {
        "completions": len(ids),
        "tokens": sum(len(r) for r in ids),
        "decoding_steps": max(len(r) for r in ids),
        "identical_completions": all(o.ids == ids for o in outs.values()),
        "identical_logprobs_draw_ahead": outs["lean"].logprobs
        == outs["lean_draws_inline"].logprobs,
        "speedup_lean_over_module": steps["module"]["wall_s"] / steps["lean"]["wall_s"],
        "speedup_draw_ahead": steps["lean_draws_inline"]["wall_s"] / steps["lean"]["wall_s"],
        "steps": steps,
    }


def _profiled(once, walls: list[float], ids) -> dict:
    """Median of the timed ``walls`` and the self time of one profiled run, grouped."""
    wall = statistics.median(walls)
    prof = cProfile.Profile()
    prof.enable()
    once()
    prof.disable()
    groups: dict[str, float] = {}
    for key, (_, _, tottime, _, _) in pstats.Stats(prof).stats.items():
        groups[_group(key)] = groups.get(_group(key), 0.0) + tottime
    total = sum(groups.values())
    steps = max(len(r) for r in ids)
    return {
        "wall_s": wall, "wall_s_all": walls, "ms_per_step": 1000 * wall / steps,
        "completions_per_s": len(ids) / wall, "profiled_s": total,
        "self_time_share": {k: v / total for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
    }  # fmt: skip


if __name__ == "__main__":
    main()
