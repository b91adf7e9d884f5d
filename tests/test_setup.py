"""The repository's set-up promises: pins agree, params profiles merge, layout exists."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from pointvl.config import PROFILES, ConfigError, SchemaConfig, load_params, load_section

ROOT = Path(__file__).resolve().parent.parent


def _pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = list(project["dependencies"])
    for extra, items in project["optional-dependencies"].items():
        if extra != "all":
            deps += items
    return dict(d.split("==") for d in deps)


def test_every_dependency_is_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dep in project["dependencies"]:
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][0-9A-Za-z.+]*", dep), dep


def test_environment_yml_lists_the_same_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_block = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    env_pins = dict(p.split("==") for p in pip_block if "==" in p)
    assert env_pins == _pyproject_pins()
    assert "python=3.11" in env["dependencies"]


def test_layout_exists():
    for path in [
        "notebooks",
        "pointvl",
        "paper",
        "results",
        "tests",
        "benchmarks",
        "dvc.yaml",
        "params.yaml",
        "environment.yml",
        "README.md",
        ".ci/run",
        "jupytext.toml",
        ".dvc/config",
    ]:
        assert (ROOT / path).exists(), path
    assert "analytics = false" in (ROOT / ".dvc/config").read_text()


def test_readme_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S)
    assert blocks and blocks[0].strip().splitlines() == ["make repro", "make test"]
    assert "make test" in (ROOT / ".ci/run").read_text()


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_change_values_not_keys(profile):
    base = load_params(ROOT / "params.yaml", "tiny")
    merged = load_params(ROOT / "params.yaml", profile)

    def keys(d, prefix=""):
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict):
                out |= keys(v, prefix + k + ".")
        return out

    assert keys(merged) == keys(base), "an override introduced a key the defaults lack"


def test_schema_section_and_bad_values(tmp_path, monkeypatch):
    monkeypatch.delenv("POINTVL_PROFILE", raising=False)
    cfg = load_section(ROOT / "params.yaml", "schema", SchemaConfig, "paper")
    assert dataclasses.asdict(cfg)["quant_bins"] == 1000
    bad = tmp_path / "params.yaml"
    bad.write_text("profile: tiny\nschema: {quant_bins: 1, num_keypoints: 16}\n")
    with pytest.raises(ConfigError, match="schema.quant_bins=1"):
        load_section(bad, "schema", SchemaConfig)
    bad.write_text("profile: tiny\nschema: {bins: 3}\n")
    with pytest.raises(ConfigError, match="unknown key.*bins"):
        load_section(bad, "schema", SchemaConfig)
    bad.write_text("profile: huge\n")
    with pytest.raises(ConfigError, match="profile='huge'"):
        load_params(bad)


def test_lock_file_pins_every_direct_dependency_at_its_pyproject_version():
    """requirements.lock (scripts/lock.sh) is what scripts/setup.sh installs: it must agree."""
    lock = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            lock[name] = version
    for name, version in _pyproject_pins().items():
        key = re.sub(r"[-_.]+", "-", name).lower()
        assert lock.get(key, "").split("+")[0] == version, (name, version, lock.get(key))
    assert lock["torch"].endswith("+cpu"), "the lock pins the CPU build of torch"
    assert "requirements.lock" in (ROOT / "scripts/setup.sh").read_text()


def test_ci_runs_lint_and_a_pre_commit_config_exists():
    ci = (ROOT / ".ci/run").read_text()
    assert "make lint" in ci and ci.index("make lint") < ci.index("make test")
    hooks = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    ids = {h["id"] for repo in hooks["repos"] for h in repo["hooks"]}
    assert {"ruff-check", "ruff-format"} <= ids
