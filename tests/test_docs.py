"""The README's numbers are generated from results/ (pointvl.docs) and must be current."""

from __future__ import annotations

import json
from pathlib import Path

from pointvl.docs import main, render, results_table

ROOT = Path(__file__).resolve().parent.parent


def test_readme_numbers_are_what_results_say():
    assert main(["--check"]) == 0, "README.md is stale: run python -m pointvl.docs"


def test_blocks_follow_the_metrics_files(tmp_path):
    eval_dir = tmp_path / "metrics" / "eval"
    eval_dir.mkdir(parents=True)
    (eval_dir / "grca.json").write_text(json.dumps({
        "_meta": {"n": 7}, "iou3d": {"mean": 0.25}, "parse_fail": {"mean": 0.125}}))  # fmt: skip
    (tmp_path / "metrics" / "sft.json").write_text(json.dumps({"params": 2_000_000}))
    (tmp_path / "metrics" / "sft.run.json").write_text(json.dumps({"wall_s": 600}))
    table = results_table(tmp_path)
    assert table.splitlines()[2] == "| GRCA |  | 0.250 |  |  |  |  | 12.5% | 7 |"
    text = ("a\n<!-- results:table -->\nold\n<!-- /results:table -->\n"
            "<!-- results:facts -->\n<!-- /results:facts -->\n")  # fmt: skip
    out = render(text, tmp_path)
    assert "| GRCA |" in out and "old" not in out and "2.00 M parameters; SFT took 10 min" in out
    assert render(out, tmp_path) == out  # idempotent
