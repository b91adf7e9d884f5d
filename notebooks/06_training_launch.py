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
# accelerate / DeepSpeed), then **launches the real stages** from here — dataset, tokenizer,
# SFT and a GRCA + RPC RL run of the PointVL policy through `accelerate launch`, on the
# `smoke` profile in a temporary folder (`pointvl.launch.Sandbox`: nothing in this checkout
# is written) — shows their live logs and plots what the RL run logged.

# %% tags=["parameters"]
profile = "tiny"
fast = False
seed = 0

# %%
import dataclasses
import tempfile
from pathlib import Path

import torch
from datasets import Dataset
from transformers.trainer_callback import PrinterCallback
from trl import GRPOConfig

from pointvl.config import DEFAULT_PARAMS, PROFILES, ConfigError, load_params, load_section
from pointvl.io import read_jsonl
from pointvl.launch import Sandbox, run_live
from pointvl.step import Scoring
from pointvl.train.config import RLConfig, SFTConfig
from pointvl.train.grca_trainer import GRCATrainer
from pointvl.train.logs import MetricsLogger
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
# Every training stage is a module run by `accelerate launch --config_file
# ${active.accelerate_config}`: the profile's `launch.accelerate_config` (one CPU process for
# tiny and smoke, 4 GPUs under DeepSpeed ZeRO-3 for paper, 2 CPU processes under ZeRO-3 for
# the paper_sim rehearsal; `python -m pointvl.profile <name>` switches). DVC runs exactly
# these commands (read from `dvc.yaml` below, filled in for this profile):
#
# ```bash
# dvc repro sft                 # Sec. 3.2 warm-up -> checkpoints/tiny/sft/final
# dvc repro rl                  # rl@grpo, rl@grca, rl@grca_rpc, rl@sft_budget from that checkpoint
# accelerate launch --config_file configs/accelerate/cpu.yaml -m pointvl.stages.rl \
#     --params params.yaml --variant grca_rpc --lam 0.125          # a Table 5 sweep point
# ... --resume                  # continue from the last complete checkpoint-N (same weights)
# ```
#
# Another profile writes its own checkpoints and its results under `results/<profile>/`
# (`pointvl.config.results_root`), never over the committed tiny results; the sandbox below
# moves even those into a temporary folder.

# %%
cmds = dvc_commands(ROOT / "dvc.yaml", {"profile": profile, "active.accelerate_config":
                                        params["launch"]["accelerate_config"]})  # fmt: skip
for name in ("sft", "rl@grpo", "rl@grca", "rl@grca_rpc", "rl@sft_budget"):
    print(f"{name:14s} {cmds.get(name, '(not in dvc.yaml)')}")

# %% [markdown]
# ## One GPU, several GPUs (`paper`)
#
# The same modules, another accelerate config; `--num_processes` overrides its count. A
# profile other than tiny writes its results under `results/<profile>/`, so the committed
# `tiny` results stay untouched. The stages refuse a config that asks for more CUDA devices
# than the machine has, and load float32 master weights whatever the launch (bf16 is compute
# only). Memory per GPU and what fits: `paper/running.md` (`benchmarks/bench_memory.py`).
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
# ## A real launch, here: dataset → tokenizer → SFT → RL (smoke profile)
#
# The same modules DVC runs, launched from this notebook. `Sandbox.create` writes a copy of
# `params.yaml` with `profile: smoke` and every output path (`data/`, `models/`,
# `checkpoints/`, `results/`) moved into a temporary folder, so the committed results of any
# profile stay untouched; `run_live` streams each command's output here as it runs (the
# progress bars have an ETA). `fast` trims the steps further.

# %%
run_dir = Path(tempfile.mkdtemp(prefix="pointvl-06-"))
sft_steps, rl_steps = (2, 1) if fast else (40, 6)
sandbox = Sandbox.create(run_dir, "smoke", {"sft": {"max_steps": sft_steps},
                                            "rl": {"max_steps": rl_steps}})  # fmt: skip
print(f"sandbox: {sandbox.params} (profile {sandbox.profile}); SFT {sft_steps} steps, "
      f"RL {rl_steps} steps")  # fmt: skip

# %%
run_live(sandbox.stage("build_dataset"))  # 48 train / 16 test objects, 256 points, 64 px
run_live(sandbox.stage("train_tokenizer"))

# %% [markdown]
# SFT (Sec. 3.2): the warm-up writes `checkpoints/smoke/sft/final` in the sandbox,
#
# $$\mathcal L_{\text{SFT}} = -\sum_t \log \pi_\theta(y^*_t \mid x, y^*_{<t}), \quad t \text{ over target tokens only}$$

# %%
run_live(sandbox.accelerate("sft"))
smoke_sft = load_section(sandbox.params, "sft", SFTConfig).resolved("smoke")
sft_log = read_jsonl(Path(smoke_sft.log_dir) / "log.jsonl")
print("SFT loss per logged step:", [round(r["loss"], 3) for r in sft_log if "loss" in r])

# %% [markdown]
# RL from that checkpoint (Secs. 3.3-3.5): each step samples G completions per prompt,
# parses and scores every field (Eqs. 8, 13), aligns the token spans (Eqs. 6-7), builds the
# (B, T) advantages of the arm (Eqs. 9-14) and applies TRL's clipped surrogate:
#
# $$\mathcal J = \frac1G\sum_i \frac1{|y_i|}\sum_t \min\!\big(\rho_{i,t} A_{i,t},\ \mathrm{clip}(\rho_{i,t}, 1\pm\varepsilon) A_{i,t}\big) \quad (16)$$

