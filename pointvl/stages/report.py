"""DVC stage ``report``: Tables 1-5 with the paper's numbers beside ours, claims, figures.

    python -m pointvl.stages.report --params params.yaml

Reads the per-system metrics (``results/metrics/eval/<system>.json``), the saved predictions
(for paired-bootstrap differences between systems on the same test samples), the trivial
predictors, the point-only baselines, the zero-shot VLM statuses, ``paper/reported.yaml`` and
the RL training logs. Writes
``results/tables/table{1..5}.{md,csv,tex}``, ``results/tables/claims.md`` and
``results/figures/{rl_reward_curves,table5_lambda}.png``. A system that was not run shows
"no run"; a paper number only ever appears in a "(paper)" column.

Several seeds (``report.seed_systems``): a system's cell becomes the mean over its seeds
± the sample std over seeds, and its [lo, hi] is the 95% bootstrap CI over test samples of
the seed-averaged per-sample metric (metrics without per-sample values, e.g. corpus BLEU,
get the spread over seeds only). Claims then use the seed-averaged per-sample values and
also list the per-seed differences.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import warnings
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
    seed_systems: dict = dataclasses.field(default_factory=dict)
    """System -> its extra-seed systems (e.g. grca: [grca_seed1, grca_seed2])."""
    baselines: dict = dataclasses.field(default_factory=dict)
    """Table 2: the paper's row name (e.g. "PointNet") -> our baseline system."""
    zeroshot: str = "results/metrics/eval/zeroshot.json"
    """Table 1: the zero-shot VLM stage's output (statuses and metrics per paper row)."""
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


class Runs:
    """Our runs of each system: per-seed metrics JSONs and (lazily) per-sample metrics."""

    def __init__(self, cfg: ReportConfig, profile: str):
        self.cfg = cfg
        self.mdir = Path(cfg.metrics_dir)
        data_dir = cfg.data_dir.format(profile=profile)
        self._targets = None
        if Path(data_dir, "manifest.json").is_file():
            from pointvl.eval.targets import load_targets

            self._targets = load_targets(data_dir, "test")
        self._per: dict = {}
        self._results: dict = {}

    def seeds(self, system: str) -> list[str]:
        """``system`` and its extra-seed systems that have a metrics JSON, seed 0 first."""
        names = [system, *self.cfg.seed_systems.get(system, [])]
        return [s for s in names if (self.mdir / f"{s}.json").is_file()]

    def result(self, system: str) -> dict | None:
        """The system's metrics JSON, read once (every table cell asks for it)."""
        if system not in self._results:
            self._results[system] = _load(self.mdir / f"{system}.json")
        return self._results[system]

    def per_sample(self, system: str) -> dict | None:
        """{metric: (N,)} from the saved predictions (None without data or predictions)."""
        if system not in self._per:
            self._per[system] = (
                None
                if self._targets is None
                else _per_sample(self.cfg, system, self._targets[0], self._targets[2])
            )
        return self._per[system]

    def seed_mean_per_sample(self, system: str, metric: str, k: int | None = None):
        """(N,) the per-sample metric averaged over the system's first ``k`` seeds (default:
        all of them); None if any is missing."""
        per = [self.per_sample(s) for s in self.seeds(system)[:k]]
        if not per or any(p is None or metric not in p for p in per):
            return None
        stack = np.stack([np.asarray(p[metric], dtype=np.float64) for p in per])  # (S, N)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a sample undefined in every seed
            return np.nanmean(stack, axis=0)  # (N,)

    def cell(self, system: str, metric: str):
        """One table cell: (mean, lo, hi) for one seed; a dict with std/n_seeds for several."""
        from pointvl.eval.bootstrap import bootstrap_ci, seed_summary

        runs = self.seeds(system)
        cells = [_cell(self.result(s), metric) for s in runs]
        cells = [c for c in cells if c is not None]
        if not cells:
            return None
        if len(runs) == 1 or len(cells) != len(runs):
            return cells[0]
        summ = seed_summary([c[0] for c in cells])
        lo = hi = float("nan")
        v = self.seed_mean_per_sample(system, metric)
        if v is not None:
            ci = bootstrap_ci(v, n_boot=self.cfg.n_boot, seed=self.cfg.seed)
            lo, hi = ci.lo, ci.hi
        return {"mean": summ.mean, "lo": lo, "hi": hi, "std": summ.std, "n_seeds": summ.n_seeds}

    def rows(self, names: dict, metrics) -> dict:
        """{row name: {metric: cell}} for {our system: row name}."""
        return {row: {m: self.cell(s, m) for m in metrics} for s, row in names.items()}


