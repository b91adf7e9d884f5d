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
# # 00 · PointVL-3D: the paper in one page
#
# **Paper: the whole paper, Sections 1–4, "Reinforcing 3D Understanding in Point-VLMs via
# Geometric Reward Credit Assignment" (GRCA).** This notebook is the map: what the paper
# claims, where each section lives in `pointvl/`, which notebook explains it and which DVC stage
# produces its numbers. Equations are numbered as in `paper/equations.md` (our restatement of
# the equations the paper's text lost; **[reconstruction]** marks our readings).

# %% tags=["parameters"]
profile = "tiny"
fast = False
seed = 0
map_md = None  # where to write the section map (None: paper/map.md; other profiles: their results)

# %%
import torch
from IPython.display import Markdown

from pointvl.config import DEFAULT_PARAMS, DEFAULT_PROFILE, load_params, results_root
from pointvl.credit import routed_advantages, standardize_in_groups
from pointvl.paper_map import load_map, to_markdown, write_markdown
from pointvl.viz.notebook import notebook_setup

notebook_setup()
ROOT = DEFAULT_PARAMS.parent  # the repository (the kernel runs in notebooks/)
print("profile:", load_params(profile=profile)["profile"], "| fast:", fast, "| seed:", seed)

# %% [markdown]
# ## The paper in one page
#
# **Task (Sec. 3, Eq. 1).** A policy reads a point cloud P, an RGB image I and an instruction,
# and writes one JSON object: `answer`, `description` (semantic) and four geometric fields
# `bbox2d`, `bbox3d`, `kpts2d`, `kpts3d` with quantized integer coordinates.
#
# **Model (Sec. 3.1, Eqs. 2–4).** Point-BERT point tokens attend to Qwen2.5-VL image tokens
# (geometry-guided cross-attention), are fused residually and projected into the language
# model. **Warm-up (Sec. 3.2, Eq. 5):** SFT on the target JSON.
#
# **The problem with GRPO.** GRPO standardizes *one* sequence reward in a group of G samples and
# broadcasts it to every token: a good 3D box written next to a bad 2D box gets the same credit.
#
# **GRCA (Sec. 3.3, Eqs. 6–10).** Score each geometric field on its own (Eq. 8), standardize each
# field in the group (Eq. 9), and route field k's advantage only to the tokens of field k's
# value (Eq. 10); the rest (keys, punctuation, semantic fields, EOS) is background.
#
# **RPC (Sec. 3.4, Eqs. 11–14).** Project the predicted 3D box through the camera; the IoU of
# its footprint with the predicted 2D box is a label-free consistency reward, mixed into the
# background advantage with weight λ (0.15).
#
# **Objective (Sec. 3.5, Eqs. 15–16).** GRPO's clipped surrogate with a (B, T) advantage tensor.
# **Why it helps (Sec. 3.6, Eqs. 17–26).** Routing keeps the gradient's mean and removes the
# other fields' advantages from span k's gradient: less variance, under stated conditions.
#
# **Experiments (Sec. 4).** A synthetic + ShapeNet benchmark; GRCA and GRCA+RPC vs GRPO on
# grounding (IoU), keypoints and language metrics (Tables 1–5).

# %% [markdown]
# ## GRCA in five lines
#
# A group of G = 4 completions, 2 fields, 6 tokens each: tokens 1–2 write field 1, tokens 3–4
# field 2, the rest is background (field id 0). Eq. (9) then Eq. (10):

# %%
per_field_rewards = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.6, 0.4]])  # (B, F)
field_ids = torch.tensor([[0, 1, 1, 2, 2, 0]] * 4)  # (B, T)
seq = per_field_rewards.mean(1)  # (B,)  what GRPO would broadcast
field_adv = standardize_in_groups(per_field_rewards, num_generations=4)  # (B, F)  Eq. 9
bg_adv = standardize_in_groups(seq, num_generations=4)  # (B,)  Eq. 10b
print(routed_advantages(field_adv, field_ids, bg_adv))  # (B, T)  Eq. 10

# %% [markdown]
# Every row has the same mean reward (0.5): GRPO's broadcast advantage is 0 everywhere and
# nothing is learned. GRCA still tells row 0 that its field 1 was good and its field 2 bad.
#
# ## Section ↔ notebook ↔ module ↔ stage
#
# Read from `paper/map.yaml` (`status`: **landed** = code and tests exist; **planned** = an
# open issue will add it) and written to `paper/map.md` by `pointvl.paper_map.write_markdown`.

# %%
entries = load_map()
Markdown(to_markdown(entries))

# %%
if map_md is None and profile != DEFAULT_PROFILE:  # only the default run writes paper/map.md
    map_md = ROOT / results_root(profile) / "map.md"
path = write_markdown(map_md)
landed = sum(e["status"] == "landed" for e in entries)
print(f"wrote {path.name}: {landed}/{len(entries)} sections landed")

# %% [markdown]
# ## How to run things
#
# - `make lab` opens JupyterLab on the project's kernel ("PointVL-3D"); open any `NN_*.py`
#   as a notebook (Jupytext pairs it with an `.ipynb` that is not committed).
# - `python -m pointvl.stages.notebook --name 05_variance_analysis --params params.yaml`
#   executes a notebook with Papermill into `results/notebooks/` (`.ipynb` and offline `.html`);
#   `dvc repro notebooks` runs them all. The `smoke` profile sets `fast: true` (seconds).
# - `python -m pointvl.stages.credit_demo --params params.yaml` draws the per-token
#   advantages of broadcast GRPO, GRCA and GRCA+RPC on one group.
#
# ## What to try next
#
# 1. **Make one field constant.** Set column 1 of `per_field_rewards` to 0.5 for every row:
#    Eq. (9) gives exactly 0 to that field (no spread, no signal), never NaN.

# %%
flat = per_field_rewards.clone()
flat[:, 1] = 0.5  # try another constant
print(standardize_in_groups(flat, num_generations=4))  # (B, F)

# %% [markdown]
# 2. **Change G.** Standardize the same 4 rows as two groups of G = 2: each row is compared
#    only with its group-mate, so every advantage becomes ≈ ±0.71 (ε keeps it just below 1/√2).

# %%
print(standardize_in_groups(per_field_rewards, num_generations=2))  # (B, F)

# %% [markdown]
# 3. **Move a token.** Give token 5 to field 1 (`field_ids[:, 5] = 1`) and re-run the routing
#    cell: only that column changes. Then open `03_span_routing` to see where real field ids
#    come from.

# %%
moved = field_ids.clone()
moved[:, 5] = 1
print(routed_advantages(field_adv, moved, bg_adv)[:, 5])  # (B,)
