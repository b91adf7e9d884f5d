"""Profiles live apart: results folders, the `active` block dvc.yaml reads, the tiny pipeline
unchanged, a report that never mixes profiles, and profile switching."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pointvl.config import (
    DEFAULT_PROFILE,
    PROFILES,
    ConfigError,
    DataError,
    load_params,
    results_root,
)
from pointvl.stages._cli import OUTPUT_FIELDS

ROOT = Path(__file__).resolve().parent.parent


def _outputs(profile: str) -> dict[str, str]:
    """{section.field: path} of everything a stage of ``profile`` writes (paths of results)."""
    p = load_params(ROOT / "params.yaml", profile)
    return {f"{s}.{k}": p[s][k] for s, keys in OUTPUT_FIELDS.items() for k in keys}


def test_results_root_rule():
    assert results_root("tiny") == "results" and DEFAULT_PROFILE == "tiny"
    for profile in ("smoke", "paper", "paper_sim"):
        assert results_root(profile) == f"results/{profile}"


@pytest.mark.parametrize("profile", PROFILES)
def test_every_output_of_a_profile_is_its_own(profile):
    """Results under the profile's root; data, models, checkpoints per profile."""
    root = results_root(profile)
    for name, path in _outputs(profile).items():
        path = path.replace("{profile}", profile)
        if path.startswith("results"):
            assert path == root or path.startswith(root + "/"), (name, path)
            others = [f"results/{p}/" for p in PROFILES if p not in (profile, DEFAULT_PROFILE)]
            assert not any(path.startswith(o) for o in others), (name, path)
        else:
            assert profile in path.split("/")[1], (name, path)  # data/<profile>, ...


def test_no_two_profiles_share_an_output_and_tiny_keeps_its_paths():
    outs = {p: set(_outputs(p).values()) for p in PROFILES}
    for a in PROFILES:
        for b in PROFILES:
            if a < b:
                shared = {x for x in outs[a] & outs[b] if "{profile}" not in x}
                assert not shared, (a, b, shared)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    tiny = load_params(ROOT / "params.yaml", "tiny")
    assert tiny["sft"]["metrics"] == raw["sft"]["metrics"] == "results/metrics/sft.json"


def test_study_outputs_follow_the_profile():
    view = load_params(ROOT / "studies/view/params.yaml", "smoke")
    assert view["sft"]["log_dir"] == "results/smoke/view/train/sft"
    assert load_params(ROOT / "studies/rl/params.yaml", "paper")["report"]["tables_dir"] == (
        "results/paper/study/tables"
    )
    assert load_params(ROOT / "studies/view/params.yaml", "tiny")["sft"]["log_dir"] == (
        "results/view/train/sft"
    )


def test_tiny_dvc_outputs_stay_where_they_are():
    """dvc.yaml resolved with the tiny ``active`` block: every result is under results/ itself
    (no profile folder), and sft / rl launch one CPU process through configs/accelerate/cpu.yaml,
    the very commands dvc.lock holds (so the committed tiny runs stay up to date)."""
    from dvc.repo import Repo

    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    for stage in Repo(str(ROOT)).index.stages:
        if "studies/paper_sim" in str(stage.dvcfile.path):
            continue  # the rehearsal's own pipeline (profile paper_sim)
        for out in (str(o.def_path) for o in stage.outs):
            assert not any(out.startswith(f"results/{p}/") for p in PROFILES), out
        if stage.addressing == "sft" or stage.addressing.startswith("rl@"):
            assert "--config_file configs/accelerate/cpu.yaml " in stage.cmd
            if stage.addressing in lock:
                assert stage.cmd == lock[stage.addressing]["cmd"]


def test_the_paper_sim_study_sets_its_own_profile_and_folders(monkeypatch):
    monkeypatch.delenv("POINTVL_PROFILE", raising=False)
    p = load_params(ROOT / "studies/paper_sim/params.yaml", check_active=True)
    assert p["profile"] == "paper_sim"
    assert p["sft"]["metrics"] == "results/paper_sim/metrics/sft.json"
    assert p["launch"]["accelerate_config"] == "configs/accelerate/cpu_zero3.yaml"


