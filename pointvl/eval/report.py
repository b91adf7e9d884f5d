"""Report tables (``results/tables/*.{md,csv,tex}``) and claim sentences computed from numbers.

Every table has, per metric, a column of *our* numbers ("<metric> (ours, 95% CI)") and a
column of the *paper's* numbers ("<metric> (paper)"); a paper number is never written in
an "ours" column. A row with no run behind it says "no run" instead of a number; a number
the paper does not report says "not reported".

Claims (differences between systems with intervals over seeds, verdicts with δ) are
``pointvl.eval.results``; their statistics ``pointvl.eval.stats``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pointvl.io import atomic_write_text

__all__ = ["METRIC_LABELS", "rows_from_evaluate", "write_table"]

METRIC_LABELS = {
    "iou2d": "IoU2D",
    "iou3d": "IoU3D",
    "kpa2d": "KPA-2D",
    "kpa3d": "KPA-3D",
    "rpc": "RPC",
    "qa_acc": "QA acc",
    "qa_acc/category_mc": "QA acc (category MC)",
    "qa_acc/attribute": "QA acc (attribute)",
    "bleu1": "BLEU-1",
    "bleu2": "BLEU-2",
    "bleu3": "BLEU-3",
    "bleu4": "BLEU-4",
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    "rougeL": "ROUGE-L",
    "bertscore": "BERTScore",
    "pck2d": "PCK-2D@0.1",
    "pck3d": "PCK-3D@0.1",
    "chamfer2d": "Chamfer-2D (↓)",
    "chamfer3d": "Chamfer-3D (↓)",
    "spread2d": "KP spread 2D",
    "spread3d": "KP spread 3D",
    "collapsed3d": "collapsed-3D rate",
    "parse_fail": "parse-failure rate",
}
NO_RUN = "no run"
NOT_REPORTED = "not reported"
OURS_SUFFIX = "(ours, 95% CI)"
PAPER_SUFFIX = "(paper)"


# ----------------------------------------------------------------------------- cells
def _label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _ours(cell: Any) -> dict[str, float] | None:
    """Normalize an "ours" cell: (mean, lo, hi) or a mapping with mean/lo/hi[/std/n_seeds]."""
    if cell is None:
        return None
    if isinstance(cell, Mapping):
        d = {k: cell.get(k) for k in ("mean", "lo", "hi", "std", "n_seeds")}
    else:
        vals = list(cell)
        if len(vals) != 3:
            raise ValueError(f"an 'ours' cell must be (mean, lo, hi), got {cell!r}")
        d = {"mean": vals[0], "lo": vals[1], "hi": vals[2], "std": None, "n_seeds": None}
    return d if _finite(d["mean"]) else None


def _fmt_ours(cell: Any, digits: int) -> str:
    d = _ours(cell)
    if d is None:
        return NO_RUN
    s = f"{d['mean']:.{digits}f}"
    if _finite(d["lo"]) and _finite(d["hi"]):
        s += f" [{d['lo']:.{digits}f}, {d['hi']:.{digits}f}]"
    if _finite(d["std"]) and d.get("n_seeds"):
        s += f" ± {d['std']:.{digits}f} ({int(d['n_seeds'])} seeds)"
    return s


def _fmt_paper(value: Any, digits: int) -> str:
    return f"{float(value):.{digits}f}" if _finite(value) else NOT_REPORTED


def rows_from_evaluate(results: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict:
    """{system: ``metrics.evaluate`` output} -> {system: {metric: (mean, lo, hi)}}."""
    return {
        system: {m: (v["mean"], v["lo"], v["hi"]) for m, v in metrics.items()}
        for system, metrics in results.items()
    }


# ----------------------------------------------------------------------------- table
def _grid(
    rows_ours: Mapping[str, Mapping[str, Any]],
    paper_rows: Mapping[str, Mapping[str, Any]],
    metrics: Sequence[str],
    digits: int,
    paper_columns: bool = True,
) -> tuple[list[str], list[list[str]]]:
    systems = list(paper_rows) + [s for s in rows_ours if s not in paper_rows]
    header = ["system"]
    for m in metrics:
        header += [f"{_label(m)} {OURS_SUFFIX}"]
        header += [f"{_label(m)} {PAPER_SUFFIX}"] if paper_columns else []
    body = []
    for s in systems:
        ours, paper = rows_ours.get(s) or {}, paper_rows.get(s) or {}
        row = [s]
        for m in metrics:
            row += [_fmt_ours(ours.get(m), digits)]
            row += [_fmt_paper(paper.get(m), digits)] if paper_columns else []
        body.append(row)
    return header, body


def _tex_escape(s: str) -> str:
    repl = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
            "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
            "±": r"$\pm$", "↓": r"$\downarrow$", "−": "--"}  # fmt: skip
    return "".join(repl.get(c, c) for c in s)


def _default_metrics(rows_ours: Mapping, paper_rows: Mapping) -> list[str]:
    """The paper's metrics in first-seen order, then any others of ours."""
    metrics: list[str] = []
    for table in (paper_rows, rows_ours):
        for row in table.values():
            metrics += [m for m in (row or {}) if m not in metrics]
    return metrics


