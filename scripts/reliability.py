"""How bad input fails, measured: writes results/reliability.json (issue 14).

    python scripts/reliability.py [--fuzz 10000] [--locality 20] [--quick] [--out FILE]

Five parts, each rerunnable by anyone (seeded; nothing downloaded; a few minutes on 2 cores):

- ``fuzz``: token soup (``pointvl.fuzz.garbage``) through both parsers. Counted: exceptions
  out of the public parsers (must be 0), exceptions their last-resort guards caught (parser
  bugs hidden as "no_json"; should be 0), and exceptions caught inside one field's check.
- ``locality``: for every field x every ``fuzz.FAULTS`` fault, completions with that one
  field broken; a violation is any other field not parsed exactly as written (value, span).
- ``worst_case_parse_seconds``: CPU seconds of each parser on each 1 MB ``fuzz.worst_cases``.
- ``bad_configs``: each stage run in-process on a bad params file or flag; recorded: exit
  code, the first stderr line, whether a traceback came out, whether a file was written.
- ``crash_resume``: ``kill -9`` mid ``build_dataset`` (smoke, over a previous complete build)
  and mid ``sft`` (smoke, after a checkpoint), then the rerun / ``--resume``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pointvl import fuzz, schema  # noqa: E402
from pointvl.eval import zeroshot  # noqa: E402
from pointvl.io import atomic_write_json  # noqa: E402
from pointvl.schema import FIELDS, parse_output, parse_output_unguarded  # noqa: E402
from pointvl.stages._cli import redirect_outputs  # noqa: E402

REPLY_FIELDS = ("bbox2d", "kpts2d")


# ----------------------------------------------------------------------------- parsers
@contextlib.contextmanager
def count_field_guards(counter: Counter):
    """Count exceptions that the per-field guards of both parsers catch."""
    validate, guarded = schema._validate, zeroshot._guarded

    def counting_validate(*a, **k):
        try:
            return validate(*a, **k)
        except Exception as err:
            counter[f"parse_output field check: {type(err).__name__}"] += 1
            raise

    def counting_guarded(find, value):
        try:
            return find(value)
        except Exception as err:  # noqa: BLE001
            counter[f"parse_reply field search: {type(err).__name__}"] += 1
        return guarded(find, value)

    schema._validate, zeroshot._guarded = counting_validate, counting_guarded
    try:
        yield
    finally:
        schema._validate, zeroshot._guarded = validate, guarded


def fuzz_parsers(n: int, seed: int = 0) -> dict:
    rnd = random.Random(seed)
    public, guarded, fields = Counter(), Counter(), Counter()
    with count_field_guards(fields):
        for _ in range(n):
            text = fuzz.garbage(rnd, rnd.randint(0, 300))
            m = rnd.choice([None, 1, 16])
            for name, fn in (("parse_output", parse_output), ("parse_reply", zeroshot.parse_reply)):
                try:
                    fn(text, m)
                except Exception as err:  # noqa: BLE001
                    public[f"{name}: {type(err).__name__}"] += 1
            for name, fn in (
                ("parse_output", parse_output_unguarded),
                ("parse_reply", zeroshot._parse),
            ):
                try:
                    fn(text, m)
                except Exception as err:  # noqa: BLE001
                    guarded[f"{name}: {type(err).__name__}"] += 1
    return {
        "cases": n,
        "parsers": ["parse_output", "parse_reply"],
        "exceptions_raised": sum(public.values()),
        "exceptions_raised_by_type": dict(public),
        "exceptions_caught_by_last_resort_guard": sum(guarded.values()),
        "exceptions_caught_by_last_resort_guard_by_type": dict(guarded),
        "exceptions_caught_inside_one_field": dict(fields),
    }


def locality(per_cell: int, seed: int = 0) -> dict:
    """Break one field with each fault; count other fields not parsed exactly as written."""
    rnd = random.Random(seed)
    out = {}
    for parser, fields in (("parse_output", FIELDS), ("parse_reply", REPLY_FIELDS)):
        cases = violations = 0
        examples = []
        for broken in fields:
            for fault in fuzz.FAULTS:
                for _ in range(per_cell):
                    if parser == "parse_output":
                        case = fuzz.completion(rnd, broken=broken, fault=fault)
                        ok = _others_survive_output(case, broken)
                    else:
                        case = fuzz.completion(rnd, REPLY_FIELDS, None, broken, fault, True)
                        ok = _other_survives_reply(case, broken)
                    cases += 1
                    if not ok:
                        violations += 1
                        if len(examples) < 5:
                            examples.append(
                                {"broken": broken, "fault": fault, "text": case.text[:300]}
                            )
        out[parser] = {"cases": cases, "violations": violations, "examples": examples}
    out["faults"] = list(fuzz.FAULTS)
    return out


def _others_survive_output(case, broken) -> bool:
    p = parse_output(case.text, num_keypoints=None)
    if p.errors[broken] is None:
        return False
    for name in FIELDS:
        if name == broken:
            continue
        if p.errors[name] is not None or p.char_spans[name] != case.spans[name]:
            return False
        want = case.values[name]
        if isinstance(want, str) and p.values[name] != want:
            return False
        if not isinstance(want, str) and not np.array_equal(p.values[name], want):
            return False
    return True


def _other_survives_reply(case, broken) -> bool:
    r = zeroshot.parse_reply(case.text)
    (other,) = (f for f in REPLY_FIELDS if f != broken)
    got = r.bbox2d if other == "bbox2d" else r.kpts2d
    return r.errors[other] is None and np.array_equal(got, np.asarray(case.values[other], float))


def worst_case_seconds(size: int) -> dict:
    out = {}
    for name, fn in (("parse_output", parse_output), ("parse_reply", zeroshot.parse_reply)):
        times = {}
        for case, text in fuzz.worst_cases(size).items():
            t0 = time.process_time()
            fn(text)
            times[case] = round(time.process_time() - t0, 4)
        out[name] = {"max": max(times.values()), "worst": max(times, key=times.get), "all": times}
    out["size_chars"] = size
    return out


# ----------------------------------------------------------------------------- bad configs
RAW = yaml.safe_load((ROOT / "params.yaml").read_text())


def _smoke(section, **values):
    return lambda r: r["overrides"]["smoke"].setdefault(section, {}).update(values)


def _top(section, value):
    return lambda r: r.update({section: value})


BAD_YAML = "profile: tiny\nsft:\n  epochs: [1, 2\n  seed: 0\n"
# (stage, mutation of params.yaml or raw YAML text, extra argv, what is wrong)
CONFIG_CASES = [
    ("build_dataset", BAD_YAML, [], "bad YAML"),
    ("build_dataset", _top("build_dataset", 5), [], "section given as a scalar"),
    ("build_dataset", _smoke("build_dataset", workers=True), [], "workers: true"),
    ("build_dataset", _smoke("build_dataset", num_points=256.5), [], "num_points: 256.5"),
    ("build_dataset", _smoke("build_dataset", image_size="big"), [], "image size as text"),
    ("build_dataset", _smoke("build_dataset", source="blender"), [], "unknown source"),
    ("build_dataset", _smoke("build_dataset", train_count=0, test_count=0), [], "0 instances asked"),
    ("build_dataset", None, ["--workers", "-2"], "--workers -2"),
    ("build_dataset", None, ["--out", "{tmp}/my_thesis"], "--out a non-dataset folder"),
    ("build_dataset", _smoke("schema", quant_bins=1.5), [], "quantisation bins 1.5"),
    ("build_dataset", lambda r: r["shared"]["image_size"].pop("smoke"), [], "shared row lacks a profile"),
    ("build_dataset", lambda r: r["build_dataset"].update(image_size="${shared.img}"), [], "unknown shared name"),
    ("train_tokenizer", BAD_YAML, [], "bad YAML"),
    ("train_tokenizer", _smoke("train_tokenizer", vocab_size="big"), [], "vocab size as text"),
    ("train_tokenizer", _smoke("train_tokenizer", splits=["test"]), [], "tokenizer on the test split"),
    ("eval_trivial", _smoke("eval_trivial", n_boot=float("nan")), [], "n_boot NaN"),
    ("eval_trivial", _smoke("eval_trivial", seed="zero"), [], "seed as text"),
    ("baseline", _smoke("baselines", epochs=0), ["--name", "pointnet"], "epochs 0"),
    ("baseline", _smoke("baselines", learning_rate=float("nan")), ["--name", "pointnet"], "learning rate NaN"),
    ("baseline", None, ["--name", "pointnet3"], "unknown baseline"),
    ("baseline", _smoke("model", group_size=16), ["--name", "pointbert"], "old key model.group_size"),
    ("zeroshot", _smoke("zeroshot", device="gpu"), [], "device gpu"),
    ("zeroshot", _smoke("zeroshot", limit=-1), [], "limit -1"),
    ("zeroshot", _smoke("zeroshot", trust_remote_code="yes"), [], "bool as text"),
    ("zeroshot", None, ["--only", "GPT-5"], "--only an unknown row"),
    ("sft", None, ["--max-steps", "-7"], "--max-steps -7"),
    ("sft", None, ["--max-steps", "abc"], "--max-steps abc"),
    ("sft", _smoke("sft", learning_rate=float("nan")), [], "learning rate NaN"),
    ("sft", _smoke("sft", per_device_batch_size=0), [], "batch size 0"),
    ("sft", _top("sft", [1, 2]), [], "section given as a list"),
    ("sft", _smoke("sft", tokenizer_dir="/nonexistent"), [], "no tokenizer there"),
    ("notebook", _smoke("notebooks", fast="no"), ["--name", "00_overview"], 'fast: "no"'),
    ("notebook", None, ["--name", "99_nope"], "unknown notebook"),
    # stages the lead converts next (their own main for now): what happens today
    ("rl", _smoke("rl", temperature=0.0), [], "temperature 0"),
    ("rl", None, ["--max-steps", "-7"], "--max-steps -7"),
    ("evaluate", _smoke("evaluate", batch_size="x"), ["--system", "sft"], "batch size as text"),
    ("report", _smoke("report", n_boot=float("nan")), [], "n_boot NaN"),
]  # fmt: skip


def _params_file(tmp: Path, change) -> Path:
    """A params file: the repo's, smoke outputs sandboxed under ``tmp``, then ``change``."""
    path = tmp / f"params_{len(list(tmp.glob('params_*.yaml')))}.yaml"
    if isinstance(change, str):
        path.write_text(change)
        return path
    raw = redirect_outputs(RAW, tmp / "sandbox", "smoke")
    if change is not None:
        change(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _snapshot() -> dict:
    return {str(p): p.stat().st_mtime_ns for p in (ROOT / "results").rglob("*") if p.is_file()}


def bad_configs() -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for stage, change, argv, what in CONFIG_CASES:
            module = importlib.import_module(f"pointvl.stages.{stage}")
            params = _params_file(tmp, change)
            shutil.rmtree(tmp / "sandbox", ignore_errors=True)
            (tmp / "my_thesis").mkdir(exist_ok=True)
            (tmp / "my_thesis" / "chapter1.tex").write_text("precious")
            shown, argv = argv, [a.replace("{tmp}", str(tmp)) for a in argv]
            before = _snapshot()
            err = io.StringIO()
            code, crash = 0, None
            t0 = time.perf_counter()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    module.main(["--params", str(params), "--profile", "smoke", *argv])
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else 1
                    if not isinstance(e.code, int) and e.code is not None:
                        print(e.code, file=sys.stderr)  # what Python prints for SystemExit(str)
                except Exception:  # noqa: BLE001 - what Python would print: a traceback
                    code, crash = 1, traceback.format_exc()
                    print(crash, file=sys.stderr)
            lines = err.getvalue().replace(str(tmp), "<tmp>").strip().splitlines()
            rows.append({
                "stage": stage, "case": what, "argv": shown, "exit_code": code,
                "first_line": lines[0] if lines else "",
                "last_line": lines[-1] if lines else "", "stderr_lines": len(lines),
                "traceback": crash is not None or any("Traceback" in x for x in lines),
                "files_changed_under_results": sorted(set(_snapshot().items()) - set(before.items())) != [],
                "files_written_in_sandbox": sorted(
                    str(p.relative_to(tmp)) for p in (tmp / "sandbox").rglob("*") if p.is_file()
                ) if (tmp / "sandbox").exists() else [],
                "seconds": round(time.perf_counter() - t0, 2),
            })  # fmt: skip
    return rows


# ----------------------------------------------------------------------------- crash and resume
def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "POINTVL_PROFILE": "smoke",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONHASHSEED": "0",
            "OPEN3D_DISABLE_WEB_VISUALIZER": "true"}  # fmt: skip