# %%
run_live(sandbox.accelerate("rl", "--variant", "grca_rpc"))
smoke_rl = dataclasses.replace(load_section(sandbox.params, "rl", RLConfig), variant="grca_rpc")
smoke_rl = smoke_rl.resolved("smoke")
live = read_logs({"grca_rpc (smoke, launched here)": Path(smoke_rl.log_dir) / "log.jsonl"})

# %% [markdown]
# What the RL run logged, step by step: the per-field rewards of the sampled completions,
# the share of groups with no reward spread per field (no learning signal: Eq. 9 gives 0),
# span coverage and parse failures. A few smoke steps from a 4-step warm-up on 48 objects:
# expect mostly unparsable completions (zero rewards); the `tiny` runs below are the real ones.

# %%
fig = training_curves_figure(live, title="RL launched from this notebook (smoke)")

# %%
keys = [f"reward/{f}" for f in ("bbox2d", "bbox3d", "kpts2d", "kpts3d", "rpc", "seq")]
last_metrics_html(live, keys + ["spans/parse_fail_frac", "loss/clipfrac"], last=3)

# %% [markdown]
# ## Rollouts are sampled from the policy the loss scores
#
# RL is on-policy only if the completions are drawn from the same distribution the loss
# pass scores. An earlier version of this trainer sampled through TRL's `generate` call,
# which passed no `mm_token_type_ids`: Qwen2.5-VL then gave the sampled completions plain
# 1-D text positions, while every log-prob pass and every evaluation used the 3-D M-RoPE
# positions of the point and image tokens. The updates were off-policy with no correction
# (the ratio is 1 at the first pass), most sampled completions failed to parse, and every RL
# number of those runs was thrown away (the RL issue has the measurements).
#
# Now `GRCATrainer` samples with the evaluation sampler, `pointvl.eval.generate.decode`:
# the prompt is prefilled once with the same inputs the loss pass uses (M-RoPE positions,
# point and image tokens), then its G completions are decoded on a preallocated KV cache.
# `tests/test_rollout_equivalence.py` pins three equalities on the PointVL policy: greedy
# completions equal through the trainer and the evaluation path; the trainer's per-token
# log-probs of sampled completions equal a plain forward; and they equal the log-probs of the
# distribution each token was drawn from. Every RL step also logs
# `rollout/logp_gap_max`, the largest |log π_sample − log π_θ| over its completion tokens
# (float rounding, ~1e-5, when all is well).

# %% [markdown]
# ## The real runs
#
# The `rl` stage logs the same names for every variant. When `dvc repro rl` has run, its
# logs are plotted here (one line per variant, moving average over 5 logged steps); the
# report stage draws the validation curves into `results/figures/rl_validation_curves.png`.

# %%
variants = ("grpo", "grca", "grca_rpc")
real = read_logs({v: ROOT / rl_cfg.log_dir.format(variant=v) / "log.jsonl" for v in variants})
missing = [v for v in variants if v not in real]
if missing:
    print("no RL log yet for", missing, "-> produced by: dvc repro", *(f"rl@{v}" for v in missing))
if real:
    fig = training_curves_figure(real, title="RL runs of the rl stage (ours)", smooth=5)

# %% [markdown]
# ## What to try next
#
# 1. **The trainers in-process, on your own model.** The stage is a thin layer: the same
#    `build_sft_trainer` and `GRCATrainer` train any causal LM. Here a random 2-layer Qwen2
#    (`pointvl.train.tiny`, text only, written target JSONs) gets two SFT steps and two
#    GRCA steps; swap in your model and rows.

# %%
tok = tiny_tokenizer(Q, seed=seed)
model = tiny_lm(tok, seed=seed)
rows = tiny_rows(8, tok, seed=seed + 1)
out = run_dir / "in_process"
args = sft_training_args(sft_cfg, out / "sft", max_steps=2, per_device_train_batch_size=4,
                         report_to=[], save_strategy="no", disable_tqdm=True)  # fmt: skip
data = TinySFTData(rows, tok, Q)
sft = build_sft_trainer(model, data, data, args)
sft.remove_callback(PrinterCallback)
print(f"{sum(p.numel() for p in model.parameters()):,} parameters; SFT:", sft.train().metrics)

# %%
rl_args = GRPOConfig(output_dir=str(out / "rl"), per_device_train_batch_size=4,
                     num_generations=4, max_completion_length=24 if fast else 200, max_steps=2,
                     use_cpu=True, report_to=[], disable_tqdm=True, save_strategy="no")  # fmt: skip
rl_log = MetricsLogger(out / "rl.jsonl")
rl = GRCATrainer(model, args=rl_args, train_dataset=Dataset.from_list(rows),
                 processing_class=tok, variant="grca", scoring=Scoring(Q, M),
                 callbacks=[rl_log])  # fmt: skip
rl.remove_callback(PrinterCallback)
rl.train()
last_metrics_html({"grca, in-process": read_jsonl(out / "rl.jsonl")}, keys[:4], last=2)

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
# 3. **Where everything went.** The sandbox holds every output of the launch above; this
#    checkout's `data/`, `checkpoints/` and `results/` were not touched. Delete the folder
#    when done.

# %%
for path in sorted(p for p in run_dir.rglob("*") if p.is_file() and "checkpoint-" not in str(p)):
    if path.suffix in (".json", ".jsonl", ".csv", ".safetensors", ".parquet"):
        print(f"{path.stat().st_size:>10,}  {path.relative_to(run_dir)}")