def _markdown(name, caption, header, body, notes, paper_columns: bool) -> str:
    """The Markdown table: title, a sentence on whose numbers the columns hold, rows, notes."""
    md = [f"# {caption or name}", ""]
    if paper_columns:
        md.append("Columns marked (paper) are the numbers the paper reports, copied from "
                  "`paper/reported.yaml`; they are not ours. " + OURS_SUFFIX + " columns are "
                  "this pipeline's test-set numbers with a 95% bootstrap CI over samples.")  # fmt: skip
    else:
        md.append("The paper reports no numbers for this table: every column is ours.")
    md += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    if notes:
        md += ["", *[f"- {n}" for n in notes]]
    return "\n".join(md) + "\n"


_CSV_HEADER = ["system", "metric", "source", "mean", "ci_lo", "ci_hi", "std_over_seeds",
              "n_seeds", "status"]  # fmt: skip
"""Columns of the long-form CSV: one value per line, its source explicit."""


def _csv(systems: Sequence[str], metrics: Sequence[str], rows_ours, paper_rows) -> str:
    """The long-form CSV: per system and metric an "ours" line, and a "paper" line for the
    paper's systems (``_CSV_HEADER`` columns)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_CSV_HEADER)
    for s in systems:
        for m in metrics:
            d = _ours((rows_ours.get(s) or {}).get(m))
            if d is None:
                w.writerow([s, m, "ours", "", "", "", "", "", NO_RUN])
            else:
                w.writerow([s, m, "ours", d["mean"], d["lo"], d["hi"],
                            d["std"] if _finite(d["std"]) else "", d["n_seeds"] or "", "ok"])  # fmt: skip
            p = (paper_rows.get(s) or {}).get(m)
            if s in paper_rows:
                w.writerow([s, m, "paper", p if _finite(p) else "", "", "", "", "",
                            "ok" if _finite(p) else NOT_REPORTED])  # fmt: skip
    return buf.getvalue()


def _latex(name, caption, header, body, notes, n_metrics: int, paper_columns: bool) -> str:
    """The LaTeX tabular (booktabs), with the caption and notes as comments."""
    tex = [f"% {name}: (paper) columns are the paper's reported numbers, not ours.",
           r"\begin{tabular}{l" + ("cc" if paper_columns else "c") * n_metrics + "}", r"\toprule",
           " & ".join(_tex_escape(h) for h in header) + r" \\", r"\midrule"]  # fmt: skip
    tex += [" & ".join(_tex_escape(c) for c in row) + r" \\" for row in body]
    tex += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        tex.insert(1, f"% {caption}")
    tex += [f"% {n}" for n in notes]
    return "\n".join(tex) + "\n"


def write_table(
    name: str,
    rows_ours: Mapping[str, Mapping[str, Any]],
    paper_rows: Mapping[str, Mapping[str, Any]],
    out_dir: str | Path,
    metrics: Sequence[str] | None = None,
    notes: Sequence[str] = (),
    caption: str = "",
    digits: int = 3,
    paper_columns: bool = True,
) -> dict[str, Path]:
    """Write ``out_dir/<name>.md``, ``.csv`` and ``.tex``; returns their paths.

    rows_ours   {system: {metric: (mean, lo, hi) | {"mean", "lo", "hi", "std"?, "n_seeds"?}
                | None}}; a system or metric absent / None / NaN is shown as "no run".
    paper_rows  {system: {metric: value | None}} as in ``paper/reported.yaml``; shown only
                in "(paper)" columns. Systems only the paper has get "no run" in ours.
    metrics     column order; default: the paper's metrics, then any others of ours.
    Rows: the paper's systems in its order, then systems only we ran (e.g. trivial ones).
    notes       sentences (e.g. ``claim_sentence`` output) written under the table in the
                Markdown and LaTeX files.
    The CSV is long-form with a ``source`` column ("ours" / "paper") per value.
    paper_columns  False: a table of ours only (a task the paper does not have); no
                "(paper)" columns and ``paper_rows`` must be empty.
    """
    if not paper_columns and paper_rows:
        raise ValueError("write_table: paper_columns=False but paper_rows given")
    if metrics is None:
        metrics = _default_metrics(rows_ours, paper_rows)
    header, body = _grid(rows_ours, paper_rows, metrics, digits, paper_columns)
    out_dir = Path(out_dir)
    md = _markdown(name, caption, header, body, notes, paper_columns)
    paths = {"md": atomic_write_text(out_dir / f"{name}.md", md)}
    systems = [row[0] for row in body]
    paths["csv"] = atomic_write_text(
        out_dir / f"{name}.csv", _csv(systems, metrics, rows_ours, paper_rows)
    )
    tex = _latex(name, caption, header, body, notes, len(metrics), paper_columns)
    paths["tex"] = atomic_write_text(out_dir / f"{name}.tex", tex)
    return paths
