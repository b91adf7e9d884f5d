"""``extends``: a study params file layered on the repository's (pointvl/config.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pointvl.config import PROFILES, ConfigError, load_params

ROOT = Path(__file__).resolve().parent.parent


def _write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_merge_order_base_then_its_profile_then_study_then_its_profile(tmp_path, monkeypatch):
    monkeypatch.delenv("POINTVL_PROFILE", raising=False)
    _write(tmp_path / "params.yaml", {
        "profile": "smoke",
        "a": {"x": 1, "y": 1, "z": 1, "w": 1},
        "overrides": {"smoke": {"a": {"y": 2, "z": 2, "w": 2}}, "tiny": {"a": {"x": 9}}},
    })  # fmt: skip
    study = _write(tmp_path / "studies/s/params.yaml", {
        "extends": "../../params.yaml",
        "a": {"z": 3, "w": 3},
        "b": {"new": True},
        "overrides": {"smoke": {"a": {"w": 4}}},
    })  # fmt: skip
    got = load_params(study)
    assert got["a"] == {"x": 1, "y": 2, "z": 3, "w": 4} and got["b"] == {"new": True}
    assert got["profile"] == "smoke" and "extends" not in got and "overrides" not in got
    tiny = load_params(study, "tiny")  # the base's tiny override, the study's defaults
    assert tiny["a"] == {"x": 9, "y": 1, "z": 3, "w": 3} and tiny["profile"] == "tiny"


def test_a_file_without_extends_loads_as_before(tmp_path, monkeypatch):
    monkeypatch.delenv("POINTVL_PROFILE", raising=False)
    p = _write(tmp_path / "p.yaml", {"profile": "tiny", "a": {"x": 1},
                                     "overrides": {"tiny": {"a": {"x": 2}}}})  # fmt: skip
    assert load_params(p) == {"profile": "tiny", "a": {"x": 2}}


def test_bad_extends_is_a_clear_error(tmp_path):
    loop = _write(tmp_path / "a.yaml", {"extends": "b.yaml"})
    _write(tmp_path / "b.yaml", {"extends": "a.yaml"})
    with pytest.raises(ConfigError, match="loops back"):
        load_params(loop)
    missing = _write(tmp_path / "c.yaml", {"extends": "nowhere.yaml"})
    with pytest.raises(ConfigError, match="not found"):
        load_params(missing)
    bad = _write(tmp_path / "d.yaml", {"extends": ["x"]})
    with pytest.raises(ConfigError, match="relative path"):
        load_params(bad)


@pytest.mark.parametrize("profile", PROFILES)
def test_the_view_study_changes_only_task_and_paths(profile):
    base = load_params(ROOT / "params.yaml", profile)
    view = load_params(ROOT / "studies/view/params.yaml", profile)
    assert view["build_dataset"]["task"] == "view" and base["build_dataset"]["task"] == "full"
    for section in ("model", "schema"):
        assert view[section] == base[section], section
    for key in ("max_steps", "learning_rate", "num_generations", "temperature"):
        assert view["rl"][key] == base["rl"][key], key
    assert view["sft"]["max_steps"] == base["sft"]["max_steps"]
    for section in ("sft", "rl", "evaluate", "eval_trivial"):
        assert view[section]["data_dir"] == "data/{profile}_view", section
