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
# # 02 · The hybrid point-image policy, block by block
#
# **Paper: Section 3.1, "Hybrid point-image policy", Eqs. (2)–(4).** The policy π_θ is
# Qwen2.5-VL with a second input: Point-BERT turns the point cloud into point tokens H_p, which
# *query* the image tokens H_i (geometry-guided cross-attention, Eq. 2), are fused residually
# (Eq. 3) and projected into the language model's embedding space (Eq. 4). The language model
# then reads point tokens, image tokens and the question, and writes the JSON of Eq. (1).
#
# ```
# point cloud (B,N,6) ─► Point-BERT ─► H_p (B,P,d_p) ──queries──┐
# image ─► Qwen2.5-VL vision tower ─► H_i (B,I,d_lm) ─keys/values┤ Eq. 2: Z
#                                                               ▼ Eq. 3: H_f = LN(H_p + Z)
#                                                               ▼ Eq. 4: E = H_f W_proj (B,P,d_lm)
# prompt: <|point_pad|>×P <|vision_start|><|image_pad|>×I<|vision_end|> question
#         └─ E goes here   └─ H_i goes here (Qwen's own path) ─► language model ─► JSON
# ```
#
# We build the **tiny** profile (about 1 M parameters, CPU; random init, or the SFT checkpoint
# when it is here) from the same code path as the paper's 3B model; only sizes differ. All
# code is in `pointvl.model`.

# %% tags=["parameters"]
profile = "tiny"
fast = False
seed = 0

# %%
import dataclasses
import json

import numpy as np
import torch
from transformers import AutoTokenizer

from pointvl.config import DEFAULT_PARAMS, load_params, load_section
from pointvl.data.build import BuildDatasetConfig, InstanceSpec, instance_seed, make_instance
from pointvl.data.dataset import instance_sample
from pointvl.eval.generate import load_checkpoint
from pointvl.geometry import project_points
from pointvl.model import ModelConfig, build_tiny_policy, train_bpe_tokenizer
from pointvl.model.point_bert import group_points
from pointvl.schema import parse_output
from pointvl.viz.architecture import attention_heatmap_figure, grouping_figure, param_counts
from pointvl.viz.html import html_table
from pointvl.viz.notebook import notebook_setup

notebook_setup()
torch.manual_seed(seed)
ROOT = DEFAULT_PARAMS.parent  # the repository (the kernel runs in notebooks/)
params = load_params(profile=profile)
mcfg = load_section(DEFAULT_PARAMS, "model", ModelConfig, profile)
if mcfg.size != "tiny":  # the paper size needs the Qwen2.5-VL-3B weights and a GPU
    print(f"profile {profile}: model.size={mcfg.size}; this notebook builds the tiny size")
    mcfg = ModelConfig()

# %% [markdown]
# ## Two objects and a tokenizer
#
# Two benchmark instances built live (notebook 01), sized to the model's N points. The tiny
# profile's tokenizer is a byte-level BPE trained on the dataset text (`train_tokenizer`
# stage); if it is not there (CI, fast mode) we train one on these objects' text.

# %%
Q, M = params["schema"]["quant_bins"], params["schema"]["num_keypoints"]
bcfg = BuildDatasetConfig(num_points=mcfg.num_points, image_size=mcfg.image_size, num_keypoints=M)
rows = [
    make_instance(InstanceSpec("test", i, c, instance_seed(seed, "test", i)), bcfg, Q)
    for i, c in ((0, "chair"), (9, "car"))
]
samples = [instance_sample(r) for r in rows]
tok_dir = ROOT / params["train_tokenizer"]["out_dir"]
if tok_dir.is_dir() and not fast:
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
else:
    texts = [t for r in rows for t in r["questions"] + r["targets"] + [r["description"]]]
    tok = train_bpe_tokenizer(texts * 4, vocab_size=400)
print(
    f"tokenizer: {len(tok)} tokens ({'trained here' if fast or not tok_dir.is_dir() else tok_dir})"
)

