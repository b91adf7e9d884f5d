"""HTML tables that Jupyter renders inline and nbconvert keeps in the exported page.

``Html`` is a ``str`` with ``_repr_html_``; ``html_table`` writes a plain table (floats with 3
decimals, None as '—') inside a horizontally scrolling box, so that a wide table (Table 3 has
17 columns) stays readable on a narrow page instead of running off it.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np

TABLE_STYLE = (
    "border-collapse:collapse;font-size:12px;font-variant-numeric:tabular-nums;white-space:nowrap"
)
CELL_STYLE = "padding:2px 6px;border-bottom:1px solid #ddd;text-align:right"
HEAD_STYLE = "padding:2px 6px;border-bottom:1px solid #888;text-align:center;vertical-align:bottom"


class Html(str):
    """A string that Jupyter displays as HTML (``_repr_html_``) and prints as its source."""

    def _repr_html_(self) -> str:
        return str(self)


def fmt_cell(v: Any, digits: int = 3) -> str:
    """A table cell as escaped text: floats with ``digits`` decimals, None (or NaN) as '—'."""
    if isinstance(v, float | np.floating):
        return "—" if not np.isfinite(v) else f"{float(v):.{digits}f}"
    if v is None:
        return "—"
    return html.escape(str(v))


def scroll_box(table_html: str) -> Html:
    """Wrap a table in a box that scrolls sideways when the table is wider than the page."""
    return Html(f'<div style="overflow-x:auto;max-width:100%">{table_html}</div>')


def html_table(
    rows: Sequence[Sequence[Any]],
    columns: Sequence[str],
    shade: Sequence[bool] | None = None,
    group_header: Sequence[tuple[str, int]] | None = None,
) -> Html:
    """A table of ``rows`` under ``columns``; the first column is left-aligned.

    ``shade[j]``: grey background for column j (the paper's numbers). ``group_header``:
    an extra header row of (label, column span) pairs above ``columns``.
    """
    shade = list(shade) if shade is not None else [False] * len(columns)

    def td(v: Any, j: int, tag: str = "td") -> str:
        style = HEAD_STYLE if tag == "th" else CELL_STYLE
        if j == 0:
            style += ";text-align:left"
        if shade[j]:
            style += ";background:#eee"
        text = html.escape(str(v)) if tag == "th" else fmt_cell(v)
        return f'<{tag} style="{style}">{text}</{tag}>'

    head = ""
    if group_header:
        head += "<tr>" + "".join(
            f'<th colspan="{n}" style="{HEAD_STYLE}">{html.escape(label)}</th>'
            for label, n in group_header
        ) + "</tr>"  # fmt: skip
    head += "<tr>" + "".join(td(c, j, "th") for j, c in enumerate(columns)) + "</tr>"
    body = "".join("<tr>" + "".join(td(v, j) for j, v in enumerate(r)) + "</tr>" for r in rows)
    return scroll_box(
        f'<table style="{TABLE_STYLE}"><thead>{head}</thead><tbody>{body}</tbody></table>'
    )
