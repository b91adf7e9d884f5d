"""The typed config layer and the stage entry point: bad params and flags fail first, in one line.

Each case below was accepted silently, or failed with a TypeError naming no field, or only
after work had started (issue 14). Now: ``ConfigError`` naming the field, the value and what
is accepted; through a stage, exit code 2, one stderr line, no traceback, no file touched.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import pytest
import yaml

from pointvl.config import (
    PROFILES,
    ConfigError,
    OneOf,
    Range,
    SchemaConfig,
    check_value,
    from_dict,
    load_params,
    with_overrides,
)
from pointvl.stages._cli import SECTIONS, redirect_outputs, section_class, validate_sections
from pointvl.train.config import RLConfig, SFTConfig

ROOT = Path(__file__).resolve().parent.parent
RAW = yaml.safe_load((ROOT / "params.yaml").read_text())


# ----------------------------------------------------------------------------- the typed layer
@pytest.mark.parametrize(
    "hint, value, message",
    [
        (int, 256.5, "x=256.5: expected an integer"),
        (int, True, "x=True: expected an integer"),
        (int, "7", "x='7': expected an integer"),
        (float, float("nan"), "x=nan: expected a finite number"),
        (float, float("inf"), "x=inf: expected a finite number"),
        (float, True, "x=True: expected a finite number"),
        (bool, "no", "x='no': expected true or false"),
        (bool, 1, "x=1: expected true or false"),
        (str, 3, "x=3: expected a string"),
        (list[int], [1, "a"], r"x\[1\]='a': expected an integer"),
        (dict, [1], r"x=\[1\]: expected a mapping"),
        (str | None, 3, "x=3: expected a string or null"),
        (Annotated[int, Range(ge=1)], 0, "x=0: expected an integer >= 1"),
        (Annotated[float, Range(ge=0, le=1)], 1.5, r"x=1.5: expected a finite number in \[0, 1\]"),
        (Annotated[int, Range(ge=1, also=(-1,))], -7, "x=-7: expected an integer >= 1 or -1"),
        (
            Annotated[str, OneOf("seq", "zero")],
            "mean",
            r"x='mean': expected one of \['seq', 'zero'\]",
        ),
    ],
)
def test_each_type_refuses_what_it_should(hint, value, message):
    with pytest.raises(ConfigError, match=message):
        check_value("x", value, hint)


def test_each_type_takes_what_it_should():
    assert check_value("x", 2, float) == 2.0 and isinstance(check_value("x", 2, float), float)
    assert check_value("x", "1e-5", float) == 1e-5  # YAML 1.1 reads 1e-5 as a string
    assert check_value("x", None, str | None) is None
    assert check_value("x", -1, Annotated[int, Range(ge=1, also=(-1,))]) == -1
    assert check_value("x", {"a": [1]}, dict[str, list[int]]) == {"a": [1]}


def test_a_section_given_as_a_scalar_or_with_unknown_keys():
    with pytest.raises(ConfigError, match=r"params section 'sft'=3: expected a mapping"):
        from_dict(SFTConfig, 3, "sft")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lr'\]; accepted keys are"):
        from_dict(SFTConfig, {"lr": 1.0}, "sft")
    with pytest.raises(ConfigError, match="model.group_size is now 'points_per_group'"):
        from_dict(section_class("model"), {"group_size": 16}, "model")


@pytest.mark.parametrize(
    "section, values, message",
    [
        ("sft", {"learning_rate": float("nan")}, "sft.learning_rate=nan: expected a finite"),
        ("sft", {"max_steps": -7}, "sft.max_steps=-7: expected -1"),
        ("sft", {"max_steps": 2.5}, "sft.max_steps=2.5: expected an integer"),
        ("rl", {"temperature": 0.0}, "rl.temperature=0.0: expected a number > 0"),
        ("rl", {"epsilon": "big"}, "rl.epsilon='big': expected a finite number"),
        ("rl", {"lam": 1.5}, r"rl.lam=1.5.*\[0, 1\]"),
        ("build_dataset", {"num_points": 256.5}, "build_dataset.num_points=256.5: expected an integer"),
        ("build_dataset", {"workers": True}, "build_dataset.workers=True: expected an integer"),
        ("build_dataset", {"categories": "chair"}, "build_dataset.categories='chair': expected a list"),
        ("notebooks", {"fast": "no"}, "notebooks.fast='no': expected true or false"),
        ("schema", {"quant_bins": 1.5}, "schema.quant_bins=1.5: expected an integer"),
        ("model", {"image_size": "448px"}, "model.image_size='448px': expected an integer"),
        ("zeroshot", {"limit": -1}, "zeroshot.limit=-1: expected an integer >= 0"),
        ("baselines", {"learning_rate": 0}, "baselines.learning_rate=0.0: expected a finite number > 0"),
        ("eval_trivial", {"n_boot": 10}, "eval_trivial.n_boot=10: expected an integer >= 100"),
        ("credit_demo", {"background": "mean"}, "credit_demo.background='mean'"),
    ],
)  # fmt: skip
def test_bad_values_of_every_section_name_the_field(section, values, message):
    base = load_params(ROOT / "params.yaml", "smoke")[section]
    with pytest.raises(ConfigError, match=message):
        from_dict(section_class(section), {**base, **values}, section)


def test_every_section_of_every_profile_is_valid():
    for profile in PROFILES:
        configs = validate_sections(ROOT / "params.yaml", profile)
        assert (
            set(configs) == set(SECTIONS) == set(RAW) - {"profile", "overrides", "sweep", "shared"}
        )


def test_cli_flags_go_through_the_same_checks():
    cfg = from_dict(RLConfig, {}, "rl")
    assert with_overrides(cfg, "rl", {"max_steps": "7", "lam": "0.1"}).max_steps == 7
    with pytest.raises(ConfigError, match="rl.max_steps=-7.*expected >= 1"):
        with_overrides(cfg, "rl", {"max_steps": "-7"})
    with pytest.raises(ConfigError, match="rl.lam='x'"):
        with_overrides(cfg, "rl", {"lam": "x"})


# ----------------------------------------------------------------------------- params.yaml
def _params(tmp_path, mutate=None, text: str | None = None) -> Path:
    raw = redirect_outputs(RAW, tmp_path / "out", "smoke")  # a case that runs writes there
    if mutate is not None:
        mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(raw, sort_keys=False))
    return path


def test_shared_values_are_written_once_and_resolved_per_profile():
    for profile in PROFILES:
        p = load_params(ROOT / "params.yaml", profile)
        assert (
            p["model"]["image_size"]
            == p["build_dataset"]["image_size"]
            == p["shared"]["image_size"]
        )
        assert p["model"]["num_points"] == p["build_dataset"]["num_points"]
        assert p["schema"]["num_keypoints"] == p["build_dataset"]["num_keypoints"]
        assert p["rl"]["num_generations"] == p["figures"]["num_generations"]
        assert p["rl"]["lam"] == p["figures"]["lam"] == p["credit_demo"]["lam"]
        mnt = p["shared"]["max_new_tokens"]
        assert p["rl"]["max_completion_length"] == p["evaluate"]["max_new_tokens"] == mnt
        assert p["model"]["image_size"] % 28 == 0  # the smoke drift: 64 rendered, 56 used


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r["model"].update(image_size="${shared.img}"), r"model.image_size=.*no shared.img"),
        (lambda r: r["model"].update(backbone="a/${shared.lam}"), "must be a whole value"),
        (lambda r: r["shared"]["lam"].pop("paper"), "shared.lam=.*one value per profile"),
        (lambda r: r["overrides"]["smoke"].update(sft=3), r"overrides.smoke.sft=3: expected a mapping"),
        (lambda r: r.update(profile="huge"), "profile='huge'"),
        (lambda r: r.update(sft=3), r"params section 'sft'=3: expected a mapping"),
    ],
)  # fmt: skip
def test_bad_structure_is_named(tmp_path, monkeypatch, mutate, message):
    monkeypatch.delenv("POINTVL_PROFILE", raising=False)
    with pytest.raises(ConfigError, match=message):
        load_params(_params(tmp_path, mutate))


def test_bad_yaml_is_one_line_with_the_position(tmp_path):
    path = _params(tmp_path, text="profile: tiny\nsft:\n  epochs: [1, 2\n  seed: 0\n")
    with pytest.raises(ConfigError, match=r"params.yaml: line \d+ column \d+: not valid YAML") as e:
        load_params(path)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- the stages
STAGES = ("build_dataset", "train_tokenizer", "eval_trivial", "baseline", "zeroshot", "sft")


def smoke(section: str, **values):
    """A mutation of the smoke profile's override block (the stages below run --profile smoke)."""
    return lambda r: r["overrides"]["smoke"].setdefault(section, {}).update(values)


