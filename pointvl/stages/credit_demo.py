"""DVC stage ``credit_demo``: per-token advantages of one group, broadcast vs routed vs RPC.

    python -m pointvl.stages.credit_demo --params params.yaml [--profile tiny]

Pipeline (the rl step of DESIGN.md, without a model): a group of G = 8 written completions
(``pointvl.demo``), BPE-encoded + end-of-turn -> ``pointvl.step.score_and_route`` (parse,
Eq. 8 and 13 rewards, token offsets, field ids, grpo / grca / grca_rpc advantages, Eqs. 6-14).

Writes ``<out_dir>/advantages.html`` (offline Plotly, the shared plotly.js of ``pointvl.viz.page``), ``advantages.png``, ``group.json``
(completions, tokens, field ids, rewards, advantages) and the metrics JSON.
"""

from __future__ import annotations

import json

import numpy as np

from pointvl.config import CreditDemoConfig, SchemaConfig
from pointvl.credit import CreditConfig
from pointvl.demo import CASES, demo_group
from pointvl.io import atomic_dir, atomic_write_json
from pointvl.schema import GEOMETRIC_FIELDS
from pointvl.stages._cli import Stage
from pointvl.step import compare_to_broadcast, diagnostics
from pointvl.viz.advantages import advantage_figure, advantage_png
from pointvl.viz.page import write_figure
from pointvl.viz.routed_group import VARIANTS


def run(cfg: CreditDemoConfig, schema: SchemaConfig) -> dict:
    """Build the group, score it, compute the three advantage tensors, write the outputs."""
    credit = CreditConfig(background=cfg.background, lam=cfg.lam)
    group = demo_group(cfg.seed, schema.quant_bins, schema.num_keypoints, cfg.tokenizer_corpus,
                       cfg.vocab_size, credit=credit, variants=tuple(VARIANTS))  # fmt: skip
    step, tok, ids_list = group.step, group.tokenizer, group.token_ids
    completions, G = group.completions, group.num_generations
    field_ids, mask = step.field_ids, step.mask
    scores, parsed = step.scored.scores, step.scored.parsed
    adv = {v: a.masked_fill(~mask, float("nan")) for v, a in step.advantages.items()}

    tokens = [tok.convert_ids_to_tokens(i) for i in ids_list]
    tokens = [[tok.convert_tokens_to_string([t]) for t in row] for row in tokens]
    labels = [f"{i}: {c}" for i, c in enumerate(CASES)]
    metrics = _metrics(step)

    with atomic_dir(cfg.out_dir) as out:
        panels = {VARIANTS[v]: a.numpy() for v, a in adv.items()}
        fig = advantage_figure(
            panels,
            field_ids.numpy(),
            tokens,
            labels,
            title=f"Per-token advantages of one group (G={G}, λ={cfg.lam})",
        )
        write_figure(fig, out / "advantages.html", div_id="adv")  # links the shared plotly.js
        advantage_png(
            out / "advantages.png",
            panels,
            field_ids.numpy(),
            labels,
            title=f"Broadcast vs routed advantages (G={G}, λ={cfg.lam})",
        )
        record = {
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
        (out / "group.json").write_text(json.dumps(record, indent=1) + "\n")
    atomic_write_json(cfg.metrics, metrics)
    return metrics


def _metrics(step) -> dict:
    """Facts a reader can check in the figure, computed from the tensors."""
    field_ids, mask = step.field_ids, step.mask
    out: dict = {"num_generations": int(field_ids.shape[0]), "tokens": int(mask.sum())}
    for k, name in enumerate(GEOMETRIC_FIELDS):
        out[f"tokens/{name}"] = int((field_ids == k + 1).sum())
    out["tokens/background"] = int((mask & (field_ids == 0)).sum())
    out.update(diagnostics(step))
    out.update(compare_to_broadcast(step.advantages, mask))
    return out


STAGE = Stage(
    "credit_demo",
    __doc__,
    sections={"credit_demo": CreditDemoConfig, "schema": SchemaConfig},
    run=lambda ctx: run(ctx.credit_demo, ctx.schema),
    show=lambda m: {k: m[k] for k in sorted(m) if "/" not in k or "frac" in k},
)
main = STAGE.main

if __name__ == "__main__":
    main()
