"""DVC stage ``report``: Tables 1-5 with the paper's numbers beside ours, claims, figures.

    python -m pointvl.stages.report --params params.yaml

Reads the per-system metrics (``results/metrics/eval/<system>.json``), the saved predictions
(for paired-bootstrap differences between systems on the same test samples), the trivial
predictors, ``paper/reported.yaml`` and the RL training logs. Writes
``results/tables/table{1..5}.{md,csv,tex}``, ``results/tables/claims.md`` and
``results/figures/{rl_reward_curves,table5_lambda}.png``. A system that was not run shows
"no run"; a paper number only ever appears in a "(paper)" column.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import yaml

from pointvl.config import load_params, load_section
from pointvl.io import atomic_write_text

# our system name -> the paper's row name (Table 3 and, for grca_rpc, Tables 1, 2, 4)
PAPER_NAMES = {
    "sft": "SFT",
    "sft_budget": "SFT (budget-matched)",
    "grpo": "GRPO (broadcast reward)",
    "grca": "GRCA",
    "grca_rpc": "GRCA + RPC",
}
GEOMETRY = ("iou2d", "iou3d", "kpa2d", "kpa3d", "rpc")
STRICT = ("pck3d", "spread3d", "parse_fail")
LANGUAGE = ("bleu1", "bleu2", "bleu3", "bleu4", "rouge1", "rouge2", "rougeL", "bertscore",
            "qa_acc", "qa_acc/category_mc", "qa_acc/attribute")  # fmt: skip
# (a, b, metric): the comparisons the paper draws in Tables 3 and 5
CLAIMS = (
    ("grca", "grpo", "kpa3d"),
    ("grca", "grpo", "iou3d"),
    ("grca", "grpo", "rpc"),
    ("grca_rpc", "grca", "rpc"),
    ("grca_rpc", "grca", "iou3d"),
    ("grpo", "sft", "kpa3d"),
    ("grca", "sft_budget", "kpa3d"),
    ("grca", "sft_budget", "iou3d"),
)


@dataclasses.dataclass
class ReportConfig:
    """Section ``report`` of params.yaml."""

    systems: list = dataclasses.field(default_factory=lambda: list(PAPER_NAMES))
    """Our systems in table order (keys of evaluate.systems)."""
    lambda_systems: dict = dataclasses.field(default_factory=dict)
    """Table 5: λ (as the paper writes it, e.g. "0.15") -> our system name."""
    data_dir: str = "data/{profile}"
    metrics_dir: str = "results/metrics/eval"
    predictions_dir: str = "results/predictions"
    train_logs: str = "results/train/rl_{variant}/log.jsonl"
    """RL logs ({variant} replaced), for the per-field reward curves."""
    tables_dir: str = "results/tables"
    figures_dir: str = "results/figures"
    n_boot: int = 1000
    seed: int = 0


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _cell(result: dict | None, metric: str):
    if not result or metric not in result:
        return None
    r = result[metric]
    return None if r["mean"] is None or math.isnan(r["mean"]) else (r["mean"], r["lo"], r["hi"])


def _rows(results: dict, names: dict, metrics) -> dict:
    return {names[s]: {m: _cell(results.get(s), m) for m in metrics} for s in names}


def _per_sample(cfg: ReportConfig, system: str, targets, quant_bins):
    from pointvl.eval.metrics import per_sample_metrics

    path = Path(cfg.predictions_dir) / f"{system}.jsonl"
    if not path.is_file():
        return None
    texts = [json.loads(line)["completion"] for line in path.read_text().splitlines()]
    return per_sample_metrics(texts, targets[: len(texts)], quant_bins)


def claims(cfg: ReportConfig, profile: str, reported: dict) -> list[str]:
    """One sentence per paper comparison, from paired-bootstrap differences on our test set."""
    from pointvl.eval.bootstrap import paired_bootstrap
    from pointvl.eval.report import claim_sentence
    from pointvl.eval.targets import load_targets

    data_dir = cfg.data_dir.format(profile=profile)
    per: dict = {}
    if Path(data_dir, "manifest.json").is_file():
        targets, _, q = load_targets(data_dir, "test")
        per = {s: _per_sample(cfg, s, targets, q) for s in PAPER_NAMES}
    paper = reported["table3_ablation"]
    out = []
    for a, b, m in CLAIMS:
        pa, pb = paper[PAPER_NAMES[a]][m], paper[PAPER_NAMES[b]][m]
        paper_diff = round(pa - pb, 6)
        if per.get(a) is not None and per.get(b) is not None:
            ci = paired_bootstrap(per[a][m], per[b][m], n_boot=cfg.n_boot, seed=cfg.seed)
            diff, lo, hi = ci.mean, ci.lo, ci.hi
        else:
            diff = lo = hi = float("nan")
        out.append(claim_sentence(m, diff, lo, hi, paper_diff, (PAPER_NAMES[a], PAPER_NAMES[b])))
    return out


def reward_curves(cfg: ReportConfig, out: Path) -> Path | None:
    """Per-field reward vs RL step, one panel per field, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pointvl.schema import GEOMETRIC_FIELDS

    keys = [f"reward/{f}" for f in GEOMETRIC_FIELDS] + ["reward/rpc"]
    logs = {}
    for v in ("grpo", "grca", "grca_rpc"):
        p = Path(cfg.train_logs.format(variant=v))
        if p.is_file():
            logs[v] = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    if not logs:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), constrained_layout=True)
    for ax, key in zip(axes, keys):
        for v, recs in logs.items():
            pts = [(r["step"], r[key]) for r in recs if key in r and "step" in r]
            if pts:
                s, y = np.array(pts, dtype=float).T
                k = max(1, len(y) // 20)  # moving average over ~5% of the run
                ys = np.convolve(y, np.ones(k) / k, mode="valid")
                ax.plot(s[k - 1 :], ys, label=PAPER_NAMES[v])
        ax.set_title(key)
        ax.set_xlabel("RL step")
    axes[0].legend(fontsize=8)
    fig.suptitle("Per-field rewards of sampled completions during RL (ours)")
    path = out / "rl_reward_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def lambda_figure(results: dict, lam_map: dict, reported: dict, out: Path) -> Path | None:
    """Table 5 as a curve: RPC and IoU3D vs λ, ours with CIs beside the paper's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not lam_map:
        return None
    paper = reported["table5_rpc_weight"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    for ax, m in zip(axes, ("rpc", "iou3d")):
        lams = sorted(lam_map, key=float)
        ours = [_cell(results.get(lam_map[k]), m) for k in lams]
        xs = [float(k) for k, c in zip(lams, ours) if c]
        if xs:
            c = np.array([c for c in ours if c])
            ax.errorbar(xs, c[:, 0], yerr=[c[:, 0] - c[:, 1], c[:, 2] - c[:, 0]], marker="o",
                        capsize=3, label="ours (95% CI)")  # fmt: skip
        px = [float(k) for k in paper if k[0].isdigit()]
        ax.plot(px, [paper[k][m] for k in paper if k[0].isdigit()], "s--", label="paper")
        ax.set_xlabel("RPC weight λ")
        ax.set_title(m)
        ax.legend(fontsize=8)
    path = out / "table5_lambda.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(cfg: ReportConfig, profile: str, reported: dict) -> dict:
    from pointvl.eval.report import write_table

    mdir = Path(cfg.metrics_dir)
    results = {s: _load(mdir / f"{s}.json") for s in cfg.systems}
    results.update({s: _load(mdir / f"{s}.json") for s in cfg.lambda_systems.values()})
    trivial = _load(mdir / "trivial.json") or {}
    tables, figures = Path(cfg.tables_dir), Path(cfg.figures_dir)
    figures.mkdir(parents=True, exist_ok=True)
    ran = sorted(s for s, r in results.items() if r)
    scale = f"Ours: the `{profile}` profile (see paper/departures.md); not comparable in scale."
    ours_main = {"grca_rpc": "PointVL-3D (GRCA + RPC)"}

    t1 = _rows(results, ours_main, ("iou2d", "kpa2d"))
    write_table("table1", t1, reported["table1_2d_grounding"], tables, ["iou2d", "kpa2d"],
                notes=[scale], caption="Table 1: 2D grounding")  # fmt: skip
    t2 = _rows(results, ours_main, ("iou3d", "kpa3d", "rpc") + STRICT)
    for name, row in trivial.items():
        t2[name] = {m: _cell(row, m) for m in ("iou3d", "kpa3d", "rpc") + STRICT}
    write_table("table2", t2, reported["table2_3d_grounding"], tables,
                ["iou3d", "kpa3d", "rpc", *STRICT], caption="Table 2: 3D grounding",
                notes=[scale, "Trivial predictors: RPC against the ground-truth 2D box.",
                       "Point-only baselines (PointNet, PointNet++, Point-BERT regressors) "
                       "are not implemented yet: no run."])  # fmt: skip
    sentences = claims(cfg, profile, reported)
    t3 = _rows(results, {s: PAPER_NAMES[s] for s in cfg.systems}, GEOMETRY + STRICT)
    write_table("table3", t3, reported["table3_ablation"], tables, [*GEOMETRY, *STRICT],
                notes=[scale, *sentences], caption="Table 3: ablation")  # fmt: skip
    t4 = _rows(results, {s: PAPER_NAMES[s] for s in ("sft", "grca", "grca_rpc")}, LANGUAGE)
    write_table("table4", t4, reported["table4_language"], tables, list(LANGUAGE),
                notes=[scale, "BERTScore uses a local MiniLM encoder, not the paper's: "
                       "absolute values are not comparable."],
                caption="Table 4: language")  # fmt: skip
    t5 = {"GRCA (no RPC)": {m: _cell(results.get("grca"), m) for m in GEOMETRY}}
    for lam, s in cfg.lambda_systems.items():
        t5[lam] = {m: _cell(results.get(s), m) for m in GEOMETRY}
    write_table("table5", t5, reported["table5_rpc_weight"], tables, list(GEOMETRY),
                notes=[scale], caption="Table 5: RPC weight λ")  # fmt: skip
    atomic_write_text(tables / "claims.md", "# The paper's claims, tested on our run\n\n"
                      + "".join(f"- {s}\n" for s in sentences))  # fmt: skip
    figs = [reward_curves(cfg, figures), lambda_figure(results, cfg.lambda_systems, reported,
                                                       figures)]  # fmt: skip
    return {"systems_with_results": ran, "claims": sentences,
            "figures": [str(f) for f in figs if f]}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--reported", default="paper/reported.yaml")
    args = ap.parse_args(argv)
    profile = load_params(args.params, args.profile)["profile"]
    cfg = load_section(args.params, "report", ReportConfig, args.profile)
    out = run(cfg, profile, yaml.safe_load(Path(args.reported).read_text()))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
