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
# # 03 · Span routing: which tokens carry which field
#
# **Paper: Section 3 (output schema, Eq. 1), Section 3.3 (GRCA, Eqs. 6–10) and Section 3.7
# (robustness).** GRCA gives each geometric field's advantage only to the tokens that wrote
# that field. This needs a partition of every completion's tokens into field spans and a
# background, computed on real BPE tokens that do not respect JSON boundaries. This notebook
# walks one group of 8 completions (`pointvl.demo`) through `parse_output` → character spans →
# token spans → routed advantages.

# %% tags=["parameters"]
profile = "tiny"
fast = False
seed = 0

# %%
import numpy as np

from pointvl.config import load_params
from pointvl.demo import demo_group, demo_target
from pointvl.schema import GEOMETRIC_FIELDS, format_target, parse_output
from pointvl.spans import field_token_ids
from pointvl.viz.notebook import notebook_setup
from pointvl.viz.partition import (
    alignment_html,
    parse_table_html,
    region_advantages_html,
    straddling_html,
    token_partition_html,
)

notebook_setup()
params = load_params(profile=profile)
Q, M = params["schema"]["quant_bins"], params["schema"]["num_keypoints"]
corpus = 40 if fast else params["credit_demo"]["tokenizer_corpus"]  # BPE training texts

# %% [markdown]
# ## The output: one JSON object, six fields (Eq. 1)
#
# Two semantic fields (`answer`, `description`) and the geometric fields
# F = {`bbox2d`, `bbox3d`, `kpts2d`, `kpts3d`} (**Eq. 1**). 2D values are pixels, 3D values are
# bins in [0, Q) of the object's unit cube. `parse_output` returns, for every field, its value,
# the character span of the **value** (brackets included; key, colon and comma are background)
# and an error code.

# %%
target = demo_target(seed)
text = format_target(target, Q)
parsed = parse_output(text, num_keypoints=M)
print(text[:160], "...")
for name in GEOMETRIC_FIELDS:
    s, e = parsed.char_spans[name]
    print(f"{name:7s} chars [{s:4d}, {e:4d})  {text[s:e][:40]!r}{'...' if e - s > 40 else ''}")

# %% [markdown]
# ## The token partition (Eqs. 6–7)
#
# Every token position t of completion i gets one region:
#
# $$\{1,\dots,T_i\} = S_{i,\mathrm{bg}} \,\cup\, \bigcup_{k\in F} S_{i,k}, \qquad S_{i,\mathrm{bg}} = \{1,\dots,T_i\}\setminus \bigcup_k S_{i,k}$$
#
# `spans.field_token_ids` maps character spans to tokens. Below, the first completion drawn
# token by token (white bars between tokens; hover a token for its index and range). Notice
# how the locally trained BPE cuts numbers (`15`+`7`, `1`+`8`+`4`) and even the key `bbox2d`.

# %%
group = demo_group(seed, Q, M, tokenizer_corpus=corpus)
print(
    "field ids",
    tuple(group.field_ids.shape),
    "(B, T); tokens per region, row 0:",
    np.bincount(group.field_ids[0][group.mask[0]].numpy(), minlength=5),
)
token_partition_html(group.completions[0], group.offsets[0], group.field_ids[0])

# %% [markdown]
# ## The straddling rule on a concrete BPE split
#
# A token such as `' ['` holds one background character (the space) and one value character
# (the bracket). Rule (`pointvl.spans`): a token goes to the region holding **most** of its
# characters; a field–background tie goes to the field; a tie between two fields goes to the
# earlier one; zero-length tokens (EOS) are background. Every straddling token of row 0:

# %%
straddling_html(
    group.completions[0], group.offsets[0], group.parsed[0].char_spans, group.field_ids[0]
)

# %% [markdown]
# This tokenizer happens to produce only ties and field majorities. A split where the
# background wins: suppose one token holds `]], "` (2 value characters, 3 background ones).
# We write the offsets by hand to see each case of the rule:

# %%
s = '"kpts2d": [[1, 2]], "x'
sp = parse_output("{" + s + '": 0}', num_keypoints=None).char_spans["kpts2d"]
sp = (sp[0] - 1, sp[1] - 1)  # the same span in `s`, without the leading '{'
splits = {
    "value only": [(11, 18)],
    "' [[' 2 vs 1": [(9, 12)],
    "'],' tie 1 vs 1": [(17, 19)],
    "']], \"' 2 vs 3": [(16, 21)],
    "EOS (s, s)": [(22, 22)],
}
for label, off in splits.items():
    print(f"{label:18s} {s[off[0][0] : off[0][1]]!r:10s} -> {field_token_ids({'kpts2d': sp}, off)}")

