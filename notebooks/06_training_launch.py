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
# # 06 · Training: SFT warm-up, then GRPO / GRCA / GRCA+RPC, from one CPU to many GPUs
#
# **Paper: Section 3.2 (structural warm-up, Eq. 5), Section 3.5 (routed objective,
# Eqs. 15–16) and Section 4.2 (implementation details).** Training has two stages. SFT teaches
# the policy to write the JSON of Eq. (1); RL then samples G completions per prompt, scores
# every field, and updates with TRL's clipped surrogate. The RL variants differ **only** in
# the per-token advantage tensor (`pointvl.credit.ADVANTAGE_BUILDERS`):
#
# ```
# SFT  (pointvl.stages.sft, Trainer, Eq. 5) ──► checkpoints/<profile>/sft/final
#                                                  │ same checkpoint, seed, budget
#        ┌──────────────┬──────────────┬───────────┴──┬────────────────┐
#        ▼              ▼              ▼              ▼                ▼
#  rl@grpo (Â_seq)  rl@grca (Eq. 10)  rl@grca_rpc (Eq. 14)  rl@sft_budget (SFT continued)
#        └── GRCATrainer(GRPOTrainer): generate ► score fields ► spans ► (B, T) advantages
# ```
#
# This notebook shows how each stage is launched (one CPU, one GPU, several GPUs with
# accelerate / DeepSpeed), then runs a few **live** SFT and RL steps of the same trainers on
# a tiny random language model (`pointvl.train.tiny`) and plots the per-field rewards it logs.

# %% tags=["parameters"]
profile = "tiny"
fast = False
seed = 0

# %%
import dataclasses
import tempfile
import warnings
from pathlib import Path

import torch
from datasets import Dataset
from transformers.trainer_callback import PrinterCallback

from pointvl.config import DEFAULT_PARAMS, PROFILES, ConfigError, load_params, load_section
from pointvl.credit import CreditConfig
from pointvl.train.config import RLConfig, SFTConfig
from pointvl.train.grca_trainer import GRCATrainer, MetricsLogger, read_jsonl
from pointvl.train.rl import grpo_args
from pointvl.train.sft import build_sft_trainer, sft_training_args
from pointvl.train.tiny import TinySFTData, tiny_lm, tiny_rows, tiny_tokenizer
from pointvl.viz.html import html_table
from pointvl.viz.notebook import notebook_setup
from pointvl.viz.training import (
    accelerate_configs_html,
    dvc_commands,
    last_metrics_html,
    read_logs,
    training_curves_figure,
)

notebook_setup()
warnings.filterwarnings("ignore", category=FutureWarning)  # transformers renames
torch.manual_seed(seed)
ROOT = DEFAULT_PARAMS.parent  # the repository (the kernel runs in notebooks/)
params = load_params(profile=profile)
Q, M = params["schema"]["quant_bins"], params["schema"]["num_keypoints"]
sft_cfg = load_section(DEFAULT_PARAMS, "sft", SFTConfig, profile)
rl_cfg = load_section(DEFAULT_PARAMS, "rl", RLConfig, profile)
print(f"profile {profile}: sft {sft_cfg.max_steps} steps, rl {rl_cfg.max_steps} steps per variant")

# %% [markdown]
# ## The recipe, per profile
#
# One dataclass per stage (`SFTConfig`, `RLConfig`), one section of `params.yaml` each;
# profiles change values, never code paths. `paper` is Sec. 4.2: SFT for 2 epochs at global
# batch 128 with AdamW, lr 2e-5 → 2e-6 (cosine); RL with G = 8, clip ε = 0.2, lr 1e-6. The
# global batch is
#
# $$B_{\text{global}} = \text{processes} \times \text{per-device batch} \times \text{grad. accumulation}$$
#
# and an RL step sees `prompts_per_step` × G completions per process.

# %%
fields = {"sft": ("max_steps", "epochs", "per_device_batch_size", "grad_accum", "learning_rate",
                  "min_lr_rate", "bf16", "gradient_checkpointing"),
          "rl": ("num_generations", "prompts_per_step", "grad_accum", "max_steps",
                 "max_completion_length", "learning_rate", "epsilon", "beta", "lam")}  # fmt: skip