def claims(cfg: ReportConfig, runs: Runs, reported: dict) -> list[str]:
    """One sentence per paper comparison, from paired-bootstrap differences on our test set.

    Only seeds both systems have are compared (seed 0 first): with one seed on one side, seed
    0 against seed 0. With several common seeds, the difference is that of the seed-averaged
    per-sample metrics, and the per-seed differences (seed k of a − seed k of b) follow.
    """
    from pointvl.eval.bootstrap import paired_bootstrap
    from pointvl.eval.report import claim_sentence

    paper = reported["table3_ablation"]
    out = []
    for a, b, m in CLAIMS:
        pa, pb = paper[PAPER_NAMES[a]][m], paper[PAPER_NAMES[b]][m]
        paper_diff = round(pa - pb, 6)
        k = max(1, min(len(runs.seeds(a)), len(runs.seeds(b))))  # common seeds
        sa, sb = runs.seeds(a)[:k], runs.seeds(b)[:k]
        va, vb = runs.seed_mean_per_sample(a, m, k), runs.seed_mean_per_sample(b, m, k)
        if va is not None and vb is not None:
            ci = paired_bootstrap(va, vb, n_boot=cfg.n_boot, seed=cfg.seed)
            diff, lo, hi = ci.mean, ci.lo, ci.hi
        else:
            diff = lo = hi = float("nan")
        names = tuple(
            PAPER_NAMES[x] + (f" ({len(ss)} seeds)" if len(ss) > 1 else "")
            for x, ss in ((a, sa), (b, sb))
        )
        sentence = claim_sentence(m, diff, lo, hi, paper_diff, names)
        if len(sa) > 1 and len(sa) == len(sb):
            per_seed = [runs.per_sample(x) for x in sa], [runs.per_sample(x) for x in sb]
            if all(p is not None for p in per_seed[0] + per_seed[1]):
                diffs = [np.nanmean(x[m]) - np.nanmean(y[m]) for x, y in zip(*per_seed)]
                sentence += " Per seed: " + ", ".join(f"{d:+.3f}" for d in diffs) + "."
        out.append(sentence)
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


def zeroshot_rows(path: Path) -> tuple[dict, list[str]]:
    """Table 1's zero-shot rows from the zeroshot stage: ({row: {metric: cell}}, notes).

    A row the stage did not run (no local weights, no GPU) gets no cell, so the table shows
    "no run" beside the paper's number, and a note gives the stage's reason.
    """
    data = _load(path) or {}
    rows, notes = {}, []
    for name, rec in data.items():
        if name.startswith("_") or not isinstance(rec, dict):
            continue
        cells = {m: _cell(rec, m) for m in ("iou2d", "kpa2d", "parse_fail")}
        if any(c is not None for c in cells.values()):
            rows[name] = cells
        else:
            notes.append(f"{name}: the paper's number only; {rec.get('status', 'not run')}.")
    if not data:
        notes.append(f"Zero-shot VLM rows: the paper's numbers only ({path} is missing).")
    return rows, notes


