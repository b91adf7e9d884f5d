"""Run the paper_sim rehearsal end to end and record what it took (make rehearsal).

    python scripts/rehearsal.py [--no-force] [--out results/paper_sim/rehearsal.json]

``dvc repro --force studies/paper_sim/dvc.yaml`` (every stage, even if up to date) with one
BLAS thread per process (2 processes share 2 cores) and DeepSpeed's JIT op cached in
``.cache/torch_extensions``; then writes the wall time, the CPU time of every process it
started (user + system, ``RUSAGE_CHILDREN``), the machine's load before and after (other work
on the same cores stretches the wall time, not the CPU time), the niceness, and the stages
DVC ran.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = "studies/paper_sim/dvc.yaml"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-force", action="store_true", help="only the stages that changed")
    ap.add_argument("--out", default=str(ROOT / "results/paper_sim/rehearsal.json"))
    args = ap.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1",
           "TORCH_EXTENSIONS_DIR": str(ROOT / ".cache/torch_extensions")}  # fmt: skip
    env.pop("POINTVL_PROFILE", None)  # the study's own profile (paper_sim)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    cmd = ["dvc", "repro", *([] if args.no_force else ["--force"]), PIPELINE]
    load0, t0 = os.getloadavg(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.stderr.write(log[-5000:])
        raise SystemExit(f"rehearsal: dvc repro failed (exit {proc.returncode})")
    stages = re.findall(r"Running stage '[^:]+:([^']+)'", log)
    record = {
        "command": " ".join(cmd),
        "stages_run": stages,
        "wall_s": round(wall, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "cpu_user_s": round(usage.ru_utime, 1),
        "cpu_system_s": round(usage.ru_stime, 1),
        "max_rss_gib_one_process": round(usage.ru_maxrss / 2**20, 2),
        "nice": os.nice(0),
        "load_avg_1min_before_after": [round(load0[0], 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "note": "wall time stretches with other work on the same cores (see the load); "
        "cpu_s is the work itself",  # fmt: skip
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
