"""The report: Tables 1-5 with the paper's numbers beside ours, claims, RL acceptance (the
``report`` stage's one call, ``write_report``).

Reads the per-system metrics (``<metrics_dir>/<system>.json``), the saved predictions, the
non-learned predictors, the point-only baselines, the zero-shot VLM statuses, the paper's
numbers and the RL logs; the statistics are ``pointvl.eval.results`` (cells with seed
intervals, claims with δ, acceptance). Writes ``<tables_dir>/table{1..5}.{md,csv,tex}``,
``claims.{md,json}``, ``rl_acceptance.{md,json}`` and
``<figures_dir>/{rl_validation_curves,table5_lambda}.png``. A system that was not run shows
"no run"; a paper number only ever appears in a "(paper)" column.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pointvl.eval.results import (
    GEOMETRY,
    LABELS,
    LANGUAGE,
    STRICT,
    Claim,
    ReportConfig,
    Results,
    load_json,
    zeroshot_rows,
)
from pointvl.io import atomic_write_json, atomic_write_text


def _triple(results: Results, system: str, metric: str):
    r = (results.result(system) or {}).get(metric)
    if not r or r.get("mean") is None or math.isnan(r["mean"]):
        return None
    return (r["mean"], r["lo"], r["hi"])


def rl_logs(cfg: ReportConfig, results: Results) -> dict[str, list[Path]]:
    """Each RL system's training logs (all seeds)."""
    out = {}
    for s in cfg.systems:
        if s == "sft":
            continue
        logs = [cfg.train_log(x) for x in results.seeds(s)]
        logs = [p for p in logs if p.is_file()]
        if logs:
            out[s] = logs
    return out


def acceptance(cfg: ReportConfig, results: Results) -> dict:
    """``rl_acceptance`` from the logs and the test metrics of every system's seeds."""
    from pointvl.eval.results import FIELD_METRICS, rl_acceptance
    from pointvl.io import read_jsonl

    logs = rl_logs(cfg, results)
    parse = {
        arm: [max((r.get("spans/parse_fail_frac") or 0.0) for r in read_jsonl(p)) for p in ps]
        for arm, ps in logs.items()
    }
    field = {}
    for s in cfg.systems:
        per_seed = [results.seed_means(s, m) for m in FIELD_METRICS]
        seeds = set.intersection(*(set(p) for p in per_seed)) if per_seed else set()
        field[s] = [float(np.mean([p[k] for p in per_seed])) for k in sorted(seeds)]
    return rl_acceptance(logs, parse, field)


