"""Choose the `tiny` RL recipe on the validation split (never test), before comparing arms.

    python scripts/choose_rl_recipe.py [--steps 60] [--temperatures 0.3 0.5 0.7 1.0]

1. Temperature: ``pointvl.train.recipe.temperature_scan`` on the SFT policy (val prompts):
   parse-failure rate, within-group variance of r_seq and the share of it explained by parse
   success, zero-spread groups. Rule (fixed before the scan): the temperature with the lowest
   parse share among those where at most 20% of groups have zero spread.
2. lr x loss normaliser: short runs of the GRPO and GRCA arms at that temperature; the
   candidate with the best mean validation slope whose rollout parse failures stay < 20%.
Writes results/rl_recipe/{temperature,short_runs,recipe}.json and recipe.md. The chosen
values are then written into params.yaml (section rl) by hand, and frozen for every arm.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--temperatures", type=float, nargs="+", default=[0.3, 0.5, 0.7, 1.0])
    ap.add_argument("--val-prompts", type=int, default=32)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-5, 3e-5])
    ap.add_argument("--loss-types", nargs="+", default=["grpo", "dapo"])
    ap.add_argument("--arms", nargs="+", default=["grpo", "grca"])
    ap.add_argument("--out", default=str(ROOT / "results/rl_recipe"))
    ap.add_argument("--skip-scan", action="store_true", help="reuse temperature.json")
    args = ap.parse_args()

    from pointvl.config import SchemaConfig, load_section
    from pointvl.data.dataset import PointVLDataset
    from pointvl.eval.generate import load_checkpoint
    from pointvl.eval.stats import slope_ci
    from pointvl.io import atomic_write_json, atomic_write_text, read_jsonl
    from pointvl.stages import rl as rl_stage
    from pointvl.train.config import RLConfig
    from pointvl.train.recipe import Candidate, choose, temperature_scan
    from pointvl.train.rl import reward_target, scoring_of

    out = Path(args.out)
    profile = args.profile
    cfg = load_section(args.params, "rl", RLConfig, profile).resolved(profile)
    schema = load_section(args.params, "schema", SchemaConfig, profile)
    scoring = scoring_of(cfg, schema.quant_bins, schema.num_keypoints)

    # 1. temperature
    scan_path = out / "temperature.json"
    if args.skip_scan and scan_path.is_file():
        scan = json.loads(scan_path.read_text())
    else:
        model, processor = load_checkpoint(cfg.sft_checkpoint)
        val = PointVLDataset(cfg.data_dir, "val", qa_mode=cfg.qa_mode)
        samples = [val[i] for i in range(min(args.val_prompts, len(val)))]
        t0 = time.perf_counter()
        scan = temperature_scan(
            model, processor, samples, [reward_target(s) for s in samples], args.temperatures,
            cfg.num_generations, cfg.max_completion_length, scoring,
        )  # fmt: skip
        scan["_meta"] = {"val_prompts": len(samples), "G": cfg.num_generations,
                         "wall_s": time.perf_counter() - t0}  # fmt: skip
        atomic_write_json(scan_path, scan)
    rows = {k: v for k, v in scan.items() if not k.startswith("_")}
    ok = {k: v for k, v in rows.items() if v["zero_spread_frac"] <= 0.2} or rows
    T = min(ok.values(), key=lambda v: v["share_parse"])["temperature"]
    print(f"temperature: {T} ({json.dumps(rows[f'{T:g}'])})", flush=True)

    # 2. lr x loss normaliser, short runs of the arms
    short: dict = {}
    short_path = out / "short_runs.json"
    if short_path.is_file():
        short = json.loads(short_path.read_text())
    for lr in args.lrs:
        for loss in args.loss_types:
            cand = Candidate(lr, loss)
            for arm in args.arms:
                if arm in short.get(cand.name, {}):
                    continue
                with tempfile.TemporaryDirectory(prefix="recipe_") as tmp:
                    c = dataclasses.replace(
                        cfg, variant=arm, temperature=T, learning_rate=lr, loss_type=loss,
                        max_steps=args.steps, save_steps=10**6, out_dir=f"{tmp}/ckpt",
                        log_dir=f"{tmp}/log", metrics=f"{tmp}/m.json",
                    )  # fmt: skip
                    t0 = time.perf_counter()
                    rl_stage.run(c, schema, profile)
                    recs = read_jsonl(Path(tmp) / "log/log.jsonl")
                val = [r for r in recs if "val/n" in r]
                fields = [k for k in val[0] if k.startswith("val/reward/") and k[11:] in
                          ("bbox2d", "bbox3d", "kpts2d", "kpts3d")]  # fmt: skip
                steps = [r["step"] for r in val]
                mean = [sum(r[k] for k in fields) / len(fields) for r in val]
                fit = slope_ci(steps, mean)
                pf = [r["spans/parse_fail_frac"] for r in recs if "spans/parse_fail_frac" in r]
                short.setdefault(cand.name, {})[arm] = {
                    "val_field_reward": mean,
                    "val_steps": steps,
                    "val_slope_per_100": 100 * fit["slope"],
                    "val_slope_ci_per_100": [100 * fit["lo"], 100 * fit["hi"]],
                    "rollout_parse_fail_max": max(pf),
                    "rollout_parse_fail_mean": sum(pf) / len(pf),
                    "wall_s": time.perf_counter() - t0,
                }
                atomic_write_json(short_path, short)
                print(cand.name, arm, json.dumps(short[cand.name][arm])[:300], flush=True)
    choice = choose(short)
    chosen = next(Candidate(lr, lt) for lr in args.lrs for lt in args.loss_types
                  if Candidate(lr, lt).name == choice["chosen"])  # fmt: skip
    recipe = {"temperature": T, "learning_rate": chosen.learning_rate,
              "loss_type": chosen.loss_type, "short_run_steps": args.steps,
              "prompts_per_step": cfg.prompts_per_step, "num_generations": cfg.num_generations,
              "choice": choice, "profile": profile}  # fmt: skip
    atomic_write_json(out / "recipe.json", recipe)
    lines = [
        "# The tiny RL recipe, chosen on the validation split", "",
        "## Temperature (SFT policy, val prompts, G completions each)", "",
        "| T | parse fail | r_seq mean | within-group var | share explained by parse | "
        "zero-spread groups |", "|---|---|---|---|---|---|",
        *[f"| {v['temperature']:g} | {v['parse_fail']:.1%} | {v['seq_mean']:.3f} | "
          f"{v['within_group_var']:.4f} | {v['share_parse']:.1%} | {v['zero_spread_frac']:.1%} |"
          for v in rows.values()],
        "", f"Rule: lowest parse share among T with <= 20% zero-spread groups -> T = {T:g}.", "",
        f"## Short runs ({args.steps} steps, arms {', '.join(args.arms)})", "",
        "| candidate | mean val slope / 100 steps | min | max rollout parse fail | eligible |",
        "|---|---|---|---|---|",
        *[f"| {c} | {r['mean_val_slope_per_100']:+.4f} | {r['min_val_slope_per_100']:+.4f} | "
          f"{r['rollout_parse_fail_max']:.1%} | {'yes' if r['eligible'] else 'no'} |"
          for c, r in choice["candidates"].items()],
        "", f"Chosen: {choice['chosen']} (best mean validation slope among eligible).",
    ]  # fmt: skip
    atomic_write_text(out / "recipe.md", "\n".join(lines) + "\n")
    print(json.dumps(recipe, indent=1))


if __name__ == "__main__":
    main()
