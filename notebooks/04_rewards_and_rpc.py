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
# # 04 · Field rewards and reprojection consistency (RPC)
#
# **Paper: Section 3.3 (per-field rewards, Eqs. 8–9) and Section 3.4 (reprojection
# consistency, Eqs. 11–14).** Each geometric field is scored on its own (IoU for boxes,
# containment for keypoints) and standardized inside its group. RPC adds a reward that needs
# no ground-truth box at all: does the predicted 3D box, projected through the camera, agree
# with the predicted 2D box? It only shapes the **background** tokens, with a weight λ.
#
# Same group of 8 completions as notebook 03 (`pointvl.demo`, one case of Sec. 3.7 each).

# %% tags=["parameters"]
profile = "tiny"
fast = False
seed = 0

# %%
import numpy as np

from pointvl.config import load_params
from pointvl.credit import background_advantages, rpc_shaped_background
from pointvl.demo import demo_group
from pointvl.geometry import aabb_corners, iou_2d, project_points, reprojected_footprint
from pointvl.schema import dequantize_3d, format_target
from pointvl.viz.notebook import notebook_setup
from pointvl.viz.partition import region_advantages_html
from pointvl.viz.rewards import (
    field_advantages_html,
    lambda_slider_figure,
    rewards_html,
    rpc_figure,
)

notebook_setup()
params = load_params(profile=profile)
Q, M = params["schema"]["quant_bins"], params["schema"]["num_keypoints"]
corpus = 40 if fast else params["credit_demo"]["tokenizer_corpus"]
group = demo_group(seed, Q, M, tokenizer_corpus=corpus)
G = group.num_generations

# %% [markdown]
# ## Each field's reward (Eq. 8)
#
# $$r_{\mathrm{bbox2d}} = \mathrm{IoU}_{2D}(\hat B, B^*),\quad r_{\mathrm{bbox3d}} = \mathrm{IoU}_{3D}(\hat B, B^*),\quad r_{\mathrm{kpt}} = \frac1M\sum_m \mathbb 1[p_m\in B^*]$$
#
# 3D values are de-quantized (bin centres) first. A field with no usable value scores 0
# (Sec. 3.7). `seq` is what GRPO broadcasts: the mean of the four plus 0.1 × format
# (**[reconstruction]**, Eq. 10b); `rpc` is Eq. (13) below.

# %%
rewards_html(group)

# %% [markdown]
# ## Standardized in the group (Eq. 9)
#
# $$\hat A_{i,k} = \frac{r_{i,k} - \mathrm{mean}_j\, r_{j,k}}{\mathrm{std}_j\, r_{j,k} + \varepsilon}$$
#
# column by column. Row 2 (poor 2D box) is strongly negative on `bbox2d` only; row 4
# (duplicated `bbox3d`) on `bbox3d` only. GRPO would see one number per row (`Â seq`).

# %%
field_advantages_html(group)

# %% [markdown]
# ## Reprojection consistency (Eqs. 11–13)
#
# Project the 8 corners X_j of the predicted 3D box with the camera (OpenCV: x right, y down,
# z forward):
#
# $$\tilde u_j = K\,[R\,|\,t]\,[X_j; 1],\quad u_j = (\tilde u_x/\tilde u_z,\ \tilde u_y/\tilde u_z) \qquad\text{(Eq. 11)}$$
#
# take their footprint B_proj = [min u_x, min u_y, max u_x, max u_y] (**Eq. 12**) and score
# r_rpc = IoU_2D(B_proj, B̂_2d) against the 2D box **of the same output** (**Eq. 13**).

# %%
p = group.parsed[0]
box3d = dequantize_3d(p.values["bbox3d"], Q)  # (6,) object frame
K, R, t = group.target["K"], group.target["R"], group.target["t"]
uv, valid = project_points(aabb_corners(box3d), K, R, t)  # (8, 2), (8,)
foot, ok = reprojected_footprint(box3d, K, R, t)  # (4,), ()
print("corners u_j:\n", uv.round(1), "\nall in front of the camera:", bool(valid.all()))
print("B_proj =", foot.round(1), " B̂_2d =", p.values["bbox2d"])
print(f"r_rpc = IoU = {float(iou_2d(foot, p.values['bbox2d'])):.3f}")

# %% [markdown]
# Drawn for three completions: the exact one, one with a poor 2D box (its 3D box is fine, so
# B_proj still matches the ground truth, but not its own 2D box) and one whose 2D box is
# shifted against its 3D box. RPC sees the inconsistency without looking at any label.

# %%
fig = rpc_figure(group, rows=(0, 2, 6))

# %% [markdown]
# A box with a corner at or behind the camera (ũ_z ≤ 0) has no valid projection: r_rpc = 0.
# Move the object 3 units towards the camera along its optical axis:

# %%
t_close = t - np.array([0.0, 0.0, 3.0])
_, ok_close = reprojected_footprint(box3d, K, R, t_close)
print("valid projection:", bool(ok), "->", bool(ok_close))

# %% [markdown]
# ## λ shapes only the background (Eq. 14)
#
# $$A_{i,\mathrm{bg}} \leftarrow (1-\lambda)\,A_{i,\mathrm{bg}} + \lambda\,\hat A_{i,\mathrm{rpc}}$$
#
# (**[reconstruction]** of the mixing form; the paper's best λ is 0.15.) Field-span advantages
# do not move. Drag the slider: at λ = 0 the bars are GRCA's Â_seq, at λ = 1 they are Â_rpc.
# Rows 2 and 6, whose 2D box disagrees with their own 3D box, are pushed down as λ grows; row 7
# (truncated, but with consistent boxes) is pulled up: RPC rewards consistency, nothing else.

# %%
lams = np.round(np.linspace(0.0, 1.0, 5 if fast else 21), 3)
lambda_slider_figure(group, lams)

# %%
bg = background_advantages(group.scores["seq"], G)  # (B,)
for lam in (0.0, 0.15, 0.5, 1.0):
    print(
        f"λ={lam:4.2f}  A_bg =",
        rpc_shaped_background(bg, group.scores["rpc"], G, lam).numpy().round(2),
    )

# %% [markdown]
# Per region for row 6: only the background line changes between GRCA and GRCA+RPC.

# %%
region_advantages_html(group, row=6, lam=0.15)

# %% [markdown]
# ## What to try next
#
# 1. **Change λ.** Set `lam` to 0.5 and compare the background advantage of row 6 with
#    notebook 03's routed picture; at λ = 1 the background only learns consistency.

# %%
lam = 0.5  # try 0.0, 0.15, 1.0
region_advantages_html(group, row=6, lam=lam)

# %% [markdown]
# 2. **Change G.** Standardization sees only the group: with the first 4 completions
#    (G = 4) the same rewards give different advantages, and a field whose 4 rewards are
#    equal gets exactly 0.

# %%
small = demo_group(seed, Q, M, tokenizer_corpus=corpus, completions=group.completions[:4])
field_advantages_html(small)

# %% [markdown]
# 3. **Break the consistency.** Shift the 2D box of the exact answer 40 pixels to the right
#    and watch r_rpc fall with r_bbox2d, while r_bbox3d stays where it was.

# %%
shifted = {**group.target, "bbox2d": group.target["bbox2d"] + np.array([40.0, 0.0, 40.0, 0.0])}
rows = [group.completions[0], format_target(shifted, Q)]
rewards_html(demo_group(seed, Q, M, tokenizer_corpus=corpus, completions=rows))
