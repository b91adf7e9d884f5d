"""Our results beside the paper's (Tables 1-5): loaders, HTML tables and bar / λ figures.

The loaders read the ``evaluate`` stage's ``results/metrics/eval/<system>.json`` ({metric:
{mean, lo, hi, n}}) and ``results/predictions/<system>.jsonl``. The table layout is the
report stage's (``pointvl.eval.report``): per metric an "(ours, 95% CI)" column and a grey
"(paper)" column; a paper number is never shown as ours. (These loaders repeat what the
report code reads; they move onto its API when that lands in ``pointvl.eval``.)
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pointvl.io import read_jsonl
from pointvl.viz.html import CELL_STYLE, HEAD_STYLE, TABLE_STYLE, Html, html_table, scroll_box


def load_eval_results(metrics_dir: str | os.PathLike, systems: Sequence[str]) -> dict:
    """``{system: results/metrics/eval/<system>.json or None}`` ({metric: {mean, lo, hi, n}})."""
    out = {}
    for s in systems:
        p = Path(metrics_dir) / f"{s}.json"
        out[s] = json.loads(p.read_text()) if p.is_file() else None
    return out


def ours_cell(result: Mapping | None, metric: str):
    """(mean, lo, hi) of ``metric`` in one system's results, None if absent / NaN."""
    if not result or not isinstance(result.get(metric), Mapping):
        return None
    r = result[metric]
    mean = r.get("mean")
    if mean is None or not np.isfinite(mean):
        return None
    return (float(mean), r.get("lo"), r.get("hi"))


def ours_rows(results: Mapping, names: Mapping[str, str], metrics: Sequence[str]) -> dict:
    """``{paper row name: {metric: (mean, lo, hi) | None}}`` for our systems ``names``."""
    return {names[s]: {m: ours_cell(results.get(s), m) for m in metrics} for s in names}


def paper_vs_ours_html(
    rows_ours: Mapping, paper_rows: Mapping, metrics: Sequence[str], digits: int = 3
) -> Html:
    """The report stage's table (``pointvl.eval.report``), laid out to stay readable when
    wide: one header cell per metric over two sub-columns "ours (95% CI)" and "paper"
    (shaded grey), the CI on its own line under our mean, "no run" where we have no number,
    and the whole table in a sideways-scrolling box with the system column kept in view."""
    from pointvl.eval.report import OURS_SUFFIX, _grid

    header, body = _grid(rows_ours, paper_rows, metrics, digits)
    labels = [h[: -len(OURS_SUFFIX)].strip() for h in header[1::2]]
    top = f'<th rowspan="2" style="{HEAD_STYLE};text-align:left">system</th>' + "".join(
        f'<th colspan="2" style="{HEAD_STYLE}">{html.escape(lab)}</th>' for lab in labels
    )
    sub = "".join(f'<th style="{HEAD_STYLE}">ours (95% CI)</th>'
                  f'<th style="{HEAD_STYLE};background:#eee">paper</th>' for _ in labels)  # fmt: skip
    sticky = "position:sticky;left:0;background:white;text-align:left"

    def ours(c: str) -> str:
        return "<br>".join(html.escape(p) for p in c.replace(" [", "\n[").split("\n"))

    rows = "".join(
        f'<tr><td style="{CELL_STYLE};{sticky}">{html.escape(r[0])}</td>'
        + "".join(
            f'<td style="{CELL_STYLE}">{ours(r[j])}</td>'
            f'<td style="{CELL_STYLE};background:#eee">{html.escape(r[j + 1])}</td>'
            for j in range(1, len(r), 2)
        )
        + "</tr>"
        for r in body
    )
    return scroll_box(f'<table style="{TABLE_STYLE}"><thead><tr>{top}</tr><tr>{sub}</tr></thead>'
                      f"<tbody>{rows}</tbody></table>")  # fmt: skip


