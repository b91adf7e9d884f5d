"""RL speed: whole RL steps of the PointVL policy (ours vs stock TRL) and the routing overhead.

    python benchmarks/bench_train.py [--steps 8] [--rounds 2] [--quick]

``rollouts`` (the target of the RL issue: >= 2x TRL's stock step): the PointVL policy at
the ``tiny`` size in ``GRCATrainer``, same seed, same rows, the arms alternating (``ARMS``):

- ``trl_stock``: what stock TRL does: ``model.generate`` on every row (``rollouts="trl"``) and
  every row's loss forward in full (``prompt_sharing="none"``: Point-BERT, the vision tower
  and the prompt tokens once per row);
- ``trl``: TRL's generation, our loss pass (encoders once per prompt);
- ``decode``: the committed runs' setting: the evaluation sampler (each prompt prefilled once
  for its G completions, ``LeanStep`` decoding on a preallocated KV cache, finished rows
  leaving the batch, each step's Exp(1) draws made during the step before on a second
  thread) and encoders once per prompt in the loss;
- ``decode_prefix``: and the prompt's tokens once per prompt in the loss
  (``prompt_sharing="prefix"``, ``pointvl.train.shared_prompt``).

Reported: completions/s of whole RL steps (generate + score + loss + optimizer; the median
over ``--rl-rounds`` x (``--rl-steps`` - 1) steps, the first of a run dropped), each arm's
ratio to ``trl_stock`` (with a 95% bootstrap interval over steps) and to ``trl``, the median seconds of the generate + score and
loss-forward phases, and the fraction of completions identical to ``trl_stock``'s, over every
step of every round (the first step's are the same draw from the same weights; from the
second step on the weights differ by float rounding between arms whose losses are summed in
another order). ``--threads`` torch threads (the rl stage runs
with ``launch.rl_cpu_threads``, 1). The policy is the SFT checkpoint when one exists
(realistic lengths), else random. Every arm runs in this one process under one glibc heap
setting, ``--malloc`` (default ``keep_heap``, what the rl stage sets on a CPU launch:
``pointvl.train.allocator``; ``default``: glibc's own), so the ratios compare code only;
the minor page faults per step of each arm are recorded beside them.

``scripted`` / ``sampled`` (the routing overhead):
Same tiny model (random 2-layer Qwen2 LM, BPE tokenizer), same rows, same seed, one process,
one torch thread. Two settings:

- ``sampled``: real sampling to ``max_completion_length`` (a random model writes no JSON,
  so the credit path sees parse failures: the overhead floor);
- ``scripted``: generation replaced, in *both* trainers, by the eight written completions
  of ``pointvl.demo`` (valid and broken JSON): parsing, scoring, span alignment and routing
  run on real targets (the overhead on realistic text).

The two trainers alternate in ``rounds`` (each round trains both for ``steps`` steps); the
statistic is the median of TRL's per-step ``step_time`` (first step of a run dropped), with
the ratio of minima (robust to other jobs on a shared machine) and per-phase medians
(generate + score + advantages; loss forward) beside it.
Also: the PointVL policy's RL step (point clouds through generation and log-probs) and SFT
samples/s at the ``tiny`` model size, peak RSS, and an estimate of the whole ``tiny`` chain.
Writes results/bench/train.json. Target: ratio <= 1.03.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from pointvl.config import load_params
from pointvl.credit import CreditConfig
from pointvl.io import atomic_write_json
from pointvl.step import Scoring
from pointvl.train.allocator import keep_heap
from pointvl.train.grca_trainer import GeometryTask, GRCATrainer
from pointvl.train.routed import TaskReward
from pointvl.train.tiny import (
    scripted_completions,
    tiny_lm,
    tiny_policy_rows,
    tiny_rows,
    tiny_tokenizer,
)

ROOT = Path(__file__).resolve().parent.parent
G = 8


class Timed:
    """Times the two phases of a step: generate + score (+ advantages), and the loss; keeps
    the completions."""

    def _generate_and_score_completions(self, inputs):
        t0 = time.perf_counter()
        out = super()._generate_and_score_completions(inputs)
        self.phase_times["generate_and_score"].append(time.perf_counter() - t0)
        ids, mask = out["completion_ids"].tolist(), out["completion_mask"].tolist()
        self.completions.append([[t for t, m in zip(r, mr) if m] for r, mr in zip(ids, mask)])
        return out

    def _compute_loss(self, model, inputs):
        t0 = time.perf_counter()
        loss = super()._compute_loss(model, inputs)
        self.phase_times["loss_forward"].append(time.perf_counter() - t0)
        return loss


class Scripted(Timed):
    script: list[list[int]] = []

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, **kw):
        return [list(self.script[i % len(self.script)]) for i in range(len(prompt_ids))], None


class ScriptedTRL(Scripted, GRPOTrainer):
    pass


class ScriptedGRCA(Scripted, GRCATrainer):
    pass


class TimedTRL(Timed, GRPOTrainer):
    pass


class TimedGRCA(Timed, GRCATrainer):
    pass


def grpo_args(out: str, steps: int, max_len: int) -> GRPOConfig:
    return GRPOConfig(
        output_dir=out,
        per_device_train_batch_size=2 * G,
        num_generations=G,
        max_completion_length=max_len,
        max_steps=steps,
        learning_rate=1e-5,
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
        loss_type="grpo",
    )


def run_one(kind, scripted, model, tok, rows, script, steps, max_len, phases) -> list[float]:
    """Train ``steps`` steps; per-step times (TRL's ``step_time``), first dropped."""
    with tempfile.TemporaryDirectory() as out:
        args = grpo_args(out, steps, max_len)
        ds = Dataset.from_list(rows)
        m = copy.deepcopy(model)
        if kind == "trl":
            cls = ScriptedTRL if scripted else TimedTRL
            t = cls(
                m,
                reward_funcs=[TaskReward(GeometryTask(Scoring(100)), "seq")],
                args=args,
                train_dataset=ds,
                processing_class=tok,
            )
        else:
            cls = ScriptedGRCA if scripted else TimedGRCA
            t = cls(m, args=args, train_dataset=ds, processing_class=tok, variant="grca_rpc",
                    credit=CreditConfig(lam=0.15), scoring=Scoring(100), rollouts="trl")  # fmt: skip
        t.script = script
        t.completions = []
        t.phase_times = {"generate_and_score": [], "loss_forward": []}
        torch.manual_seed(0)
        t.train()
    for k, v in t.phase_times.items():
        phases[k] += v[1:]
    times = [r["step_time"] for r in t.state.log_history if "step_time" in r]
    return times[1:]


def compare(scripted: bool, model, tok, rows, steps: int, rounds: int, max_len: int) -> dict:
    end = tok.convert_tokens_to_ids("<|im_end|>")
    texts = scripted_completions(rows[0]["target"], 100)
    script = [tok(t, add_special_tokens=False)["input_ids"] + [end] for t in texts]
    times = {"trl": [], "grca_rpc": []}
    phases = {k: {"generate_and_score": [], "loss_forward": []} for k in times}
    for _ in range(rounds):
        for kind in times:
            times[kind] += run_one(
                kind, scripted, model, tok, rows, script, steps, max_len, phases[kind]
            )
    med = {k: statistics.median(v) for k, v in times.items()}
    low = {k: min(v) for k, v in times.items()}
    phase_med = {k: {p: statistics.median(v) for p, v in ph.items()} for k, ph in phases.items()}
    return {
        "trl_grpo_s_per_step": med["trl"],
        "grca_rpc_s_per_step": med["grca_rpc"],
        "ratio": med["grca_rpc"] / med["trl"],
        "ratio_of_minima": low["grca_rpc"] / low["trl"],
        "phase_median_s": phase_med,
        "steps_measured": {k: len(v) for k, v in times.items()},
        "trl_all": times["trl"],
        "grca_rpc_all": times["grca_rpc"],
    }


def _policy_and_rows(model_cfg, n_prompts: int):
    """The SFT checkpoint and test prompts of the tiny profile when built, else a random
    policy and random rows (completions then run to max_completion_length)."""
    from pointvl.model.policy import build_tiny_policy

    ckpt, data = ROOT / "checkpoints/tiny/sft/final", ROOT / "data/tiny"
    if (ckpt / "config.json").is_file() and (data / "manifest.json").is_file():
        from pointvl.data.dataset import PointVLDataset
        from pointvl.eval.generate import load_checkpoint
        from pointvl.train.rl import rl_rows

        model, proc = load_checkpoint(ckpt)
        ds = PointVLDataset(data, "val")
        return model, proc, ds, rl_rows(ds, proc, limit=n_prompts), "sft checkpoint, val prompts"
    tok = tiny_tokenizer()
    model, proc = build_tiny_policy(tok, model_cfg)
    rows = tiny_policy_rows(proc, n_prompts, model_cfg.num_points, (112, 112))
    return model, proc, rows, rows, "random init, random rows"


ARMS = {  # name -> (rollouts, prompt_sharing); the first is the reference
    "trl_stock": ("trl", "none"),
    "trl": ("trl", "encoders"),
    "decode": ("decode", "encoders"),
    "decode_prefix": ("decode", "prefix"),
}


def _timed_run(model, proc, dataset, rows, cfg, rollouts: str, sharing: str) -> dict:
    """One RL run of ``cfg.max_steps`` steps; its step times (first dropped), phases and
    completions."""
    from pointvl.train.rl import build_rl_trainer, grpo_args

    with tempfile.TemporaryDirectory() as out:
        args = grpo_args(cfg, out, proc, report_to=[], save_strategy="no", disable_tqdm=True)
        t = build_rl_trainer(copy.deepcopy(model), proc, dataset, rows, cfg, args, 100, 16)
        t.__class__ = type("TimedRL", (Timed, type(t)), {})
        t.rollouts, t.prompt_sharing, t.completions = rollouts, sharing, []
        t.phase_times = {"generate_and_score": [], "loss_forward": []}
        torch.manual_seed(0)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t.train()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    steps = [r["step_time"] for r in t.state.log_history if "step_time" in r]
    return {"steps": steps[1:], "phases": {k: v[1:] for k, v in t.phase_times.items()},
            "completions": t.completions, "faults_per_step": faults / cfg.max_steps}  # fmt: skip


def rollout_throughput(model_cfg, rl: dict, steps: int, rounds: int, prompts: int) -> dict:
    """Completions/s of whole RL steps of the PointVL policy, arm by arm (``ARMS``)."""
    from pointvl.train.config import RLConfig

    model, proc, dataset, rows, source = _policy_and_rows(model_cfg, prompts * (steps + 1))
    cfg = RLConfig(**{**rl, "variant": "grca_rpc", "prompts_per_step": prompts, "max_steps": steps})
    times = {k: [] for k in ARMS}
    phases = {k: {"generate_and_score": [], "loss_forward": []} for k in ARMS}
    completions: dict[str, list] = {}
    faults: dict[str, list] = {k: [] for k in ARMS}
    for _ in range(rounds):
        for kind, (rollouts, sharing) in ARMS.items():
            run = _timed_run(model, proc, dataset, rows, cfg, rollouts, sharing)
            times[kind] += run["steps"]
            for k, v in run["phases"].items():
                phases[kind][k] += v
            completions.setdefault(kind, []).extend(run["completions"])
            faults[kind].append(run["faults_per_step"])
    B = prompts * cfg.num_generations
    rate = {k: B / statistics.median(v) for k, v in times.items()}
    ref = next(iter(ARMS))
    rng = np.random.default_rng(0)

    def ratio_ci(kind: str, n: int = 2000) -> list[float]:
        """95% percentile bootstrap of median(ref step times) / median(kind's), steps
        resampled within each arm."""
        a, b = np.asarray(times[ref]), np.asarray(times[kind])
        r = [np.median(rng.choice(a, a.size)) / np.median(rng.choice(b, b.size)) for _ in range(n)]
        return [float(np.percentile(r, 2.5)), float(np.percentile(r, 97.5))]

    def same(kind: str) -> float:
        pairs = zip(completions[ref], completions[kind])
        return float(np.mean([a == b for sa, sb in pairs for a, b in zip(sa, sb)]))

    lengths = [len(c) for step in completions["decode"] for c in step]
    return {
        "policy": source,
        "torch_threads": torch.get_num_threads(),
        "prompts_per_step": prompts,
        "G": cfg.num_generations,
        "arms": {k: {"rollouts": r, "prompt_sharing": p} for k, (r, p) in ARMS.items()},
        "completions_per_s": rate,
        "ratio_over_trl_stock": {k: rate[k] / rate["trl_stock"] for k in ARMS},
        "ratio_over_trl_stock_ci95": {k: ratio_ci(k) for k in ARMS},
        "ratio_over_trl": {k: rate[k] / rate["trl"] for k in ARMS},
        "identical_to_trl_stock_frac": {k: same(k) for k in ARMS},
        "completions_compared": sum(len(s) for s in completions[ref]),
        "mean_completion_tokens": float(np.mean(lengths)),
        "phase_median_s": {
            k: {p: statistics.median(v) for p, v in ph.items()} for k, ph in phases.items()
        },
        "minor_page_faults_per_step": {k: statistics.median(v) for k, v in faults.items()},
        "s_per_step_all": times,
    }


def sft_throughput(model_cfg, batch: int, steps: int) -> dict:
    """SFT samples/s of the PointVL policy on synthetic samples (target JSON of demo objects)."""
    from pointvl.demo import demo_target
    from pointvl.model.policy import build_tiny_policy
    from pointvl.schema import format_target
    from pointvl.train.config import SFTConfig
    from pointvl.train.sft import SFTSamples, build_sft_trainer, sft_training_args

    tok = tiny_tokenizer()
    model, proc = build_tiny_policy(tok, model_cfg)
    rng = np.random.default_rng(0)
    samples = [
        {
            "points": rng.uniform(-0.5, 0.5, (model_cfg.num_points, 6)).astype(np.float32),
            "image": rng.integers(0, 256, (112, 112, 3), dtype=np.uint8),
            "question": "Locate the object in 2D and 3D.",
            "target": format_target(demo_target(i)),
        }
        for i in range(batch * (steps + 1))
    ]
    cfg = SFTConfig(
        per_device_batch_size=batch, max_steps=steps + 1, logging_steps=1, save_steps=10**6
    )
    with tempfile.TemporaryDirectory() as out:
        args = sft_training_args(cfg, out, save_strategy="no", report_to=[])
        tr = build_sft_trainer(model, proc, SFTSamples(samples, proc), args)
        t0 = time.perf_counter()
        stamps = []

        class Stamp(__import__("transformers").TrainerCallback):
            def on_step_end(self, *a, **k):
                stamps.append(time.perf_counter())

        tr.add_callback(Stamp())
        tr.train()
    per_step = float(np.median(np.diff([t0, *stamps])[1:]))
    return {"batch": batch, "s_per_step": per_step, "samples_per_s": batch / per_step}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="fewer steps, skip the PointVL parts")
    ap.add_argument("--rl-steps", type=int, default=5, help="RL steps per rollout run")
    ap.add_argument("--rl-rounds", type=int, default=3, help="rounds of the four rollout arms")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the PointVL parts (the rl stage: 1)",
    )
    ap.add_argument("--out", default=str(ROOT / "results/bench/train.json"))
    ap.add_argument(
        "--malloc",
        choices=("keep_heap", "default"),
        default="keep_heap",
        help="glibc heap setting of this process, the same for every arm (the rl stage: "
        "keep_heap, pointvl.train.allocator)",
    )
    args = ap.parse_args()
    allocator = keep_heap() if args.malloc == "keep_heap" else {"allocator": "default"}
    torch.set_num_threads(1)
    if args.quick:
        args.steps, args.rounds = 3, 1

    tok = tiny_tokenizer()
    model = tiny_lm(tok)
    rows = tiny_rows(64, tok)
    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch_threads": torch.get_num_threads(),
            "device": "cpu",
            "allocator": allocator,
        },  # fmt: skip
        "setting": {
            "G": G,
            "prompts_per_step": 2,
            "max_completion_length": args.max_len,
            "model": "Qwen2ForCausalLM 2 layers, hidden 64 (random)",
            "steps_per_run": args.steps,
            "rounds": args.rounds,
        },  # fmt: skip
        "scripted": compare(True, model, tok, rows, args.steps, args.rounds, args.max_len),
        "sampled": compare(False, model, tok, rows, args.steps, args.rounds, args.max_len),
        "target_ratio": 1.03,
    }
    if not args.quick:
        from pointvl.model import ModelConfig

        merged = load_params(ROOT / "params.yaml", "tiny")
        model_cfg = dataclasses.replace(ModelConfig(), **merged.get("model", {}))
        torch.set_num_threads(args.threads)
        result["rollouts"] = {
            f"prompts_{p}": rollout_throughput(
                model_cfg, merged["rl"], args.rl_steps, args.rl_rounds, p
            )
            for p in (2, 8)
        }
        result["rollouts"]["today_completions_per_s"] = 8.0
        result["rollouts"]["today_note"] = (
            "the RL issue's measurement before this change (2 quiet cores, correct rollouts, "
            "tiny policy): 8.0 completions/s for 2 or 8 prompts x G = 8"
        )
        st = sft_throughput(model_cfg, batch=merged["sft"]["per_device_batch_size"], steps=4)
        result["sft_tiny"] = st
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    atomic_write_json(args.out, result)
    for k in ("scripted", "sampled"):
        r = result[k]
        print(f"{k}: TRL {r['trl_grpo_s_per_step']:.4f} s/step, grca_rpc "
              f"{r['grca_rpc_s_per_step']:.4f} s/step, ratio {r['ratio']:.3f}")  # fmt: skip
    for k, r in result.get("rollouts", {}).items():
        if isinstance(r, dict):
            rates = {a: round(v, 2) for a, v in r["completions_per_s"].items()}
            ratio = {a: round(v, 2) for a, v in r["ratio_over_trl_stock"].items()}
            ci = {a: [round(x, 2) for x in v] for a, v in r["ratio_over_trl_stock_ci95"].items()}
            print(f"rollouts {k}: completions/s {rates}; over trl_stock {ratio} CI {ci}")


if __name__ == "__main__":
    main()