def _stage(name: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"pointvl.stages.{name}", *argv], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=900)  # fmt: skip


def _for(seconds: float, cond):
    """A condition that holds once ``cond`` has held for ``seconds``."""
    since: list[float] = []

    def ready() -> bool:
        if not cond():
            return False
        since.append(since[0] if since else time.perf_counter())
        return time.perf_counter() - since[0] >= seconds

    return ready


def _kill_when(name: str, argv: list[str], ready, timeout: float = 600) -> dict:
    """Start a stage, ``kill -9`` it once ``ready()`` is true; -> what happened."""
    proc = subprocess.Popen([sys.executable, "-m", f"pointvl.stages.{name}", *argv], cwd=ROOT,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    t0 = time.perf_counter()
    while not ready():
        if proc.poll() is not None or time.perf_counter() - t0 > timeout:
            proc.kill()
            return {"killed": False, "returncode": proc.returncode}
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return {
        "killed": True,
        "after_s": round(time.perf_counter() - t0, 1),
        "returncode": proc.returncode,
    }


def crash_resume(tmp: Path) -> dict:
    from pointvl.data.dataset import PointVLDataset, read_manifest

    small = {"train_count": 24, "test_count": 8, "figure_samples": 0, "workers": 1,
             "out_dir": str(tmp / "data"), "metrics": str(tmp / "m/build.json")}  # fmt: skip
    p0 = _params_file(tmp, _smoke("build_dataset", **small))
    p1 = _params_file(tmp, _smoke("build_dataset", **{**small, "train_count": 96}, seed=1))
    out: dict = {}
    # --- build_dataset: a complete build, then a rebuild killed mid-way, then rerun
    first = _stage("build_dataset", "--params", str(p0), "--no-progress")
    hash0 = read_manifest(tmp / "data")["content_hash"] if first.returncode == 0 else None
    temps = lambda: list(tmp.glob(".data.*.tmp"))  # noqa: E731
    kill = _kill_when("build_dataset", ["--params", str(p1), "--no-progress"],
                      _for(1.0, lambda: bool(temps())))  # fmt: skip
    left = [t.name for t in temps()]
    intact = read_manifest(tmp / "data")["content_hash"] == hash0
    PointVLDataset(tmp / "data", "test")  # shards verified against the manifest
    rerun = _stage("build_dataset", "--params", str(p1), "--no-progress")
    out["build_dataset"] = {
        "first_build_ok": first.returncode == 0, "kill": kill,
        "after_kill_old_dataset_intact": intact, "after_kill_temp_folders": left,
        "rerun_returncode": rerun.returncode,
        "rerun_removed_stale_temp": not temps(),
        "rerun_dataset_loads_and_verifies": len(PointVLDataset(tmp / "data", "train_all")) == 96,
        "rerun_content_hash_differs_from_seed_0": read_manifest(tmp / "data")["content_hash"] != hash0,
    }  # fmt: skip
    # --- sft: uninterrupted vs killed after checkpoint-2 then --resume
    tok = _stage("train_tokenizer", "--params", str(p0), "--data", str(tmp / "data"),
                 "--out", str(tmp / "tok"))  # fmt: skip
    sft = lambda d: {"data_dir": str(tmp / "data"), "tokenizer_dir": str(tmp / "tok"),  # noqa: E731
                     "out_dir": str(tmp / d), "log_dir": str(tmp / f"logs/{d}"),
                     "metrics": str(tmp / f"m/{d}.json"), "max_steps": 4, "save_steps": 2}  # fmt: skip
    pa, pb = (
        _params_file(tmp, _smoke("sft", **sft("a"))),
        _params_file(tmp, _smoke("sft", **sft("b"))),
    )
    straight = _stage("sft", "--params", str(pa))
    kill = _kill_when("sft", ["--params", str(pb)],
                      lambda: (tmp / "b/checkpoint-2/COMPLETE").exists())  # fmt: skip
    no_final = not (tmp / "b/final").exists()
    resumed = _stage("sft", "--params", str(pb), "--resume")
    same = None
    if straight.returncode == 0 and resumed.returncode == 0:
        from safetensors.torch import load_file

        a, b = (
            load_file(tmp / "a/final/model.safetensors"),
            load_file(tmp / "b/final/model.safetensors"),
        )
        same = a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    out["sft"] = {
        "tokenizer_ok": tok.returncode == 0, "uninterrupted_ok": straight.returncode == 0,
        "kill": kill, "after_kill_no_final_model": no_final,
        "resume_returncode": resumed.returncode,
        "resumed_from": Path(json.loads((tmp / "m/b.json").read_text())["resumed_from"]).name
        if resumed.returncode == 0 else None,
        "final_weights_bitwise_equal_to_uninterrupted": same,
    }  # fmt: skip
    return out


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fuzz", type=int, default=10_000, help="fuzz cases (each through both)")
    ap.add_argument("--locality", type=int, default=20, help="cases per field x fault")
    ap.add_argument("--size", type=int, default=1_000_000, help="worst-case text size")
    ap.add_argument("--quick", action="store_true", help="skip the crash-and-resume part")
    ap.add_argument("--out", default=str(ROOT / "results/reliability.json"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    report: dict = {"fuzz": fuzz_parsers(args.fuzz)}
    report["locality"] = locality(args.locality)
    report["worst_case_parse_seconds"] = worst_case_seconds(args.size)
    report["bad_configs"] = bad_configs()
    if not args.quick:
        with tempfile.TemporaryDirectory() as tmp:
            report["crash_resume"] = crash_resume(Path(tmp))
    report["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(args.out, report)
    rows = report["bad_configs"]
    print(json.dumps({
        "fuzz_exceptions_raised": report["fuzz"]["exceptions_raised"],
        "fuzz_exceptions_caught_by_guard": report["fuzz"]["exceptions_caught_by_last_resort_guard"],
        "locality_violations": {k: v["violations"] for k, v in report["locality"].items() if k != "faults"},
        "worst_parse_s": {k: v["max"] for k, v in report["worst_case_parse_seconds"].items() if k != "size_chars"},
        "bad_configs": Counter(f"exit {r['exit_code']}{' traceback' if r['traceback'] else ''}" for r in rows),
        "crash_resume": report.get("crash_resume"),
        "seconds": report["seconds"],
    }, indent=1, default=str))  # fmt: skip


if __name__ == "__main__":
    main()
