# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: PointVL-3D
#     language: python
#     name: pointvl-3d
# ---

# %% [markdown]
# # 07 · Ablations: credit assignment (Table 3), the RPC weight λ (Table 5), RL curves
#
# **Paper: Section 4.5.1 (Table 3, "Mechanism of improvement"), Section 4.5.2 (Table 5,
# "Sensitivity and over-regularization").** The paper's central claims are comparisons
# between systems trained from the same SFT checkpoint with the same budget:
#
# | comparison | paper's reading |
# |---|---|
# | GRPO vs SFT | RL helps keypoints: KPA-3D 0.640 → 0.890 |
# | GRCA vs GRPO | routing the reward per field helps more: KPA-3D 0.890 → 0.930 |
# | GRCA vs SFT (budget-matched) | the gain is not extra compute: 0.670 vs 0.930 |
# | GRCA + RPC vs GRCA | the consistency reward lifts RPC 0.846 → 0.852 |
# | λ sweep | best at λ = 0.15; λ ≥ 0.175 over-regularizes |
#
# This notebook puts **our** numbers (`results/metrics/eval/<system>.json`, written by the
# `evaluate` stage) beside **the paper's** (`paper/reported.yaml`), tests each claim with a
# paired bootstrap on our test set, and plots our RL training curves. Every paper number is
# labelled "(paper)"; where we have no run the cell says "no run" and which stage makes it.

# %% tags=["parameters"]
profile = "tiny"
fast = False
seed = 0

# %%
import dataclasses
from pathlib import Path

import numpy as np
import yaml
from IPython.display import Markdown

from pointvl.config import DEFAULT_PARAMS, load_section
from pointvl.eval.report import claim_verdict
from pointvl.stages.report import GEOMETRY, PAPER_NAMES, STRICT, ReportConfig, Runs, claims
from pointvl.viz.html import html_table
from pointvl.viz.notebook import notebook_setup
from pointvl.viz.tables import (
    lambda_sweep_figure,
    load_eval_results,
    ours_cell,
    paper_vs_ours_figure,
    paper_vs_ours_html,
    results_status_html,
)
from pointvl.viz.training import read_logs, training_curves_figure

notebook_setup()
ROOT = DEFAULT_PARAMS.parent  # the repository (the kernel runs in notebooks/)
reported = yaml.safe_load((ROOT / "paper/reported.yaml").read_text())
cfg = load_section(DEFAULT_PARAMS, "report", ReportConfig, profile)
cfg = dataclasses.replace(cfg, **{k: str(ROOT / getattr(cfg, k)) for k in ("data_dir",
                          "metrics_dir", "predictions_dir", "train_logs", "tables_dir", "figures_dir")})  # fmt: skip
print("our systems:", cfg.systems, "| Table 5 systems:", cfg.lambda_systems or "none configured")
print("extra seeds:", cfg.seed_systems or "none configured")
runs = Runs(cfg, profile)  # per-seed metrics + per-sample values from the saved predictions

# %% [markdown]
# ## Which of our results exist
#
# Each system is one RL variant (or SFT) evaluated on the test split. The chain that
# produces a row: `dvc repro sft rl` (training, notebook 06) → `python -m
# pointvl.stages.evaluate --system <name>` (greedy generation, saved predictions, metrics with
# 95% bootstrap CIs) → `python -m pointvl.stages.report` (the tables in `results/tables/`).

# %%
results = load_eval_results(cfg.metrics_dir, cfg.systems)
make = {s: f"dvc repro {'sft' if s == 'sft' else 'rl@' + s}; python -m pointvl.stages.evaluate "
        f"--params params.yaml --system {s}" for s in cfg.systems}  # fmt: skip
results_status_html(results, make)

# %% [markdown]
# ## Table 3: the ablation
#
# Five metrics of Sec. 4.3 (IoU2D/3D, KPA-2D/3D, RPC). KPA is the fraction of predicted
# keypoints inside the ground-truth box; we add the stricter PCK-3D@0.1 and the keypoint
# spread (KPA-3D is near 1 for keypoints collapsed at the box centre, see notebook 08).
# Grey columns are the paper's numbers, never ours. A system run with several RL seeds
# (`params.yaml` → `sweep.seeds`, stages `rl_seed@<variant>-<seed>`) shows the mean over
# seeds, the 95% CI of the seed-averaged per-sample metric, and ± the std over seeds.

# %%
names = {s: PAPER_NAMES[s] for s in cfg.systems}
t3 = runs.rows(names, GEOMETRY + STRICT)
paper_vs_ours_html(t3, reported["table3_ablation"], GEOMETRY + STRICT)

# %%
fig = paper_vs_ours_figure(reported["table3_ablation"], t3, ("iou3d", "kpa3d", "rpc"),
                              title="Table 3: paper (grey) and ours (blue, 95% CI)")  # fmt: skip

# %% [markdown]
# ## The paper's claims, tested on our run
#
# `pointvl.stages.report.claims` takes, for each comparison, the paired bootstrap difference
# of two of our systems on the *same* test samples (from their saved predictions) and compares
# it with the paper's difference (`pointvl.eval.report.claim_verdict`): **supports** (our CI
# excludes 0 on the paper's side), **contradicts** (opposite side, or our CI rules the
# paper's effect out) or **cannot test** (no run, or too little power).

# %%
sentences = claims(cfg, runs, reported)
Markdown("\n".join(f"- {s}" for s in sentences))