# ----------------------------------------------------------------------------- active
def _copy_params(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    return path


def test_active_block_must_match_the_profile_under_dvc(tmp_path, monkeypatch):
    from pointvl.profile import switch

    monkeypatch.delenv("POINTVL_PROFILE", raising=False)
    path = _copy_params(tmp_path)
    original = path.read_text()
    path.write_text(original.replace("profile: tiny", "profile: paper", 1))
    load_params(path)  # a direct stage run computes its own paths: no check
    with pytest.raises(ConfigError, match=r"active.results_root='results', but profile 'paper' "
                       r"uses 'results/paper'.*pointvl.profile paper"):  # fmt: skip
        load_params(path, check_active=True)
    monkeypatch.setenv("DVC_STAGE", "sft")  # what dvc repro sets for every command
    with pytest.raises(ConfigError, match="active.results_root"):
        load_params(path)
    assert switch(path, "paper") == {
        "results_root": "results/paper",
        "accelerate_config": "configs/accelerate/zero3.yaml",
    }
    assert load_params(path)["profile"] == "paper"
    switch(path, "tiny")
    assert path.read_text() == original  # a round trip leaves the file as it was


def test_profile_cli_check_and_switch(tmp_path):
    path = _copy_params(tmp_path)
    run = [sys.executable, "-m", "pointvl.profile"]
    env = {k: v for k, v in os.environ.items() if k != "POINTVL_PROFILE"}
    ok = subprocess.run([*run, "--check", "--params", str(path)], env=env, capture_output=True,
                        text=True, cwd=ROOT)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    path.write_text(path.read_text().replace("profile: tiny", "profile: smoke", 1))
    bad = subprocess.run([*run, "--check", "--params", str(path)], env=env, capture_output=True,
                         text=True, cwd=ROOT)  # fmt: skip
    assert bad.returncode != 0 and "active.results_root" in bad.stderr
    fix = subprocess.run([*run, "smoke", "--params", str(path)], env=env, capture_output=True,
                         text=True, cwd=ROOT)  # fmt: skip
    assert fix.returncode == 0 and "results/smoke" in fix.stdout


# ----------------------------------------------------------------------------- report
def test_report_refuses_metrics_of_another_profile(tmp_path):
    from pointvl.eval.results import ReportConfig, Results
    from pointvl.eval.tables import write_report

    mdir = tmp_path / "metrics"
    mdir.mkdir()
    cell = {"mean": 0.5, "lo": 0.4, "hi": 0.6, "n": 10}
    (mdir / "grca.json").write_text(json.dumps({"iou3d": cell, "_meta": {"profile": "smoke"}}))
    assert Results(mdir, tmp_path, profile="smoke").result("grca")["iou3d"] == cell
    with pytest.raises(DataError, match=r"grca.json was written by profile 'smoke'.*'tiny'"):
        Results(mdir, tmp_path, profile="tiny").result("grca")
    cfg = ReportConfig(systems=["grca"], metrics_dir=str(mdir), predictions_dir=str(tmp_path),
                       tables_dir=str(tmp_path / "t"), figures_dir=str(tmp_path / "f"),
                       zeroshot=str(tmp_path / "none.json"), data_dir=str(tmp_path / "none"))  # fmt: skip
    reported = yaml.safe_load((ROOT / "paper/reported.yaml").read_text())
    with pytest.raises(DataError, match="never mixes profiles"):
        write_report(cfg, "tiny", reported)
    assert not (tmp_path / "t").exists()  # refused before writing a table


def test_a_smoke_report_in_a_repo_copy_leaves_tiny_results_untouched(tmp_path):
    """The report and credit_demo stages on the smoke profile, in a copy of the tracked files
    (results included): every tracked file stays byte-identical, the new ones are under
    results/smoke/."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if files.returncode != 0:
        pytest.skip("not a git checkout")
    dst = tmp_path / "repo"
    tracked = [r for r in files.stdout.splitlines() if (ROOT / r).is_file()]
    for rel in tracked:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst / rel)
    before = {rel: (dst / rel).read_bytes() for rel in tracked if rel.startswith("results/")}
    env = {**os.environ, "PYTHONPATH": str(dst)}
    env.pop("POINTVL_PROFILE", None)
    subprocess.run([sys.executable, "-m", "pointvl.profile", "smoke"], cwd=dst, env=env,
                   check=True, capture_output=True)  # fmt: skip
    for stage in ("report", "credit_demo"):
        proc = subprocess.run([sys.executable, "-m", f"pointvl.stages.{stage}", "--params",
                               "params.yaml"], cwd=dst, env={**env, "DVC_STAGE": stage},
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert {rel: (dst / rel).read_bytes() for rel in before} == before
    new = sorted(str(p.relative_to(dst)) for p in (dst / "results").rglob("*")
                 if p.is_file() and str(p.relative_to(dst)) not in before)  # fmt: skip
    # results/_static: plotly.js and MathJax, shared by every profile's pages (git-ignored,
    # written on first use, the same bytes whoever writes them: pointvl.viz.page)
    new = [p for p in new if not p.startswith("results/_static/")]
    assert new and all(p.startswith("results/smoke/") for p in new), new
    assert (dst / "results/smoke/tables/table3.md").is_file()
    assert (dst / "results/smoke/metrics/credit_demo.json").is_file()
