"""dvc.yaml: stages track exactly their own params, and `dvc status` reruns only dependents.

Every profile block in ``params.yaml`` lists every section (``{}`` = the defaults), so a
stage can depend on ``overrides.${profile}.<its sections>`` instead of the whole
``overrides`` block; editing one stage's override then leaves every other stage up to date.
The last test checks that on a copy of the repository with the smoke profile.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
SECTIONS = [k for k in PARAMS if k not in ("profile", "overrides", "sweep", "shared", "active")]
_REF = re.compile(r"\$\{shared\.(\w+)\}")


def shared_refs(section: str) -> set[str]:
    """The shared names a section refers to (``${shared.<name>}``), defaults and overrides."""
    found: set[str] = set()

    def walk(v) -> None:
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, str) and (m := _REF.fullmatch(v.strip())):
            found.add(m.group(1))

    walk(PARAMS.get(section))
    for block in PARAMS["overrides"].values():
        walk((block or {}).get(section))
    return found


def _expand(node, item: dict, key: str):
    """``${item.<field>}`` and ``${key}`` filled in a stage body (other ``${...}`` kept)."""
    if isinstance(node, dict):
        return {k: _expand(v, item, key) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, item, key) for v in node]
    if isinstance(node, str):
        for field, value in item.items():
            node = node.replace(f"${{item.{field}}}", str(value))
        return node.replace("${key}", key)
    return node


def _stage_bodies(dvc: dict):
    """(stage name, body) for plain stages and the ``do`` / matrix bodies of templated ones;
    a ``foreach`` over a mapping of mappings yields one body per item, fields filled in."""
    for name, stage in dvc["stages"].items():
        items = stage.get("foreach")
        if isinstance(items, dict) and all(isinstance(v, dict) for v in items.values()):
            for key, item in items.items():
                yield f"{name}@{key}", _expand(stage["do"], item, key)
        else:
            yield name, stage.get("do", stage)


def test_every_profile_lists_every_section():
    for profile, block in PARAMS["overrides"].items():
        assert sorted(block) == sorted(SECTIONS), f"overrides.{profile}"


def test_stages_track_their_sections_overrides_only():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for name, body in _stage_bodies(dvc):
        params = body.get("params", [])
        assert "overrides" not in params, f"{name}: depends on the whole overrides block"
        # (sets: a templated stage may name an entry twice, see the notebooks' slots)
        sections = sorted({p for p in params if p in SECTIONS})
        tracked = sorted({p for p in params if p.startswith("overrides.")})
        assert tracked == sorted(f"overrides.${{profile}}.{s}" for s in sections), name
        # exactly the shared values its sections refer to, for the active profile only
        shared = sorted({p for p in params if p.startswith("shared.")})
        needed = set().union(*(shared_refs(s) for s in sections)) if sections else set()
        assert shared == sorted(f"shared.{k}.${{profile}}" for k in needed), name


def test_study_pipelines_track_the_shared_values_of_the_base_sections_they_read():
    for path in sorted((ROOT / "studies").glob("*/dvc.yaml")):
        dvc = yaml.safe_load(path.read_text())
        for name, body in _stage_bodies(dvc):
            params = [p for p in body.get("params", []) if isinstance(p, str)]
            sections = [p for p in params if p in SECTIONS]
            # a foreach matrix pads its rows by repeating an entry: compare the set
            shared = sorted({p for p in params if p.startswith("shared.")})
            needed = set().union(*(shared_refs(s) for s in sections)) if sections else set()
            assert shared == sorted(f"shared.{k}.${{profile}}" for k in needed), (path, name)


def test_every_shared_value_has_one_value_per_profile_and_is_used():
    used = set().union(*(shared_refs(s) for s in SECTIONS))
    for name, row in PARAMS["shared"].items():
        assert sorted(row) == sorted(PARAMS["overrides"]), f"shared.{name}"
        assert name in used, f"shared.{name} is referred to by no section"


def test_notebook_stages_track_only_what_each_notebook_reads():
    """Each notebook stage tracks its own few sections (not all of them) and its reads."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    bodies = dict(_stage_bodies(dvc))
    names = [n for n in bodies if n.startswith("notebooks@")]
    root = PARAMS["active"]["results_root"]  # what ${active.results_root} resolves to for tiny
    for name in names:
        bodies[name]["deps"] = [
            d.replace("${active.results_root}", root) for d in bodies[name]["deps"]
        ]
    assert len(names) == len(list((ROOT / "notebooks").glob("[0-9][0-9]_*.py")))
    for name in names:
        sections = {p for p in bodies[name]["params"] if p in SECTIONS}
        assert 1 <= len(sections) <= 4, (name, sections)
        for dep in bodies[name]["deps"]:
            assert "${profile}" in dep or (ROOT / dep).exists() or dep.startswith("results/"), dep
    assert "checkpoints/${profile}/sft/final" in bodies["notebooks@02_architecture"]["deps"]
    assert {"results/metrics/eval", "results/predictions"} <= set(
        bodies["notebooks@08_results"]["deps"]
    )


