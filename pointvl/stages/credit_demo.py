"""DVC stage ``credit_demo``: per-token advantages of one group, broadcast vs routed vs RPC.

    python -m pointvl.stages.credit_demo --params params.yaml [--profile tiny]

Pipeline (the rl step of DESIGN.md, without a model): a group of G = 8 written completions
(``pointvl.demo``) -> ``parse_output`` -> BPE tokens + offsets -> ``field_token_ids`` ->
``score_batch`` (Eq. 8, 13) -> ``build_advantages`` for grpo / grca / grca_rpc (Eqs. 9-14).

Writes ``<out_dir>/advantages.html`` (offline Plotly), ``advantages.png``, ``group.json``
(completions, tokens, field ids, rewards, advantages) and the metrics JSON.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from pointvl.config import CreditDemoConfig, SchemaConfig, load_section
from pointvl.credit import CreditConfig, CreditInputs, build_advantages, credit_diagnostics
from pointvl.demo import CASES, demo_completions, demo_target
from pointvl.io import atomic_dir, atomic_write_json
from pointvl.model.tokenizer import train_bpe_tokenizer
from pointvl.rewards import score_batch
from pointvl.schema import GEOMETRIC_FIELDS, format_target, parse_output
from pointvl.spans import field_token_ids
from pointvl.viz.advantages import advantage_figure, advantage_png

VARIANTS = {"grpo": "GRPO (broadcast Â_seq)", "grca": "GRCA (routed)", "grca_rpc": "GRCA + RPC"}


def demo_tokenizer(cfg: CreditDemoConfig, quant_bins: int):
    """A BPE trained on random target JSONs (seeded): numbers split irregularly, as in tiny."""
    texts = [
        format_target(demo_target(cfg.seed + 1 + i), quant_bins)
        for i in range(cfg.tokenizer_corpus)
    ]
    texts += ["Sure. Here is the structured answer:", "```json", "```"]
    return train_bpe_tokenizer(texts, vocab_size=cfg.vocab_size)


def run(cfg: CreditDemoConfig, schema: SchemaConfig) -> dict:
    """Build the group, score it, compute the three advantage tensors, write the outputs."""
    Q = schema.quant_bins
    target = demo_target(cfg.seed)
    completions = demo_completions(target, Q, seed=cfg.seed)
    G = len(completions)
    tok = demo_tokenizer(cfg, Q)

    parsed = [parse_output(c, num_keypoints=schema.num_keypoints) for c in completions]
    encs = [tok(c, add_special_tokens=False, return_offsets_mapping=True) for c in completions]
    # EOS closes every completion; it has no characters, so it is background
    ids_list = [e["input_ids"] + [tok.eos_token_id] for e in encs]
    offsets = [e["offset_mapping"] + [(len(c), len(c))] for e, c in zip(encs, completions)]
    T = max(len(i) for i in ids_list)
    field_ids = torch.zeros(G, T, dtype=torch.long)  # (B, T)
    mask = torch.zeros(G, T, dtype=torch.bool)  # (B, T)
    for i, off in enumerate(offsets):
        field_ids[i, : len(off)] = torch.from_numpy(field_token_ids(parsed[i].char_spans, off))
        mask[i, : len(off)] = True

    scores = score_batch(parsed, [target] * G, Q)
    batch = CreditInputs(
        per_field_rewards=scores["per_field_rewards"],
        seq_rewards=scores["seq"],
        rpc_rewards=scores["rpc"],
        field_ids=field_ids,
        group_size=G,
    )
    ccfg = CreditConfig(background=cfg.background, lam=cfg.lam)
    adv = {v: build_advantages(v, batch, ccfg).masked_fill(~mask, float("nan")) for v in VARIANTS}

    tokens = [tok.convert_ids_to_tokens(i) for i in ids_list]
    tokens = [[tok.convert_tokens_to_string([t]) for t in row] for row in tokens]
    labels = [f"{i}: {c}" for i, c in enumerate(CASES)]
    metrics = _metrics(adv, field_ids, mask, scores, parsed)
    metrics.update(credit_diagnostics(batch))

    with atomic_dir(cfg.out_dir) as out:
        panels = {VARIANTS[v]: a.numpy() for v, a in adv.items()}
        fig = advantage_figure(
            panels,
            field_ids.numpy(),
            tokens,
            labels,
            title=f"Per-token advantages of one group (G={G}, λ={cfg.lam})",
        )
        fig.write_html(out / "advantages.html", include_plotlyjs=True, full_html=True, div_id="adv")
        advantage_png(
            out / "advantages.png",
            panels,
            field_ids.numpy(),
            labels,
            title=f"Broadcast vs routed advantages (G={G}, λ={cfg.lam})",
        )
        group = {
            "cases": list(CASES),
            "completions": completions,
            "errors": [p.errors for p in parsed],
            "tokens": tokens,
            "field_ids": [row[: len(t)].tolist() for row, t in zip(field_ids, tokens)],
            "rewards": {k: np.asarray(v).tolist() for k, v in scores.items()},
            "advantages": {
                v: [row[: len(t)].tolist() for row, t in zip(a, tokens)] for v, a in adv.items()
            },
        }
        (out / "group.json").write_text(json.dumps(group, indent=1) + "\n")
    atomic_write_json(cfg.metrics, metrics)
    return metrics


def _metrics(adv, field_ids, mask, scores, parsed) -> dict:
    """Facts a reader can check in the figure, computed from the tensors."""
    out: dict = {"group_size": int(field_ids.shape[0]), "tokens": int(mask.sum())}
    for k, name in enumerate(GEOMETRIC_FIELDS):
        sel = field_ids == k + 1  # (B, T)
        out[f"tokens/{name}"] = int(sel.sum())
        out[f"reward/{name}"] = float(scores["per_field_rewards"][:, k].mean())
    out["tokens/background"] = int((mask & (field_ids == 0)).sum())
    out["reward/rpc"] = float(scores["rpc"].mean())
    out["reward/seq"] = float(scores["seq"].mean())
    out["spans/parse_fail_frac"] = float(np.mean([not p.ok for p in parsed]))
    grpo = adv["grpo"]
    for v in ("grca", "grca_rpc"):
        diff = (adv[v] - grpo).abs()[mask]
        out[f"{v}/tokens_changed_vs_grpo_frac"] = float((diff > 1e-9).double().mean())
        # tokens whose advantage sign flips relative to broadcast GRPO
        flips = (torch.sign(adv[v]) * torch.sign(grpo) < 0)[mask]
        out[f"{v}/sign_flips_vs_grpo_frac"] = float(flips.double().mean())
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None, help="smoke | tiny | paper (default: params)")
    args = ap.parse_args(argv)
    cfg = load_section(args.params, "credit_demo", CreditDemoConfig, args.profile)
    schema = load_section(args.params, "schema", SchemaConfig, args.profile)
    metrics = run(cfg, schema)
    print(
        json.dumps(
            {k: metrics[k] for k in sorted(metrics) if "/" not in k or "frac" in k}, indent=1
        )
    )


if __name__ == "__main__":
    main()
