"""Report tables: paper numbers only under a 'paper' label; missing runs say so; claims."""

from __future__ import annotations

import csv

import pytest

from pointvl.eval.report import write_table

PAPER = {
    "GRPO (broadcast reward)": {"iou3d": 0.684, "kpa3d": 0.890, "rpc": 0.841},
    "GRCA": {"iou3d": 0.683, "kpa3d": 0.930, "rpc": None},
    "PointNet": {"iou3d": 0.492, "kpa3d": 0.923, "rpc": 0.810},
}
OURS = {
    "GRPO (broadcast reward)": {"iou3d": (0.511, 0.481, 0.542), "kpa3d": (0.771, 0.752, 0.79)},
    "GRCA": {
        "iou3d": {"mean": 0.522, "lo": 0.493, "hi": 0.551, "std": 0.012, "n_seeds": 3},
        "kpa3d": (0.812, 0.795, 0.829),
        "rpc": None,
    },
    "trivial: train-mean box": {"iou3d": (0.301, 0.29, 0.312), "kpa3d": (0.655, 0.64, 0.67)},
}
PAPER_STRINGS = {"0.684", "0.890", "0.841", "0.683", "0.930", "0.492", "0.923", "0.810"}


@pytest.fixture()
def tables(tmp_path):
    paths = write_table("table3", OURS, PAPER, tmp_path, metrics=["iou3d", "kpa3d", "rpc"],
                        notes=["GRCA − GRPO on KPA-3D: example."])  # fmt: skip
    return paths


def _md_grid(path):
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("| ")]
    split = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines]
    return split[0], split[1:]


def test_paper_numbers_only_in_paper_columns(tables):
    header, body = _md_grid(tables["md"])
    seen = set()
    for row in body:
        for col, cell in zip(header, row):
            for s in PAPER_STRINGS:
                if s in cell:
                    assert col.endswith("(paper)"), (col, cell)
                    seen.add(s)
            if col.endswith("(paper)") and cell not in ("not reported",):
                assert cell in PAPER_STRINGS, (col, cell)
    assert seen == PAPER_STRINGS
    rows = list(csv.DictReader(tables["csv"].open()))
    for r in rows:
        if r["mean"] and f"{float(r['mean']):.3f}" in PAPER_STRINGS:
            assert r["source"] == "paper", r
    assert {r["source"] for r in rows} == {"ours", "paper"}
    tex = tables["tex"].read_text()
    assert "IoU3D (paper)" in tex and "IoU3D (ours, 95\\% CI)" in tex


def test_cells_without_a_run_say_so(tables):
    header, body = _md_grid(tables["md"])
    rows = {r[0]: dict(zip(header, r)) for r in body}
    assert rows["PointNet"]["IoU3D (ours, 95% CI)"] == "no run"  # paper-only system
    assert rows["GRCA"]["RPC (ours, 95% CI)"] == "no run"
    assert rows["GRCA"]["RPC (paper)"] == "not reported"
    assert rows["trivial: train-mean box"]["IoU3D (paper)"] == "not reported"
    assert rows["GRCA"]["IoU3D (ours, 95% CI)"] == "0.522 [0.493, 0.551] ± 0.012 (3 seeds)"
    csv_rows = list(csv.DictReader(tables["csv"].open()))
    pn = [r for r in csv_rows if r["system"] == "PointNet" and r["source"] == "ours"]
    assert pn and all(r["status"] == "no run" and r["mean"] == "" for r in pn)
    assert "GRCA − GRPO on KPA-3D: example." in tables["md"].read_text()