classes = {"sft": SFTConfig, "rl": RLConfig}
cfgs = {(s, p): load_section(DEFAULT_PARAMS, s, classes[s], p) for s in fields for p in PROFILES}
rows = [
    [f"{s}.{f}", *(str(getattr(cfgs[s, p], f)) for p in PROFILES)]
    for s in fields
    for f in fields[s]
]
html_table(rows, ["field", *(f"{p}{' (this run)' if p == profile else ''}" for p in PROFILES)])

# %%
paper_sft, paper_rl = cfgs["sft", "paper"], cfgs["rl", "paper"]
gpus = 4  # Sec. 4.2: 4 GPUs (configs/accelerate/{ddp,zero2,zero3}.yaml)
sft_batch = gpus * paper_sft.per_device_batch_size * paper_sft.grad_accum
rl_prompts = gpus * paper_rl.prompts_per_step * paper_rl.grad_accum
print(f"paper SFT global batch: {gpus} GPUs x {paper_sft.per_device_batch_size} per device x "
      f"{paper_sft.grad_accum} accumulation = {sft_batch}")  # fmt: skip
print(f"paper RL step: {gpus} x {paper_rl.prompts_per_step} x {paper_rl.grad_accum} = {rl_prompts} "
      f"prompts, x G = {paper_rl.num_generations} -> {rl_prompts * paper_rl.num_generations} "
      "completions")  # fmt: skip

# %% [markdown]
# ## Launching on one CPU (`tiny`, `smoke`)
#
# Every training stage is a module run by `accelerate launch`; DVC runs exactly these
# commands (read from `dvc.yaml` below), with the profile taken from `params.yaml`:
#
# ```bash
# dvc repro sft                 # Sec. 3.2 warm-up -> checkpoints/tiny/sft/final
# dvc repro rl                  # rl@grpo, rl@grca, rl@grca_rpc, rl@sft_budget from that checkpoint
# accelerate launch --config_file configs/accelerate/cpu.yaml -m pointvl.stages.sft \
#     --params params.yaml --profile smoke --max-steps 4          # by hand, any profile
# accelerate launch --config_file configs/accelerate/cpu.yaml -m pointvl.stages.rl \
#     --params params.yaml --variant grca_rpc --lam 0.125          # a Table 5 sweep point
# ... --resume                  # continue from the last complete checkpoint-N (same weights)
# ```

# %%
cmds = dvc_commands(ROOT / "dvc.yaml")
for name in ("sft", "rl@grpo", "rl@grca", "rl@grca_rpc", "rl@sft_budget"):
    print(f"{name:14s} {cmds.get(name, '(not in dvc.yaml)')}")

# %% [markdown]
# ## One GPU, several GPUs (`paper`)
#
# The same modules, another accelerate config; `--num_processes` overrides its count:
#
# ```bash
# # one GPU: plain single process, bf16 from params (rl.bf16 / sft.bf16 in the paper profile)
# accelerate launch --num_processes 1 --mixed_precision bf16 -m pointvl.stages.sft \
#     --params params.yaml --profile paper
# # 4 GPUs, DDP (global batch 4 x 8 x 4 = 128, Sec. 4.2)
# accelerate launch --config_file configs/accelerate/ddp.yaml -m pointvl.stages.sft \
#     --params params.yaml --profile paper
# # 4 GPUs, DeepSpeed ZeRO-2 (optimizer state + gradients sharded): the 3B policy + RL
# accelerate launch --config_file configs/accelerate/zero2.yaml -m pointvl.stages.rl \
#     --params params.yaml --profile paper --variant grca_rpc
# # ZeRO-3 (parameters sharded too; generation gathers them); 8 GPUs: --num_processes 8
# accelerate launch --config_file configs/accelerate/zero3.yaml --num_processes 8 \
#     -m pointvl.stages.rl --params params.yaml --profile paper --variant grca
# ```
#
# The configs in `configs/accelerate/`:

# %%
accelerate_configs_html(ROOT / "configs/accelerate")

# %% [markdown]
# ## Live, part 1: a few SFT steps (Eq. 5)
#
# $$\mathcal L_{\text{SFT}} = -\sum_t \log \pi_\theta(y^*_t \mid x, y^*_{<t}), \quad t \text{ over target tokens only}$$
#
# The real stage trains the PointVL policy on the built dataset. Here, so that it runs
# anywhere in seconds, the *same* `sft_training_args` + `build_sft_trainer` (transformers'
# `Trainer`, cosine schedule, completion-only labels) train a random 2-layer Qwen2 LM
# (`tiny_lm`, ~0.1 M parameters) on written target JSONs (`tiny_rows`; no point cloud).
# `fast` runs 2 steps (the model stays random); the `tiny` profile runs 150.

# %%
tok = tiny_tokenizer(Q, seed=seed)
model = tiny_lm(tok, seed=seed)
train_rows = tiny_rows(8 if fast else 64, tok, seed=seed + 1)
sft_data = TinySFTData(train_rows, tok, Q)
out = Path(tempfile.mkdtemp(prefix="pointvl-06-"))
demo_sft = dataclasses.replace(sft_cfg, max_steps=2 if fast else 150, per_device_batch_size=4 if fast
                               else 8, learning_rate=5e-3, save_steps=10**6, logging_steps=1 if fast
                               else 10)  # fmt: skip
print(f"{sum(p.numel() for p in model.parameters()):,} parameters; a target is "
      f"{len(sft_data[0]['input_ids'])} tokens with its prompt")  # fmt: skip

# %%
sft_log = MetricsLogger(out / "sft.jsonl")
args = sft_training_args(demo_sft, out / "sft", report_to=[], save_strategy="no")
sft = build_sft_trainer(model, sft_data, sft_data, args, [sft_log])
sft.remove_callback(PrinterCallback)  # the log goes to sft.jsonl, not to the page
result = sft.train()
losses = [(r["step"], r["loss"]) for r in read_jsonl(out / "sft.jsonl") if "loss" in r]
print(
    f"{result.global_step} SFT steps in {result.metrics['train_runtime']:.1f} s; "
    f"loss {losses[0][1]:.2f} (step {losses[0][0]}) -> {losses[-1][1]:.2f} (step {losses[-1][0]})"
)

# %% [markdown]
# ## Live, part 2: RL steps with `GRCATrainer` (Eqs. 9–16)
#
# Each step: G completions per prompt are sampled, parsed and scored field by field
# (Eqs. 8, 13), token spans are aligned (Eqs. 6–7), `ADVANTAGE_BUILDERS[variant]` builds the
# (B, T) advantages (Eqs. 9–14), and TRL's clipped surrogate is applied unchanged:
#
# $$\mathcal J = \frac1G\sum_i \frac1{|y_i|}\sum_t \min\!\big(\rho_{i,t} A_{i,t},\ \mathrm{clip}(\rho_{i,t}, 1\pm\varepsilon) A_{i,t}\big) \quad (16)$$
#
# `grpo_args` turns the `rl` section into TRL's `GRPOConfig`; `MetricsLogger` writes the
# `reward/<field>`, `adv/<field>_zero_std_frac`, `spans/<field>_coverage`, `loss/clipfrac`
# records the stage writes to `results/train/rl_<variant>/log.jsonl`.

# %%
demo_rl = dataclasses.replace(rl_cfg, variant="grca_rpc", num_generations=4, prompts_per_step=1
                              if fast else 2, max_steps=3 if fast else 10,
                              max_completion_length=24 if fast else 340, save_steps=10**6)  # fmt: skip
rl_args = grpo_args(demo_rl, out / "rl", report_to=[], save_strategy="no")
prompts = Dataset.from_list(tiny_rows(16, tok, seed=seed + 1))  # the SFT objects' targets
rl_log = MetricsLogger(out / "rl.jsonl")
rl = GRCATrainer(model, args=rl_args, train_dataset=prompts, processing_class=tok,
                 variant=demo_rl.variant, credit=CreditConfig(background=demo_rl.background,
                 lam=demo_rl.lam), quant_bins=Q, num_keypoints=M, callbacks=[rl_log])  # fmt: skip
