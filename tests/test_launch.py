"""pointvl.launch: sandboxed params write nothing of the checkout; live logs stream and fail loudly."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from pointvl.config import load_section
from pointvl.data.build import BuildDatasetConfig
from pointvl.launch import INPUT_KEYS, OUTPUT_ROOTS, Sandbox, rebase_outputs, run_live, shown
from pointvl.train.config import RLConfig, SFTConfig

ROOT = Path(__file__).resolve().parent.parent


def _strings(node, key=None):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v, key)
    elif isinstance(node, str):
        yield key, node


def test_every_output_path_of_params_moves_into_the_sandbox(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    moved = rebase_outputs(raw, tmp_path)
    before, after = list(_strings(raw)), list(_strings(moved))
    assert len(before) == len(after) and any(v.startswith(OUTPUT_ROOTS) for _, v in before)
    for (key, old), (_, new) in zip(before, after):
        if old.startswith(OUTPUT_ROOTS) and key not in INPUT_KEYS:
            assert new == str(tmp_path / old)
        else:
            assert new == old  # hub ids, inputs, variants, ...


def test_sandbox_params_resolve_inside_the_sandbox(tmp_path):
    sb = Sandbox.create(tmp_path, "smoke", {"sft": {"max_steps": 3}})
    assert yaml.safe_load(sb.params.read_text())["profile"] == "smoke"
    sft = load_section(sb.params, "sft", SFTConfig).resolved("smoke")
    assert sft.max_steps == 3 and sft.per_device_batch_size == 4  # smoke's own override kept
    rl = load_section(sb.params, "rl", RLConfig).resolved("smoke")
    build = load_section(sb.params, "build_dataset", BuildDatasetConfig)
    for path in (sft.data_dir, sft.out_dir, sft.log_dir, sft.metrics, rl.sft_checkpoint,
                 rl.log_dir, build.out_dir, build.metrics, build.figures_dir):  # fmt: skip
        assert Path(path).is_relative_to(tmp_path), path
    assert sb.path("checkpoints/{profile}/sft/final") == tmp_path / "checkpoints/smoke/sft/final"
    with pytest.raises(ValueError, match="profile"):
        Sandbox.create(tmp_path / "x", "nope")


def test_commands_read_as_a_reader_would_type_them(tmp_path):
    sb = Sandbox.create(tmp_path)
    assert shown(sb.stage("build_dataset")).startswith("python -m pointvl.stages.build_dataset")
    cmd = shown(sb.accelerate("rl", "--variant", "grca"))
    assert cmd.startswith("accelerate launch --config_file ") and "-m pointvl.stages.rl" in cmd
    assert cmd.endswith(f"--params {sb.params} --variant grca")


def test_run_live_streams_lines_elides_long_json_and_raises_with_the_tail(capsys):
    code = (
        "import json; print('a\\rb'); print(json.dumps({str(i): i for i in range(30)}, indent=1))"
    )
    tail = run_live([sys.executable, "-c", code])
    out = capsys.readouterr().out
    assert "a\nb\n" in out and '"10": 10' in out and '"29": 29' not in out
    assert "more lines" in out and tail[-1] == "}"
    with pytest.raises(RuntimeError, match="exited 3") as err:
        run_live([sys.executable, "-c", "print('last words'); raise SystemExit(3)"], echo=False)
    assert "last words" in str(err.value)


def test_sandbox_params_pass_the_active_check_of_their_profile(tmp_path):
    """Under DVC (a notebook stage) every load checks ``active`` against ``profile``."""
    from pointvl.config import load_params

    for profile in ("smoke", "tiny"):
        sb = Sandbox.create(tmp_path / profile, profile)
        load_params(sb.params, check_active=True)  # raises a ConfigError when inconsistent