# %% [markdown]
# ## The model and its parameter count
#
# `build_tiny_policy` builds a `PointVLForConditionalGeneration` (a subclass of
# `Qwen2_5_VLForConditionalGeneration`: generation, M-RoPE and caching are inherited) and
# its processor. When this profile's SFT checkpoint is here (`dvc repro sft`, or `dvc pull`
# from a remote), the notebook loads it instead (`load_checkpoint`): same blocks, trained
# weights, so the attention maps and the generation below are the trained model's.
# Parameters per block, ours beside the paper size's. The paper column is read from
# `results/bench/model.json` (counted by `benchmarks/` on the written-out Qwen2.5-VL-3B
# config + published Point-BERT, not loaded weights); Sec. 4.2 freezes Point-BERT.

# %%
ckpt = ROOT / params["sft"]["out_dir"].format(profile=profile) / "final"
trained = ckpt.is_dir() and not fast
if trained:
    model, proc = load_checkpoint(ckpt)  # eval mode
    tok = proc.tokenizer
else:
    model, proc = build_tiny_policy(tok, mcfg, seed=seed)
    model.eval()
print(f"policy: {'trained, ' + str(ckpt.relative_to(ROOT)) if trained else 'random init'}")
ours = param_counts(model)
bench = ROOT / "results/bench/model.json"
paper = json.loads(bench.read_text())["paper_params"]["params"] if bench.is_file() else {}
html_table(
    [[name, n, paper.get(name)] for name, n in ours.items()],
    ["block", f"tiny ({profile}, this notebook)", "paper size (results/bench/model.json)"],
)

# %% [markdown]
# ## The processor: one prompt, P point slots and I image slots
#
# P = G + 1 point tokens (CLS + G groups) and I image tokens (Qwen2.5-VL: 14-pixel patches,
# merged 2 × 2, so I = (S/28)² for an S × S image). The completion (target JSON) gets labels;
# the prompt gets −100 (Eq. 5 sums over the target only). Batches are left-padded.

# %%
batch = proc.batch(samples)
P, I = proc.num_point_tokens, proc.num_image_tokens
print(f"P = {P} point tokens, I = {I} image tokens, image {mcfg.image_size}² px")
for k, v in batch.items():
    print(f"{k:18s} {str(tuple(v.shape)):14s} {v.dtype}")
print(repr(proc.prompt_text(samples[0]["question"]).replace("<|point_pad|>" * P, f"<|point_pad|>×{P}")
           .replace("<|image_pad|>" * I, f"<|image_pad|>×{I}")))  # fmt: skip

# %% [markdown]
# ## Point-BERT, step 1: FPS centres and KNN groups
#
# G centres by farthest point sampling (from point 0, as `pointnet2_ops`), then the K nearest
# neighbours of each centre, expressed relative to it:
#
# $$c_g = x_{i_g}\ (\text{FPS}), \qquad \mathcal N_g = \{\, x_j - c_g : j \in \mathrm{KNN}_K(c_g) \,\}$$
#
# Each group becomes one token; groups overlap where centres are close.

# %%
pc = batch["point_clouds"]  # (B, N, 6)
G, K = mcfg.num_groups, mcfg.points_per_group
neighborhood, centers = group_points(pc, G, K)  # (B, G, K, 6), (B, G, 3)
print("neighborhood", tuple(neighborhood.shape), "(B, G, K, 6)  centers", tuple(centers.shape))
grouping_figure(pc[0].numpy(), neighborhood[0], centers[0])

# %% [markdown]
# ## Point-BERT, step 2: point tokens H_p
#
# A mini-PointNet embeds each group (shared 1×1 convolutions + max-pool, so the order of the K
# points inside a group does not matter), a positional MLP embeds its centre, a CLS token is
# prepended and a small ViT mixes them: H_p ∈ R^{B × (1+G) × d_p}. (The order of the whole
# cloud does matter a little: FPS starts at point 0, so shuffling the cloud moves the centres.)

# %%
with torch.no_grad():
    h_p, _ = model.point_encoder(pc)  # (B, P, d_p)
    group_emb = model.point_encoder.encoder(neighborhood)  # (B, G, encoder_dims)
    shuffled = neighborhood[:, :, torch.randperm(K)]  # (B, G, K, 6) points reordered in groups
    diff = (group_emb - model.point_encoder.encoder(shuffled)).abs().max()