def results_status_html(results: Mapping, produced_by: Mapping[str, str]) -> Html:
    """Which of our result files exist: system, profile and n behind it, or the command to run."""
    rows = []
    for s, res in results.items():
        meta = (res or {}).get("_meta") or {}
        n = meta.get("n") or next((v.get("n") for v in (res or {}).values() if
                                   isinstance(v, Mapping) and "n" in v), None)  # fmt: skip
        rows.append([s, "yes" if res else "missing", meta.get("profile"), n,
                     None if res else produced_by.get(s)])  # fmt: skip
    return html_table(rows, ["system", "metrics file", "profile", "test samples", "produced by"])


def _triple(cell) -> tuple | None:
    """A table cell -> (mean, lo, hi) floats (NaN where absent); a multi-seed dict cell too."""
    if cell is None:
        return None
    if isinstance(cell, Mapping):
        cell = (cell.get("mean"), cell.get("lo"), cell.get("hi"))
    return tuple(float("nan") if v is None else float(v) for v in cell)


def paper_vs_ours_figure(
    paper_rows: Mapping, rows_ours: Mapping, metrics: Sequence[str], title: str = ""
):
    """Grouped bars per metric: the paper's number (solid, labelled "paper") and ours (hatched,
    95% CI), one group per system in the paper's order; a missing number of ours says "no run"."""
    import matplotlib.pyplot as plt

    systems = list(paper_rows) + [s for s in rows_ours if s not in paper_rows]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.4), squeeze=False,
                             constrained_layout=True)  # fmt: skip
    x = np.arange(len(systems))
    for ax, m in zip(axes[0], metrics):
        paper = [(paper_rows.get(s) or {}).get(m) for s in systems]
        ours = [_triple((rows_ours.get(s) or {}).get(m)) for s in systems]
        ax.bar(x - 0.2, [p if p is not None else 0 for p in paper], 0.4, color="#bbbbbb",
               label="paper")  # fmt: skip
        for i, c in enumerate(ours):
            if c is None:
                ax.text(x[i] + 0.2, 0.02, "no run", rotation=90, fontsize=7, ha="center")
                continue
            err = [[c[0] - c[1]], [c[2] - c[0]]] if np.isfinite([c[1], c[2]]).all() else None
            ax.bar(x[i] + 0.2, c[0], 0.4, color="#4c72b0", hatch="//", yerr=err, capsize=2,
                   label="ours (95% CI)" if "ours (95% CI)" not in
                   ax.get_legend_handles_labels()[1] else None)  # fmt: skip
        ax.set_xticks(x, systems, rotation=35, ha="right", fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_title(m, fontsize=9)
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def lambda_sweep_figure(paper_rows: Mapping, ours_by_lam: Mapping, metrics=("rpc", "iou3d")):
    """Table 5 as curves over λ: the paper's numbers (dashed, "paper") and ours with 95% CIs
    where a run exists (``ours_by_lam``: {"0.15": {metric: (mean, lo, hi) | None}})."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False,
                             constrained_layout=True)  # fmt: skip
    lams = sorted((k for k in paper_rows if k[0].isdigit()), key=float)
    for ax, m in zip(axes[0], metrics):
        ax.plot([float(k) for k in lams], [paper_rows[k][m] for k in lams], "s--", color="gray",
                label="paper")  # fmt: skip
        pts = [(float(k), c[m]) for k, c in ours_by_lam.items() if (c or {}).get(m)]
        if pts:
            xs, cs = zip(*sorted(pts))
            c = np.asarray(cs, dtype=float)  # (L, 3)
            ax.errorbar(xs, c[:, 0], yerr=[c[:, 0] - c[:, 1], c[:, 2] - c[:, 0]], marker="o",
                        capsize=3, label="ours (95% CI)")  # fmt: skip
        else:
            ax.text(0.5, 0.1, "ours: no run", ha="center", transform=ax.transAxes)
        ax.set_xlabel("RPC weight λ")
        ax.set_ylabel(m)
        ax.set_title(m, fontsize=9)
        ax.legend(fontsize=7)
    return fig


def read_predictions(path: str | os.PathLike) -> dict[str, dict]:
    """``results/predictions/<system>.jsonl`` -> ``{uid: {uid, question, completion}}`` ({} if
    absent)."""
    return {r["uid"]: r for r in read_jsonl(path)}