rl.remove_callback(PrinterCallback)
rl.train()
live = {f"live {demo_rl.variant}": read_jsonl(out / "rl.jsonl")}
print(f"{rl.state.global_step} RL steps, {demo_rl.prompts_per_step} prompt(s) x G = 4 per step")

# %% [markdown]
# The per-field rewards, advantage diagnostics and span coverage of the live run, step by
# step. **In `fast` mode the model is still random**: it writes no JSON, so every reward is 0,
# every group has zero reward spread (`adv/*_zero_std_frac` = 1, i.e. no learning signal) and
# no field has a span. After the `tiny` warm-up some fields parse and the rewards spread.

# %%
fig = training_curves_figure(live, title=f"live {demo_rl.variant} on a tiny LM ({profile})")

# %%
keys = [f"reward/{f}" for f in ("bbox2d", "bbox3d", "kpts2d", "kpts3d", "rpc", "seq")]
last_metrics_html(live, keys + ["spans/parse_fail_frac", "loss/clipfrac"], last=3)

# %% [markdown]
# ## The real runs
#
# The `rl` stage logs the same names for every variant. When `dvc repro rl` has run, its
# logs are plotted here (one line per variant, moving average over 5 logged steps); the
# report stage draws the same curves into `results/figures/rl_reward_curves.png`.

# %%
variants = ("grpo", "grca", "grca_rpc")
real = read_logs({v: ROOT / f"results/train/rl_{v}/log.jsonl" for v in variants})
missing = [v for v in variants if v not in real]
if missing:
    print("no RL log yet for", missing, "-> produced by: dvc repro", *(f"rl@{v}" for v in missing))
if real:
    fig = training_curves_figure(real, title="RL runs of the rl stage (ours)", smooth=5)

# %% [markdown]
# ## What to try next
#
# 1. **Another variant, same model.** Broadcast GRPO gives every token Â_seq; GRCA routes
#    per field. Run two steps of each from the current weights and compare their logs (with
#    a random model both see zero spread: warm up longer first, `fast = False`).

# %%
runs = {}
for v in ("grpo", "grca"):
    cfg_v = dataclasses.replace(demo_rl, variant=v, max_steps=2)
    log = MetricsLogger(out / f"try_{v}.jsonl")
    t = GRCATrainer(model, args=grpo_args(cfg_v, out / v, report_to=[], save_strategy="no"),
                    train_dataset=prompts, processing_class=tok, variant=v, quant_bins=Q,
                    num_keypoints=M, callbacks=[log])  # fmt: skip
    t.remove_callback(PrinterCallback)
    t.train()
    runs[v] = read_jsonl(out / f"try_{v}.jsonl")
last_metrics_html(runs, keys[:4] + ["adv/bbox3d_zero_std_frac", "loss/clipfrac"], last=2)

# %% [markdown]
# 2. **A bad config fails before any work.** Change the variant, λ or G below: the message
#    names the field and the accepted values (the stage prints it as `config error: ...`).

# %%
for bad in ({"variant": "ppo"}, {"lam": 1.5}, {"num_generations": 1}):
    try:
        dataclasses.replace(rl_cfg, **bad).validate()
    except ConfigError as e:
        print(e)

# %% [markdown]
# 3. **Group size G.** TRL needs `prompts_per_step × G` rows per device and G ≥ 2; what does
#    `grpo_args` build for G = 2, 8, 16?

# %%
for g in (2, 8, 16):
    a = grpo_args(dataclasses.replace(rl_cfg, num_generations=g), out / "g", report_to=[])
    print(
        f"G={g:2d}: per_device_train_batch_size={a.per_device_train_batch_size}, "
        f"num_generations={a.num_generations}, epsilon={a.epsilon}, lr={a.learning_rate}"
    )
