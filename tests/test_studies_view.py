"""studies/view: the view task's own DVC pipeline, apart from the default one (issue 16)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml
from test_dvc_pipeline import _dvc, repo_copy  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parent.parent
STUDY = yaml.safe_load((ROOT / "studies/view/dvc.yaml").read_text())
STUDY_PARAMS = yaml.safe_load((ROOT / "studies/view/params.yaml").read_text())
BASE = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def _paths(entries) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def _resolve(path: str, profile: str = "tiny") -> str:
    from pointvl.config import results_root

    return path.replace("${profile}", profile).replace(
        "${active.results_root}", results_root(profile)
    )


def test_every_stage_runs_the_package_cli_on_the_study_params():
    for name, stage in STUDY["stages"].items():
        assert stage["wdir"] == "../..", name
        assert "-m pointvl.stages." in stage["cmd"], name
        assert "--params studies/view/params.yaml" in stage["cmd"], name


def test_stages_track_the_sections_they_read():
    base_sections = {k for k in yaml.safe_load((ROOT / "params.yaml").read_text())}
    for name, stage in STUDY["stages"].items():
        params = stage["params"]
        plain = [p for p in params if isinstance(p, str)]
        study = [p["studies/view/params.yaml"] for p in params if isinstance(p, dict)]
        assert len(study) == 1 and study[0], name
        assert set(study[0]) <= set(STUDY_PARAMS), name
        sections = [p for p in plain if p in base_sections and p != "profile"]
        tracked = [p for p in plain if p.startswith("overrides.")]
        assert sorted(tracked) == sorted(f"overrides.${{profile}}.{s}" for s in sections), name


def test_no_output_of_the_study_is_an_output_of_the_default_pipeline():
    base_outs = set()
    for stage in BASE["stages"].values():
        body = stage.get("do", stage)
        for key in ("outs", "metrics", "plots"):
            base_outs |= {_resolve(p) for p in _paths(body.get(key))}
    for name, stage in STUDY["stages"].items():
        for key in ("outs", "metrics", "plots"):
            for p in map(_resolve, _paths(stage.get(key))):
                assert p.startswith(("data/tiny_view", "models/tiny_view",
                                     "checkpoints/tiny_view", "results/view/")), (name, p)  # fmt: skip
                assert not any(p == b or p.startswith(b + "/") or b.startswith(p + "/")
                               for b in base_outs), (name, p)  # fmt: skip


def test_default_repro_runs_no_study_stage_and_the_study_builds_apart(
    repo_copy,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
):
    # the stages' `python` is this interpreter (also when the venv is not activated)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    dry = _dvc(repo_copy, "repro", "--dry", "--force")
    # no study stage (view, rl, paper_sim) is upstream of a default stage
    assert "Running stage 'build_dataset'" in dry and "studies/" not in dry
    _dvc(repo_copy, "repro", "studies/view/dvc.yaml:eval_trivial")
    manifest = json.loads((repo_copy / "data/smoke_view/manifest.json").read_text())
    assert manifest["config"]["task"] == "view" and manifest["profile"] == "smoke"
    assert not (repo_copy / "data/smoke").exists()  # the full task's data untouched
    # smoke's results live under results/smoke/ (pointvl.config.results_root)
    probes = json.loads(
        (repo_copy / "results/smoke/view/metrics/eval/trivial_probes.json").read_text()
    )
    assert probes["_meta"]["task"] == "view" and 0 < probes["kpts3d_occluded"]["mean"] < 1
    status = _dvc(repo_copy, "status", "studies/view/dvc.yaml:eval_trivial")
    assert "up to date" in status


def test_view_rl_outputs_are_where_the_rl_stage_writes_them():
    """dvc.yaml names each run's folder <variant>_seed<seed>; the rl stage writes seed 0 with
    no suffix (the default pipeline's base run), so a seed 0 in the study would write where
    DVC does not look (it did: 'output .../grca_rpc_seed0/final does not exist')."""
    from pointvl.config import load_params
    from pointvl.stages.rl import run_suffix

    view = load_params(Path(__file__).resolve().parent.parent / "studies/view/params.yaml")
    for seed in view["table_view"]["seeds"]:
        assert run_suffix(None, seed) == f"_seed{seed}", seed
