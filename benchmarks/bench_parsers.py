"""Worst-case time of the two parsers on adversarial text, and their scaling with its size.

    python benchmarks/bench_parsers.py [--sizes 262144 524288 1048576] [--repeats 2]

One core (affinity). For every text of ``pointvl.fuzz.worst_cases`` (deep or unclosed
nesting, repeated fences and braces, lists of lists, huge numbers, ...) at each size:
CPU seconds of ``schema.parse_output`` and ``eval.zeroshot.parse_reply`` (best of
``repeats``). Linear time shows as a ratio of about 2 between consecutive doublings.
Also: microseconds per ordinary completion, and json_repair's own time on 2 / 4 / 8 KiB of
"{" (why parse_reply caps it at 2 KiB per reply). Writes results/bench/parsers.json.
Target: every 1 MB worst case parses in under 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from pointvl import fuzz
from pointvl.demo import demo_completions, demo_target
from pointvl.eval.zeroshot import parse_reply
from pointvl.io import atomic_write_json
from pointvl.schema import parse_output

ROOT = Path(__file__).resolve().parent.parent
PARSERS = {"parse_output": parse_output, "parse_reply": parse_reply}


def cpu_seconds(fn, text: str, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn(text)
        best = min(best, time.process_time() - t0)
    return best


def worst_case_times(sizes: list[int], repeats: int) -> dict:
    """{parser: {case: {size: seconds}}}."""
    out: dict = {name: {} for name in PARSERS}
    for size in sizes:
        for case, text in fuzz.worst_cases(size).items():
            for name, fn in PARSERS.items():
                out[name].setdefault(case, {})[str(size)] = cpu_seconds(fn, text, repeats)
    return out


def ordinary_us(repeats: int) -> dict:
    """Microseconds per ordinary completion (the demo's eight cases over 64 objects)."""
    texts = [t for p in range(64) for t in demo_completions(demo_target(p), 100, seed=p)]
    out = {}
    for name, fn in PARSERS.items():
        best = min(
            cpu_seconds(lambda _, f=fn: [f(t) for t in texts], "", 1) for _ in range(repeats)
        )
        out[name] = 1e6 * best / len(texts)
    return out


def json_repair_seconds() -> dict:
    import json_repair

    def repair(text: str) -> None:
        try:
            json_repair.loads(text, skip_json_loads=True)
        except ValueError:  # it gives up on deep nesting, after the time measured
            pass

    return {str(n): cpu_seconds(repair, "{" * n, 1) for n in (2048, 4096, 8192)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[262_144, 524_288, 1_048_576])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "results/bench/parsers.json"))
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    times = worst_case_times(args.sizes, args.repeats)
    big = str(max(args.sizes))
    worst = {name: max(t[big] for t in cases.values()) for name, cases in times.items()}
    result = {
        "sizes": args.sizes,
        "cpu_seconds": times,
        "worst_cpu_seconds_at_largest": worst,
        "worst_case_at_largest": {
            name: max(cases, key=lambda c: cases[c][big]) for name, cases in times.items()
        },
        "ordinary_completion_us": ordinary_us(args.repeats),
        "json_repair_seconds_on_open_braces": json_repair_seconds(),
        "target_seconds_at_1mb": 1.0,
        "meets_target": all(v < 1.0 for v in worst.values()),
        "cores": 1,
        "machine": platform.processor() or platform.machine(),
    }
    atomic_write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("worst_cpu_seconds_at_largest",
                                             "worst_case_at_largest", "meets_target")}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