STAGE_CASES = [
    ("build_dataset", smoke("build_dataset", workers=True), [], "workers=True"),
    ("build_dataset", lambda r: r.update(build_dataset=5), [], "'build_dataset'=5"),
    ("build_dataset", None, ["--workers", "-2"], "build_dataset.workers=-2"),
    ("train_tokenizer", smoke("train_tokenizer", vocab_size="big"), [], "vocab_size='big'"),
    ("eval_trivial", smoke("eval_trivial", n_boot=float("nan")), [], "n_boot=nan"),
    ("baseline", smoke("baselines", epochs=0), ["--name", "pointnet"], "epochs=0"),
    ("baseline", None, ["--name", "pointnet3"], "invalid choice: 'pointnet3'"),
    ("zeroshot", smoke("zeroshot", device="gpu"), [], "device='gpu'"),
    ("sft", None, ["--max-steps", "-7"], "sft.max_steps=-7"),
    ("sft", smoke("sft", learning_rate=float("nan")), [], "learning_rate=nan"),
    ("notebook", smoke("notebooks", fast="no"), ["--name", "00_overview"], "fast='no'"),
]  # fmt: skip


@pytest.mark.parametrize("stage, mutate, argv, message", STAGE_CASES)
def test_a_stage_fails_first_in_one_line_with_exit_2(
    tmp_path, capsys, stage, mutate, argv, message
):
    import importlib

    module = importlib.import_module(f"pointvl.stages.{stage}")
    params = _params(tmp_path, mutate)
    before = sorted(p.relative_to(ROOT) for p in (ROOT / "results").rglob("*") if p.is_file())
    with pytest.raises(SystemExit) as exc:
        module.main(["--params", str(params), "--profile", "smoke", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err, err
    after = sorted(p.relative_to(ROOT) for p in (ROOT / "results").rglob("*") if p.is_file())
    assert before == after and not (tmp_path / "out").exists()


def test_as_a_process_bad_yaml_and_bad_values_print_no_traceback(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("profile: tiny\nschema: {quant_bins: 100\n")
    bad_value = _params(tmp_path, lambda r: r["eval_trivial"].update(n_boot="many"))
    for params, needle in ((bad_yaml, "not valid YAML"), (bad_value, "n_boot='many'")):
        proc = subprocess.run(
            [sys.executable, "-m", "pointvl.stages.eval_trivial", "--params", str(params)],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 2 and proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert (
            len(lines) == 1
            and needle in lines[0]
            and lines[0].startswith("eval_trivial: config error:")
        )


def test_the_rl_config_can_use_the_layer_as_it_is():
    """RLConfig (the lead converts the rl stage) is checked generically from its annotations."""
    cfg = from_dict(RLConfig, load_params(ROOT / "params.yaml", "smoke")["rl"], "rl")
    assert dataclasses.is_dataclass(cfg) and cfg.num_generations == 2
    assert from_dict(SchemaConfig, {"quant_bins": 100}, "schema").num_keypoints == 16
