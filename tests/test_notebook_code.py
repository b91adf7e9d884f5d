"""The notebooks' code deps: each notebook stage depends on the hashes of its import closure
(``pointvl.notebooks.code_closure``), not on the whole package."""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pointvl.notebooks import code_closure, code_fingerprint, notebook_names, write_fingerprints

ROOT = Path(__file__).resolve().parent.parent


def test_fingerprint_lines_are_the_sha256_of_each_file_of_the_closure():
    text = code_fingerprint("05_variance_analysis")
    lines = [line.split("  ") for line in text.splitlines()]
    assert [p for _, p in lines] == code_closure("05_variance_analysis")
    for digest, rel in lines:
        assert digest == hashlib.sha256((ROOT / rel).read_bytes()).hexdigest(), rel


def test_closures_follow_imports_and_sandbox_launches():
    variance = set(code_closure("05_variance_analysis"))
    assert {"pointvl/variance.py", "pointvl/stages/notebook.py", "pointvl/notebooks.py"} <= variance
    assert not any(p.startswith(("pointvl/train/", "pointvl/model/")) for p in variance)
    launch = set(code_closure("06_training_launch"))  # launches sft and rl in a sandbox
    assert {"pointvl/stages/rl.py", "pointvl/stages/sft.py", "pointvl/train/rl.py",
            "pointvl/eval/generate.py", "pointvl/data/build.py"} <= launch  # fmt: skip


@pytest.mark.parametrize("name", notebook_names())
def test_the_modules_a_notebooks_imports_load_are_in_its_closure(name, tmp_path):
    """Runtime check of the static closure: run every import statement of the notebook in a
    fresh interpreter; each pointvl file it loads is one the closure lists."""
    tree = ast.parse((ROOT / f"notebooks/{name}.py").read_text())
    imports = [ast.unparse(n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    code = "\n".join([*imports, "import json, sys",
                      "print(json.dumps([getattr(m, '__file__', None) for m in list(sys.modules.values())]))"])  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "notebooks", capture_output=True,
                          text=True, timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = {Path(f).resolve() for f in json.loads(proc.stdout.splitlines()[-1]) if f}
    loaded = {f.relative_to(ROOT).as_posix() for f in files if f.is_relative_to(ROOT / "pointvl")}
    assert loaded, "no pointvl module of this checkout loaded"
    assert loaded <= set(code_closure(name)), sorted(loaded - set(code_closure(name)))


def test_unchanged_fingerprints_keep_their_bytes_and_a_stale_one_is_rewritten(tmp_path):
    write_fingerprints(tmp_path)
    first = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.txt")}
    assert sorted(first) == [f"{n}.txt" for n in notebook_names()]
    (tmp_path / "05_variance_analysis.txt").write_text("stale\n")
    write_fingerprints(tmp_path)
    assert (tmp_path / "05_variance_analysis.txt").read_text() == code_fingerprint(
        "05_variance_analysis"
    )
    assert (tmp_path / "00_overview.txt").stat().st_mtime_ns == first["00_overview.txt"]


def test_notebook_stages_depend_on_their_fingerprint_not_on_the_package():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    deps = stages["notebooks"]["do"]["deps"]
    assert "${active.results_root}/notebooks/code/${key}.txt" in deps
    assert "pointvl" not in deps
    code = stages["notebook_code"]
    assert {"pointvl", "notebooks"} <= set(code["deps"])
    assert "${active.results_root}/notebooks/code" in [next(iter(o)) for o in code["outs"]]