# %% [markdown]
# (1 = `bbox2d` ... 3 = `kpts2d`, 0 = background; field ids follow `GEOMETRIC_FIELDS`.)
#
# ## Malformed, duplicated, missing, truncated (Section 3.7)
#
# A field that is missing, written twice, malformed or wrongly shaped has **no value and no
# span**: its tokens fall to the background and its reward is 0. The whole group:

# %%
parse_table_html(group)

# %% [markdown]
# Row 4 writes `bbox3d` twice: both copies go to the background. Row 5 lost a keypoint
# coordinate: the whole `kpts2d` value is background. Row 7 is cut inside `kpts2d`; row 3 wraps
# the JSON in prose and a fence, which is background too.

# %%
token_partition_html(group.completions[4], group.offsets[4], group.field_ids[4])

# %%
token_partition_html(group.completions[7], group.offsets[7], group.field_ids[7])

# %% [markdown]
# ## Routed advantages (Eqs. 9–10)
#
# Eq. (9) standardizes each field's reward inside the group, Â_{i,k}; Eq. (10) routes it:
#
# $$A_{i,t} = \hat A_{i,k} \text{ if } t\in S_{i,k}, \qquad A_{i,t} = A_{i,\mathrm{bg}} \text{ if } t\in S_{i,\mathrm{bg}}$$
#
# with A_bg = Â_seq, the number GRPO broadcasts (**Eq. 10b, [reconstruction]**). Row 2 has a
# poor 2D box and a good 3D box: GRPO gives every token one mediocre number, GRCA tells the
# `bbox2d` tokens they were bad and the `bbox3d` tokens they were good.

# %%
region_advantages_html(group, row=2)

# %%
adv = group.advantages("grca")[2]  # (T,)
token_partition_html(group.completions[2], group.offsets[2], group.field_ids[2], advantages=adv)

# %% [markdown]
# ## Offsets vs cumulative decode
#
# Two ways to know which characters a token covers: the fast tokenizer's `offset_mapping`, and
# the paper's **cumulative decoded offsets**, token t covers
# [len(decode(y_{<t})), len(decode(y_{≤t}))), which works for any tokenizer.
# On the demo group they agree token for token:

# %%
alignment_html(group)

# %% [markdown]
# They differ where a token holds part of a multi-byte character: `offset_mapping` gives the
# character to every byte-token, cumulative decode to the last one. Those characters live in
# the semantic fields, so the field ids still agree:

# %%
texts = [group.completions[0].replace('"chair"', '"椅子"').replace("wooden", "élégante")]
alignment_html(demo_group(seed, Q, M, tokenizer_corpus=corpus, completions=texts))

# %% [markdown]
# ## What to try next
#
# 1. **Break the JSON.** Remove a closing bracket of `bbox3d`, or write `bbox2d` with 3
#    numbers, and see which tokens fall to the background and which rewards drop to 0.

# %%
broken = list(group.completions[:4])
broken[0] = broken[0].replace('], "kpts2d"', ', "kpts2d"', 1)  # bbox3d loses its ']'
broken[1] = broken[1].replace('"bbox2d": [', '"bbox2d": [1, ', 1)  # bbox2d gets 5 numbers
bgroup = demo_group(seed, Q, M, tokenizer_corpus=corpus, completions=broken)
parse_table_html(bgroup)

# %% [markdown]
# 2. **Another tokenizer.** A bigger vocabulary merges more digits; the partition must not
#    care. Try `vocab_size=300` or `2000`.

# %%
g2 = demo_group(seed, Q, M, tokenizer_corpus=corpus, vocab_size=1000)
token_partition_html(g2.completions[1], g2.offsets[1], g2.field_ids[1])

# %% [markdown]
# 3. **Background = 0.** `group.advantages("grca", background="zero")` gives the background
#    no signal at all (the other reading of Eq. 10b). Compare `region_advantages_html` rows.

# %%
print(np.unique(group.advantages("grca", background="zero")[2][group.mask[2].numpy()]))