def run(cfg: ReportConfig, profile: str, reported: dict) -> dict:
    from pointvl.eval.report import write_table

    runs = Runs(cfg, profile)
    mdir = Path(cfg.metrics_dir)
    results = {s: runs.result(s) for s in cfg.systems}
    results.update({s: runs.result(s) for s in cfg.lambda_systems.values()})
    trivial = _load(mdir / "trivial.json") or {}
    tables, figures = Path(cfg.tables_dir), Path(cfg.figures_dir)
    figures.mkdir(parents=True, exist_ok=True)
    ran = sorted(s for s, r in results.items() if r)
    scale = f"Ours: the `{profile}` profile (see paper/departures.md); not comparable in scale."
    seeds = {s: len(runs.seeds(s)) for s in cfg.systems if len(runs.seeds(s)) > 1}
    seed_note = (
        "Several seeds: mean over seeds [95% CI of the seed-averaged per-sample metric] "
        "± std over seeds (n seeds); " + ", ".join(f"{PAPER_NAMES.get(s, s)}: {n}"
                                                  for s, n in seeds.items()) + "."
    ) if seeds else "One seed per system."  # fmt: skip
    ours_main = {"grca_rpc": "PointVL-3D (GRCA + RPC)"}

    t1 = runs.rows(ours_main, ("iou2d", "kpa2d"))
    zs_rows, zs_notes = zeroshot_rows(Path(cfg.zeroshot))
    t1.update(zs_rows)
    write_table("table1", t1, reported["table1_2d_grounding"], tables, ["iou2d", "kpa2d"],
                notes=[scale, *zs_notes], caption="Table 1: 2D grounding")  # fmt: skip
    t2_metrics = ("iou3d", "kpa3d", "rpc") + STRICT
    t2 = runs.rows(ours_main, t2_metrics)
    for paper_row, system in cfg.baselines.items():
        t2[paper_row] = {m: _cell(runs.result(system), m) for m in t2_metrics}
    for name, row in trivial.items():
        t2[name] = {m: _cell(row, m) for m in t2_metrics}
    missing = [r for r, s in cfg.baselines.items() if runs.result(s) is None]
    write_table("table2", t2, reported["table2_3d_grounding"], tables, list(t2_metrics),
                caption="Table 2: 3D grounding",
                notes=[scale,
                       "Point-only baselines (PointNet, PointNet++, PointBert rows: our "
                       "regressors, trained from scratch on our train split, pointvl/baselines) "
                       "and trivial predictors predict no 2D box: their RPC is computed against "
                       "the ground-truth 2D box.",
                       *([f"No run behind: {', '.join(missing)}."] if missing else [])])  # fmt: skip
    sentences = claims(cfg, runs, reported)
    t3 = runs.rows({s: PAPER_NAMES[s] for s in cfg.systems}, GEOMETRY + STRICT)
    for name, row in trivial.items():
        t3[name] = {m: _cell(row, m) for m in ("iou3d", "kpa3d", *STRICT)}
    write_table("table3", t3, reported["table3_ablation"], tables, [*GEOMETRY, *STRICT],
                notes=[scale, seed_note, "Trivial predictors: 3D columns only (their 2D fields "
                       "are copied from the ground truth).", *sentences],
                caption="Table 3: ablation")  # fmt: skip
    t4 = runs.rows({s: PAPER_NAMES[s] for s in ("sft", "grca", "grca_rpc")}, LANGUAGE)
    write_table("table4", t4, reported["table4_language"], tables, list(LANGUAGE),
                notes=[scale, seed_note, "BERTScore uses a local MiniLM encoder, not the "
                       "paper's: absolute values are not comparable."],
                caption="Table 4: language")  # fmt: skip
    t5 = {"GRCA (no RPC)": {m: _cell(results.get("grca"), m) for m in GEOMETRY}}  # seed 0
    for lam, s in cfg.lambda_systems.items():
        t5[lam] = {m: _cell(results.get(s), m) for m in GEOMETRY}
    write_table("table5", t5, reported["table5_rpc_weight"], tables, list(GEOMETRY),
                notes=[scale, "One seed (seed 0) per row, every row from the same SFT "
                       "checkpoint; GRCA (no RPC) is its seed-0 run."],
                caption="Table 5: RPC weight λ")  # fmt: skip
    atomic_write_text(tables / "claims.md", "# The paper's claims, tested on our run\n\n"
                      + "".join(f"- {s}\n" for s in sentences))  # fmt: skip
    figs = [reward_curves(cfg, figures), lambda_figure(results, cfg.lambda_systems, reported,
                                                       figures)]  # fmt: skip
    return {"systems_with_results": ran, "seeds": seeds, "claims": sentences,
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
