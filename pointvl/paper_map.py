"""The paper map: section <-> notebook <-> modules <-> DVC stages, from ``paper/map.yaml``.

``paper/map.yaml`` is the source of truth (one entry per paper section, with a ``status`` of
``landed`` or ``planned``); ``write_markdown`` renders it as the table ``paper/map.md`` that the
overview notebook (``notebooks/00_overview.py``) displays and regenerates.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from pointvl.io import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
MAP_YAML = ROOT / "paper" / "map.yaml"
MAP_MD = ROOT / "paper" / "map.md"
KEYS = ("section", "notebook", "modules", "stages", "status")


def load_map(path: str | os.PathLike | None = None) -> list[dict]:
    """Entries of ``paper/map.yaml`` as dicts with keys ``KEYS``; lists stay lists.

    Raises ``ValueError`` naming the entry when a key is missing.
    """
    path = Path(path) if path is not None else MAP_YAML
    entries = yaml.safe_load(path.read_text()) or []
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of entries, got {type(entries).__name__}")
    for i, entry in enumerate(entries):
        missing = [k for k in KEYS if k not in entry]
        if missing:
            raise ValueError(f"{path}: entry {i} ({entry.get('section')!r}) lacks {missing}")
    return entries


def _cell(value) -> str:
    """One table cell: lists joined by '<br>', code names in backticks, '—' when empty."""
    if isinstance(value, list | tuple):
        return "<br>".join(f"`{v}`" for v in value) if value else "—"
    return str(value).replace("|", "\\|")


def _notebooks(value) -> str:
    """'07_ablations, 08_results' -> '`07_ablations`, `08_results`'."""
    return ", ".join(f"`{n.strip()}`" for n in str(value).split(","))


def to_markdown(entries: list[dict]) -> str:
    """A markdown table, one row per entry, columns section | notebook | modules | stages | status."""
    lines = [
        "| Paper section | Notebook | Modules | DVC stages | Status |",
        "|---|---|---|---|---|",
    ]
    for e in entries:
        row = [
            _cell(e["section"]),
            _notebooks(e["notebook"]),
            _cell(e["modules"]),
            _cell(e["stages"]),
            _cell(e["status"]),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(
    path: str | os.PathLike | None = None, map_path: str | os.PathLike | None = None
) -> Path:
    """Render ``paper/map.yaml`` to ``paper/map.md`` (or ``path``), atomically. Returns the path."""
    header = (
        "# Paper map: section <-> notebook <-> module <-> DVC stage\n\n"
        "Generated from `paper/map.yaml` by `pointvl.paper_map.write_markdown` "
        "(run by `notebooks/00_overview.py`); edit the YAML, not this file.\n\n"
    )
    text = header + to_markdown(load_map(map_path))
    out = atomic_write_text(path if path is not None else MAP_MD, text)
    out.chmod(0o644)  # a file for readers (mkstemp creates 0600)
    return out