def acceptance_md(acc: dict) -> str:
    lines = ["# RL acceptance (ours): does each arm learn, on the validation split?", "",
             "Validation: the first `rl.val_prompts` prompts of the val split (carved from "
             "train), G = `rl.val_generations` completions each at the RL temperature, fixed "
             "seed, every `rl.val_every` steps. Field reward = mean of the four geometric "
             "field rewards. Slope per 100 steps with its 95% CI (t over seeds' slopes; one "
             "run: OLS interval).", "",
             "| arm | runs | val field reward first -> last | slope / 100 steps [95% CI] | "
             "slope > 0 | max rollout parse-fail | < 20% |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for arm, a in acc["arms"].items():
        s = a["val_slope_per_100_steps"]
        pf = a["rollout_parse_fail_max"]
        lines.append(
            f"| {LABELS.get(arm, arm)} | {a['runs']} | {a['val_field_reward_first']:.3f} -> "
            f"{a['val_field_reward_last']:.3f} | {s['slope']:+.4f} [{s['lo']:+.4f}, "
            f"{s['hi']:+.4f}] | {'yes' if a['slope_above_0'] else 'no'} | "
            f"{'n/a' if pf is None else f'{pf:.1%}'} | {'yes' if a['parse_fail_below_20pct'] else 'no'} |"
        )
    b = acc.get("best_rl_arm")
    if b:
        lines += ["", f"Best RL arm on the greedy test field reward (mean of IoU2D, IoU3D, "
                  f"KPA-2D, KPA-3D over seeds): {LABELS.get(b['arm'], b['arm'])} "
                  f"{b['test_field_reward']:.3f} vs SFT {b['sft']:.3f} -> "
                  f"{'at least SFT' if b['at_least_sft'] else 'below SFT'}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def lambda_figure(results: Results, lam_map: dict, reported: dict, out: Path) -> Path | None:
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
        ours = [_triple(results, lam_map[k], m) for k in lams]
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


def write_report(cfg: ReportConfig, profile: str, reported: dict) -> dict:
    """Tables 1-5, claims, RL acceptance and the report figures (module docstring)."""
    from pointvl.viz.rl_curves import validation_figure

    results = cfg.results(profile)
    tables, figures = Path(cfg.tables_dir), Path(cfg.figures_dir)
    figures.mkdir(parents=True, exist_ok=True)
    seeds = {s: len(results.seeds(s)) for s in cfg.systems if results.seeds(s)}
    notes = [
        f"Ours: the `{profile}` profile (see paper/departures.md); not comparable in scale.",
        "Seeds per system: " + ", ".join(f"{LABELS.get(s, s)}: {n}" for s, n in seeds.items())
        + ". One seed: mean [95% bootstrap CI over test samples]. Several seeds: mean over "
        "seeds [95% t-interval over the per-seed test means, cut at the metric's range] ± "
        "std over seeds (n seeds); every RL seed starts from the same SFT checkpoint.",
    ]  # fmt: skip
    trivial = load_json(results.metrics_path("trivial")) or {}
    _grounding_tables(cfg, results, reported, trivial, tables, notes)
    sentences = _ablation_table(cfg, results, reported, trivial, tables, notes)
    _language_and_lambda_tables(cfg, results, reported, trivial, tables, notes)
    acc = acceptance(cfg, results)
    atomic_write_json(tables / "rl_acceptance.json", acc)
    atomic_write_text(tables / "rl_acceptance.md", acceptance_md(acc))
    figs = [
        validation_figure(rl_logs(cfg, results), LABELS, figures / "rl_validation_curves.png"),
        lambda_figure(results, cfg.lambda_systems, reported, figures),
    ]
    ran = sorted(s for s in cfg.systems if results.result(s))
    return {"systems_with_results": ran, "seeds": seeds, "claims": sentences,
            "figures": [str(f) for f in figs if f]}  # fmt: skip


OURS_MAIN = {"grca_rpc": "PointVL-3D (GRCA + RPC)"}


def _grounding_tables(cfg, results, reported, trivial, tables: Path, notes: list) -> None:
    """Table 1 (2D grounding, with the zero-shot rows) and Table 2 (3D grounding, with the
    point-only baselines and the non-learned rows)."""
    from pointvl.eval.report import write_table

    t1 = results.rows(OURS_MAIN, ("iou2d", "kpa2d"))
    zs_rows, zs_notes = zeroshot_rows(Path(cfg.zeroshot))
    t1.update(zs_rows)
    write_table("table1", t1, reported["table1_2d_grounding"], tables, ["iou2d", "kpa2d"],
                notes=[*notes, *zs_notes], caption="Table 1: 2D grounding")  # fmt: skip
    t2_metrics = ("iou3d", "kpa3d", "rpc") + STRICT
    t2 = results.rows(OURS_MAIN, t2_metrics)
    for paper_row, system in cfg.baselines.items():
        t2[paper_row] = {m: _triple(results, system, m) for m in t2_metrics}
    for name, row in trivial.items():
        t2[name] = {m: _row_triple(row, m) for m in t2_metrics}
    missing = [r for r, s in cfg.baselines.items() if results.result(s) is None]
    write_table("table2", t2, reported["table2_3d_grounding"], tables, list(t2_metrics),
                caption="Table 2: 3D grounding",
                notes=[*notes,
                       "Point-only baselines (PointNet, PointNet++, PointBert rows: our "
                       "regressors, trained from scratch on our train split, pointvl/baselines) "
                       "and the non-learned rows predict no 2D box: their RPC is computed against "
                       "the ground-truth 2D box.",
                       *([f"No run behind: {', '.join(missing)}."] if missing else [])])  # fmt: skip


def _ablation_table(cfg, results, reported, trivial, tables: Path, notes: list) -> list[str]:
    """Table 3 with the claims under it; writes claims.{md,json}; -> the claims' sentences."""
    from pointvl.eval.report import write_table

    paper3 = reported["table3_ablation"]
    found = [
        results.claim(Claim(*c), paper3, cfg.deltas)
        for c in cfg.claims
        if c[0] in cfg.systems and c[1] in cfg.systems
    ]
    sentences = [c["sentence"] for c in found]
    t3 = results.rows({s: LABELS.get(s, s) for s in cfg.systems}, GEOMETRY + STRICT)
    for name, row in trivial.items():
        t3[name] = {m: _row_triple(row, m) for m in ("iou3d", "kpa3d", *STRICT)}
    write_table("table3", t3, paper3, tables, [*GEOMETRY, *STRICT],
                notes=[*notes, "Non-learned rows: 3D columns only (their 2D fields "
                       "are copied from the ground truth).", *sentences],
                caption="Table 3: ablation")  # fmt: skip
    atomic_write_text(tables / "claims.md", "# The paper's claims, tested on our runs\n\n"
                      + "".join(f"- {s}\n" for s in sentences))  # fmt: skip
    atomic_write_json(tables / "claims.json", found)
    return sentences


def _language_and_lambda_tables(cfg, results, reported, trivial, tables: Path, notes: list) -> None:
    """Table 4 (language) and Table 5 (RPC weight λ, with the non-learned 3D rows)."""
    from pointvl.eval.report import write_table

    lang = {s: LABELS[s] for s in ("sft", "grca", "grca_rpc") if s in cfg.systems}
    t4 = results.rows(lang, LANGUAGE)
    write_table("table4", t4, reported["table4_language"], tables, list(LANGUAGE),
                notes=[*notes, "BERTScore uses a local MiniLM encoder, not the "
                       "paper's: absolute values are not comparable."],
                caption="Table 4: language")  # fmt: skip
    t5 = {"GRCA (no RPC)": results.rows({"grca": "x"}, GEOMETRY)["x"]}
    for lam, s in cfg.lambda_systems.items():
        t5[lam] = results.rows({s: "x"}, GEOMETRY)["x"]
    for name, row in trivial.items():
        t5[name] = {m: _row_triple(row, m) for m in ("iou3d", "kpa3d")}
    sweep = [] if cfg.lambda_systems else [
        "No λ sweep in this pipeline: it runs in the study (`dvc repro studies/rl/dvc.yaml`, "
        "`results/study/tables/table5.md`); the default λ's GRCA + RPC arm is in Table 3."]  # fmt: skip
    write_table("table5", t5, reported["table5_rpc_weight"], tables, list(GEOMETRY),
                notes=[*notes, "Every row from the same SFT checkpoint.", *sweep,
                       "Non-learned rows: 3D box and keypoint columns only."],
                caption="Table 5: RPC weight λ")  # fmt: skip


def _row_triple(row: dict, metric: str):
    r = row.get(metric)
    if not isinstance(r, dict) or r.get("mean") is None or math.isnan(r["mean"]):
        return None
    return (r["mean"], r["lo"], r["hi"])