# %% [markdown]
# ## Seeds: is the GRCA − GRPO gap larger than seed noise?
#
# One RL run is one draw of prompts and samples. Every seed starts from the same SFT
# checkpoint; only the RL seed (prompt order, sampling) changes. Below, each seed's test
# metrics: if the per-seed spread of one variant is as large as the gap between variants,
# a single-seed comparison (the paper reports one run) cannot separate them.

# %%
seed_rows = []
for system in ("grpo", "grca"):
    for run in runs.seeds(system):
        r = runs.result(run)
        cells = [ours_cell(r, m) for m in ("kpa3d", "iou3d", "pck3d", "parse_fail")]
        seed_rows.append([PAPER_NAMES[system], run] + [c[0] if c else None for c in cells])
if seed_rows:
    html_table(seed_rows, ["variant", "run", "kpa3d", "iou3d", "pck3d", "parse_fail"])
else:
    print("no seed runs yet -> dvc repro rl_seed evaluate_seed")

# %%
if seed_rows:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(10, 3), constrained_layout=True)
    for ax, (k, m) in zip(axes, enumerate(("kpa3d", "iou3d", "pck3d"), start=2)):
        for j, variant in enumerate(("GRPO (broadcast reward)", "GRCA")):
            ys = [row[k] for row in seed_rows if row[0] == variant and row[k] is not None]
            ax.plot([j] * len(ys), ys, "o", alpha=0.7)
            if ys:
                ax.hlines(np.mean(ys), j - 0.2, j + 0.2, color="k")
        ax.set_xticks([0, 1], ["GRPO", "GRCA"])
        ax.set_title(f"{m}: one dot per seed (ours)", fontsize=9)

# %% [markdown]
# ## Table 5: the RPC weight λ
#
# Eq. (14) mixes the RPC reward into the background advantage with weight λ. The paper sweeps
# λ ∈ {0.10, 0.125, 0.15, 0.175, 0.20} (`rl --lam`, one run each). Our sweep runs are listed in
# `params.yaml` under `report.lambda_systems` (λ → system name) once they exist.

# %%
lam_results = load_eval_results(cfg.metrics_dir, list(cfg.lambda_systems.values()))
t5 = {"GRCA (no RPC)": {m: ours_cell(results.get("grca"), m) for m in GEOMETRY}}
t5 |= {lam: {m: ours_cell(lam_results.get(s), m) for m in GEOMETRY}
       for lam, s in cfg.lambda_systems.items()}  # fmt: skip
paper_vs_ours_html(t5, reported["table5_rpc_weight"], GEOMETRY)

# %%
if not cfg.lambda_systems:
    print("ours: no λ sweep run yet -> accelerate launch ... -m pointvl.stages.rl --variant "
          "grca_rpc --lam 0.10 (and 0.125, 0.175, 0.20), then evaluate each")  # fmt: skip
fig = lambda_sweep_figure(reported["table5_rpc_weight"], {k: t5[k] for k in cfg.lambda_systems})

# %% [markdown]
# ## RL training curves (ours)
#
# The paper gives no curves. Ours come from `results/train/rl_<variant>/log.jsonl` (the `rl`
# stage's `MetricsLogger`): the mean per-field reward of the sampled completions, the share
# of groups with no reward spread per field (no learning signal for that field: Eq. 9 gives
# Â = 0) and the share of completions with a span for each field.

# %%
variants = ("grpo", "grca", "grca_rpc")
logs = read_logs({PAPER_NAMES[v]: cfg.train_logs.format(variant=v) for v in variants})
if len(logs) < len(variants):
    print("no RL log for", [v for v in variants if PAPER_NAMES[v] not in logs],
          "-> produced by: dvc repro rl")  # fmt: skip
if logs:
    fig = training_curves_figure(logs, title="RL runs (ours)", smooth=1 if fast else 5)

# %%
png = Path(cfg.figures_dir) / "rl_reward_curves.png"
print(f"{png.relative_to(ROOT)}:", "present (written by the report stage)" if png.is_file() else
      "missing -> python -m pointvl.stages.report --params params.yaml")  # fmt: skip

# %% [markdown]
# ## What to try next
#
# 1. **Another metric.** The paper's largest RL gain is on KPA-3D; the stricter PCK-3D
#    and the keypoint spread tell whether keypoints were placed or merely kept inside the
#    box. Plot them instead.

# %%
fig = paper_vs_ours_figure(reported["table3_ablation"], t3, ("kpa3d", "pck3d", "spread3d"))

# %% [markdown]
# 2. **How much power do we need?** A verdict depends on our CI. Suppose (hypothetically,
#    not a result) a run found exactly the paper's GRCA − GRPO gain on KPA-3D: which CI
#    half-widths would support the claim? And a tight null result?

# %%
paper_diff = round(reported["table3_ablation"]["GRCA"]["kpa3d"]
                   - reported["table3_ablation"]["GRPO (broadcast reward)"]["kpa3d"], 6)  # fmt: skip
for d, half in ((paper_diff, 0.01), (paper_diff, 0.03), (paper_diff, 0.06), (0.0, 0.01)):
    verdict, reason = claim_verdict(d, d - half, d + half, paper_diff)
    print(
        f"hypothetical diff {d:+.3f} ± {half:.2f} (paper {paper_diff:+.3f}): {verdict} ({reason})"
    )

# %% [markdown]
# 3. **Only the paper's differences.** Each RL variant's gain over SFT as the paper reports
#    it (paper numbers only, labelled so).

# %%
sft_row = reported["table3_ablation"]["SFT"]
for name, row in reported["table3_ablation"].items():
    print(f"(paper) {name:24s}", "  ".join(f"Δ{m} {row[m] - sft_row[m]:+.3f}" for m in GEOMETRY))