print("H_p", tuple(h_p.shape), "(B, 1 + G, d_p); group embeddings", tuple(group_emb.shape))
print(f"points shuffled inside each group: max |Δ embedding| = {diff:.1e}")

# %% [markdown]
# ## The image tokens H_i
#
# Qwen2.5-VL's vision tower: 14 × 14 patches (two frames stacked in time, as for video), ViT
# blocks with windowed attention, then a 2 × 2 merger into the language model's width, so
# H_i ∈ R^{B × I × d_lm}, in raster order over the (S/28) × (S/28) grid.

# %%
with torch.no_grad():
    img = model.model.get_image_features(
        batch["pixel_values"], batch["image_grid_thw"], return_dict=True
    )
h_i = torch.stack(list(img.pooler_output))  # (B, I, d_lm)
grid_hw = tuple(int(x) // 2 for x in batch["image_grid_thw"][0, 1:])
print("pixel_values", tuple(batch["pixel_values"].shape), "(patches, 3·2·14·14)")
print("H_i", tuple(h_i.shape), "(B, I, d_lm), token grid", grid_hw)

# %% [markdown]
# ## Eq. (2): point tokens query image tokens
#
# $$Z = \mathrm{softmax}\!\left(\frac{(H_p W_q)(H_i W_k)^\top}{\sqrt{d}}\right)(H_i W_v)$$
#
# **[reconstruction]** multi-head (the prose writes one head): d = d_p / h per head, and an
# output projection W_o. The module calls PyTorch's fused attention, which does not return the
# weights; `fusion(h_p, h_i, return_weights=True)` takes the explicit-softmax path instead and
# returns them too, with the same H_f.

# %%
fusion = model.fusion
with torch.no_grad():
    h_f = fusion(h_p, h_i)  # (B, P, d_p)  fused kernel
    h_f_explicit, attn = fusion(h_p, h_i, return_weights=True)  # (B, P, d_p), (B, h, P, I)
print("attention", tuple(attn.shape), "(B, heads, P, I); rows sum to 1:",
      torch.allclose(attn.sum(-1), torch.ones(())))  # fmt: skip
print(f"fused kernel vs explicit softmax: max |ΔH_f| = {(h_f - h_f_explicit).abs().max():.1e}")

# %% [markdown]
# One point token (the group drawn with a white star: its FPS centre projected through the
# object's K, R, t) and its weights over the I image tokens, per head. **At random init** the
# weights are close to uniform (1/I each; the colour scale spans only their small range) and
# differ between object and background tokens only because those image tokens differ.
# Training is what lets a point token pick up the texture and colour at its location;
# with the SFT checkpoint loaded, compare the maximum weight with 1/I.

# %%
g = int(torch.argmax(centers[0, :, 1]))  # the highest centre of the first object
uv, _ = project_points(centers[0, g].double().numpy()[None], *(samples[0][k] for k in "KRt"))
w = attn[0, :, 1 + g]  # (heads, I)  token 0 is CLS
print(f"point token {1 + g}: max weight {w.max():.3f} vs uniform 1/I = {1 / I:.3f}")
fig = attention_heatmap_figure(w, samples[0]["image"], grid_hw, uv[0])

# %% [markdown]
# ## Eqs. (3)–(4): residual fusion and projection
#
# $$H_f = \mathrm{LN}(H_p + Z), \qquad E = H_f\, W_{\mathrm{proj}},\ W_{\mathrm{proj}} \in \mathbb R^{d_p \times d_{lm}}$$
#
# **[reconstruction]**: the residual and the LayerNorm (`fusion_layernorm`). A sample with no
# image gets Z = 0. `get_point_features` chains Point-BERT, Eqs. (2)–(4).

# %%
with torch.no_grad():
    E = model.projector(h_f)  # (B, P, d_lm)
    E_chain = model.get_point_features(pc, h_i)  # (B, P, d_lm)
print("H_f", tuple(h_f.shape), "(B, P, d_p) -> E", tuple(E.shape), "(B, P, d_lm)")
print(f"get_point_features agrees: max |ΔE| = {(E - E_chain).abs().max():.1e}")

# %% [markdown]
# ## One forward pass
#
# `forward` embeds the prompt, writes E into the P `<|point_pad|>` slots (row b gets
# E[b]), lets Qwen place H_i at the `<|image_pad|>` slots, and runs the language model.
# Point tokens get text-type M-RoPE positions **[reconstruction]**. With labels, the loss is
# Eq. (5); at random init it is about log |V|, after SFT far below it.

# %%
with torch.no_grad():
    out = model(**batch)
slots = (batch["input_ids"] == model.config.point_token_id).sum(-1)  # (B,)
print(
    "input_ids", tuple(batch["input_ids"].shape), "-> logits", tuple(out.logits.shape), "(B, L, V)"
)
print(
    "point slots per row:",
    slots.tolist(),
    f"| loss {out.loss:.3f} vs log|V| = {np.log(len(tok)):.3f}",
)

# %% [markdown]
# ## Generation, decoded and parsed
#
# `generate` is Qwen's; `point_clouds` rides along in the batch and is consumed at prefill.
# The completion is decoded and parsed with `pointvl.schema.parse_output` (the parser the
# rewards use). With the SFT checkpoint it writes the JSON of Eq. (1); **with random weights
# expect garbage and a parse error per field** (SFT is notebook 06).

# %%
gen_batch = proc.batch(samples, with_target=False)
L = gen_batch["input_ids"].shape[1]
with torch.no_grad():
    seqs = model.generate(**gen_batch, max_new_tokens=16 if fast else 96, do_sample=False,
                          eos_token_id=proc.eos_token_ids, pad_token_id=proc.token_ids["pad_token_id"])  # fmt: skip
for text in proc.decode_completions(seqs, L):
    parsed = parse_output(text, num_keypoints=M)
    print(repr(text[:120]), "\n   errors:", parsed.errors)

# %% [markdown]
# ## What to try next
#
# 1. **More or fewer groups.** G sets the number of point tokens (P = G + 1) and so the
#    prompt length; the parameter count does not change (Point-BERT shares its weights over groups).

# %%
for groups in (16, 32) if fast else (16, 32, 64):
    cfg_g = dataclasses.replace(mcfg, num_groups=groups)
    m_g, p_g = build_tiny_policy(tok, cfg_g, seed=seed)
    print(f"G={groups}: P={p_g.num_point_tokens}, params={param_counts(m_g)['total']:,}")

# %% [markdown]
# 2. **No image.** Without image tokens Eq. (2) contributes nothing: Z = 0 and H_f = LN(H_p).

# %%
with torch.no_grad():
    no_image = fusion(h_p, None)  # (B, P, d_p)
print(f"|H_f(no image) − LN(H_p)| = {(no_image - fusion.norm(h_p)).abs().max():.1e}")
print(f"mean |H_f(image) − H_f(no image)| = {(h_f - no_image).abs().mean():.3f}")

# %% [markdown]
# 3. **Freeze like the paper.** Sec. 4.2 freezes Point-BERT and trains the cross-attention;
#    we also freeze the vision tower for the paper size **[reconstruction]**. What is left to
#    train in the tiny model?

# %%
frozen = dataclasses.replace(mcfg, freeze_point_encoder=True, freeze_vision=True)
counts = param_counts(build_tiny_policy(tok, frozen, seed=seed)[0])
print(f"trainable {counts['trainable']:,} of {counts['total']:,}")

# %% [markdown]
# 4. **Sample instead of greedy.** `do_sample=True, temperature=1.0` is what the RL stage
#    does with G completions per prompt; try `num_return_sequences=4`.

# %%
with torch.no_grad():
    seqs = model.generate(**gen_batch, max_new_tokens=8 if fast else 24, do_sample=True,
                          temperature=1.0, num_return_sequences=2, eos_token_id=proc.eos_token_ids,
                          pad_token_id=proc.token_ids["pad_token_id"])  # fmt: skip
print(tuple(seqs.shape), "(B · 2, L + T)")
for text in proc.decode_completions(seqs, L):
    print(repr(text[:80]))