def test_study_lists_feed_the_study_report():
    """studies/rl: every λ, seed and keypoint-reward run it trains is a system of its report."""
    from pointvl.config import load_params

    study = yaml.safe_load((ROOT / "studies/rl/params.yaml").read_text())["study"]
    merged = load_params(ROOT / "studies/rl/params.yaml", "tiny")
    report = merged["report"]
    assert {f"grca_rpc_lam{lam:g}" for lam in study["lams"]} <= set(
        report["lambda_systems"].values()
    )
    for arm in study["arms"]:
        assert report["seed_systems"][arm] == [f"{arm}_seed{s}" for s in study["seeds"]]
    kpm = sorted(study["kpm_runs"])
    assert ["grca_kpm", *report["seed_systems"]["grca_kpm"]] == kpm
    assert set(report["systems"]) >= {*study["arms"], "sft", "grca_kpm"}


def _dvc_run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``dvc <args>`` in ``cwd``; asserts it succeeded."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = shutil.which("dvc") or str(Path(os.sys.executable).parent / "dvc")
    res = subprocess.run(
        [dvc, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, f"dvc {' '.join(args)}:\n{res.stdout}\n{res.stderr}"
    return res


def _dvc(cwd: Path, *args: str) -> str:
    res = _dvc_run(cwd, *args)
    return res.stdout + res.stderr


@pytest.fixture()
def repo_copy(tmp_path: Path) -> Path:
    """The tracked files (no results, no DVC cache) in a fresh git repo, profile smoke."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if files.returncode != 0:
        pytest.skip("not a git checkout")
    dst = tmp_path / "repo"
    for rel in files.stdout.splitlines():
        if rel.startswith("results/") or not (ROOT / rel).is_file():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst / rel)
    (dst / ".dvc").mkdir(exist_ok=True)
    shutil.copy2(ROOT / ".dvc/config", dst / ".dvc/config")
    from pointvl.profile import switch

    switch(dst / "params.yaml", "smoke")  # profile + the active block dvc.yaml reads
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    return dst


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_dvc_status_reruns_only_what_depends_on_a_change(repo_copy: Path):
    _dvc(repo_copy, "repro", "credit_demo")
    assert (repo_copy / "results/smoke/metrics/credit_demo.json").is_file()  # smoke's own folder
    assert not (repo_copy / "results/metrics").exists()
    assert "up to date" in _dvc(repo_copy, "status", "credit_demo")
    assert "didn't change" in _dvc(repo_copy, "repro", "credit_demo")  # nothing reruns

    # another stage's profile override: credit_demo stays up to date
    params = repo_copy / "params.yaml"
    _edit(params, "    sft:\n      max_steps: 4", "    sft:\n      max_steps: 5")
    assert "up to date" in _dvc(repo_copy, "status", "credit_demo")

    # a shared value of another profile, and one credit_demo does not read: still up to date
    _edit(
        params,
        "lam:             {smoke: 0.15, tiny: 0.15,",
        "lam:             {smoke: 0.15, tiny: 0.2,",
    )
    _edit(params, "image_size:      {smoke: 56,", "image_size:      {smoke: 84,")
    assert "up to date" in _dvc(repo_copy, "status", "credit_demo")

    # a shared value it reads, for its profile (smoke): it must rerun
    _edit(params, "lam:             {smoke: 0.15,", "lam:             {smoke: 0.1,")
    out = _dvc(repo_copy, "status", "credit_demo")
    assert "shared.lam.smoke" in out and "up to date" not in out

    # one of its own params: credit_demo (and only what depends on it) must rerun
    _edit(params, "credit_demo:\n  seed: 0", "credit_demo:\n  seed: 1")
    out = _dvc(repo_copy, "status", "credit_demo")
    assert "modified:           credit_demo" in out and "up to date" not in out


CODE = ("pointvl", "notebooks", "configs", "results/notebooks/code", "results/paper_sim/notebooks")


def test_committed_locks_record_the_code_as_it_is():
    """Every code dep in the five pipelines' locks is this checkout's code: a change under
    pointvl/ (or a notebook, an accelerate config) reruns its stages or is recorded with them.
    Data and checkpoints are left out: they differ between machine kinds (README,
    Reproducibility), and a fresh clone has none; so are deps absent from this checkout.
    Also catches hashes that counted __pycache__ (.dvcignore)."""
    status = yaml.safe_load(_dvc_run(ROOT, "status", "--json").stdout or "{}")
    stale = sorted(
        f"{stage}: {dep}"
        for stage, entries in status.items()
        for entry in entries
        if isinstance(entry, dict)
        for dep, how in entry.get("changed deps", {}).items()
        # "deleted": not in this checkout (paper_sim's closures live in the DVC cache)
        if how == "modified" and (dep in CODE or dep.startswith(tuple(c + "/" for c in CODE)))
    )
    assert not stale, "stages whose code changed since the lock:\n" + "\n".join(stale[:20])
