"""The numbers the README states, generated from ``results/`` (so the docs cannot drift).

    python -m pointvl.docs            # rewrite the generated blocks of README.md
    python -m pointvl.docs --check    # exit 1 if README.md is not what results/ says

A generated block sits between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``:

- ``table``: our systems on the test split, one row per metrics file that exists
  (``results/metrics/eval/<system>.json``: mean of the per-sample metric; systems, seeds and
  CIs in full are in ``results/tables/``);
- ``facts``: model size and run times from the stages' metrics (``results/metrics/*.json``
  and their ``.run.json``).

A number in the README outside these blocks is a paper number or a design value.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("iou2d", "iou3d", "kpa2d", "kpa3d", "rpc", "pck3d", "parse_fail")
HEADER = ("IoU2D", "IoU3D", "KPA-2D", "KPA-3D", "RPC", "PCK-3D", "parse fail")
SYSTEMS = (
    ("sft", "SFT"),
    ("sft_budget", "SFT budget-matched"),
    ("grpo", "GRPO (broadcast)"),
    ("gdpo", "GDPO (per-field, broadcast)"),
    ("grca", "GRCA"),
    ("grca_rpc", "GRCA + RPC (λ 0.15)"),
    ("pointnet", "PointNet regressor"),
    ("pointnet2", "PointNet++ regressor"),
    ("pointbert", "Point-BERT regressor"),
)
TRIVIAL = (  # the non-learned ceiling (box and keypoints read off the cloud) and the KPA hack
    "trivial: cloud AABB (no learning)",
    "trivial: cloud AABB + FPS keypoints (no learning)",
    "trivial: keypoints at box centre",
)


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _cell(result: dict, metric: str) -> str:
    value = (result.get(metric) or {}).get("mean")
    if value is None:
        return ""
    return f"{100 * value:.1f}%" if metric == "parse_fail" else f"{value:.3f}"


def results_table(results: Path = ROOT / "results") -> str:
    """Markdown table of our systems' test means (seed 0), from the evaluate / baseline /
    eval_trivial metrics files; a system without a file is left out."""
    eval_dir = results / "metrics" / "eval"
    rows = []
    for system, name in SYSTEMS:
        result = _read(eval_dir / f"{system}.json")
        if result:
            n = (result.get("_meta") or {}).get("n", "")
            rows.append([name, *(_cell(result, m) for m in METRICS), str(n)])
    trivial = _read(eval_dir / "trivial.json") or {}
    for name in TRIVIAL:
        if name in trivial:
            rows.append([name, *(_cell(trivial[name], m) for m in METRICS), ""])
    lines = ["| ours | " + " | ".join(HEADER) + " | n |", "|---" * (len(HEADER) + 2) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def run_facts(results: Path = ROOT / "results") -> str:
    """One sentence of facts from the stage metrics: model size, SFT and dataset times."""
    metrics = results / "metrics"

    def fact(name: str, key: str):
        for suffix in (".json", ".run.json"):
            value = (_read(metrics / f"{name}{suffix}") or {}).get(key)
            if value is not None:
                return value
        return None

    parts = []
    if (params := fact("sft", "params")) is not None:
        parts.append(f"the policy has {params / 1e6:.2f} M parameters")
    if (wall := fact("sft", "wall_s")) is not None:
        steps = fact("sft", "steps")
        parts.append(f"SFT took {wall / 60:.0f} min" + (f" ({steps} steps)" if steps else ""))
    if (seconds := fact("build_dataset", "seconds")) is not None:
        parts.append(f"building the dataset {seconds / 60:.1f} min")
    profile = fact("sft", "profile") or fact("build_dataset", "profile") or "?"
    if not parts:
        return "(no stage metrics in results/ yet)"
    return f"Recorded by the `{profile}` run on a 2-core CPU: " + "; ".join(parts) + "."


BLOCKS = {"table": results_table, "facts": run_facts}


def render(text: str, results: Path = ROOT / "results") -> str:
    """``text`` with every generated block replaced by what ``results`` says now."""
    for name, make in BLOCKS.items():
        pattern = re.compile(
            rf"(<!-- results:{name} -->\n)(?:.*?\n)?(<!-- /results:{name} -->)", re.S
        )
        text = pattern.sub(
            lambda m, make=make: m.group(1) + make(results) + "\n" + m.group(2), text
        )
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Regenerate the README's numbers from results/.")
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    ap.add_argument("--check", action="store_true", help="exit 1 if the README is stale")
    args = ap.parse_args(argv)
    path = Path(args.readme)
    old = path.read_text()
    new = render(old)
    if args.check:
        if new != old:
            print(f"{path} is stale: run python -m pointvl.docs", file=sys.stderr)
            return 1
        return 0
    path.write_text(new)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
