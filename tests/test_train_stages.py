"""The sft and rl stages on the smoke profile (subprocess CLIs), config errors, --resume.

A smoke dataset and tokenizer are built once into a temp folder; a temp params.yaml (the
repo's, with every output path of the smoke profile redirected there) drives the stages.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pointvl.config import ConfigError, load_section
from pointvl.train.config import RLConfig, SFTConfig

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, cwd=ROOT, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def write_params(tmp: Path, **extra) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["profile"] = "smoke"
    smoke = raw.setdefault("overrides", {}).setdefault("smoke", {}) or {}
    raw["overrides"]["smoke"] = smoke
    paths = {
        "build_dataset": {
            "out_dir": str(tmp / "data"),
            "metrics": str(tmp / "m/build.json"),
            "figures_dir": str(tmp / "figures"),
        },
        "train_tokenizer": {
            "data_dir": str(tmp / "data"),
            "out_dir": str(tmp / "tok"),
            "metrics": str(tmp / "m/tok.json"),
        },
        "sft": {
            "data_dir": str(tmp / "data"),
            "tokenizer_dir": str(tmp / "tok"),
            "out_dir": str(tmp / "sft"),
            "log_dir": str(tmp / "logs/sft"),
            "metrics": str(tmp / "m/sft.json"),
        },
        "rl": {
            "data_dir": str(tmp / "data"),
            "sft_checkpoint": str(tmp / "sft/final"),
            "out_dir": str(tmp / "rl/{variant}"),
            "log_dir": str(tmp / "logs/rl_{variant}"),
            "metrics": str(tmp / "m/rl_{variant}.json"),
        },
    }
    for section, values in paths.items():
        smoke.setdefault(section, {}).update(values)
    for section, values in extra.items():
        smoke.setdefault(section, {}).update(values)
    path = tmp / f"params_{len(list(tmp.glob('params_*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _not_json(token: str):
    raise AssertionError(f"{token} in a metrics file: JSON has no NaN / Infinity (use null)")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stages")
    params = write_params(tmp)
    cli(
        "pointvl.stages.build_dataset",
        "--params",
        str(params),
        "--out",
        str(tmp / "data"),
        "--no-progress",
    )
    cli("pointvl.stages.train_tokenizer", "--params", str(params), "--data", str(tmp / "data"),
        "--out", str(tmp / "tok"))  # fmt: skip
    cli("pointvl.stages.sft", "--params", str(params))
    return tmp, params


def test_sft_stage_writes_final_model_logs_and_metrics(built):
    tmp, _ = built
    assert (tmp / "sft/final/config.json").is_file()
    assert (tmp / "sft/final/pointvl_processor.json").is_file()
    metrics = json.loads((tmp / "m/sft.json").read_text())
    assert metrics["steps"] == 4 and metrics["train_loss"] > 0
    lines = (tmp / "logs/sft/log.jsonl").read_text().splitlines()
    assert any("loss" in json.loads(x) for x in lines)
    assert (tmp / "logs/sft/log.csv").read_text().startswith("step,")
    assert list((tmp / "sft").glob("checkpoint-*/COMPLETE"))


@pytest.mark.parametrize(
    "variant,extra,name",
    [
        ("grca_rpc", (), "grca_rpc"),
        ("sft_budget", (), "sft_budget"),
        ("gdpo", ("--keypoint-reward", "matched", "--seed", "1"), "gdpo_kpm_seed1"),
    ],
)
def test_rl_stage_runs_each_kind_of_variant(built, variant, extra, name):
    tmp, params = built
    cli("pointvl.stages.rl", "--params", str(params), "--variant", variant, *extra)
    metrics = json.loads((tmp / f"m/rl_{name}.json").read_text(), parse_constant=_not_json)
    assert metrics["variant"] == variant and metrics["steps"] == 2
    assert (tmp / f"rl/{name}/final/config.json").is_file()
    rec = [json.loads(x) for x in (tmp / f"logs/rl_{name}/log.jsonl").read_text().splitlines()]
    if variant != "sft_budget":
        assert any("reward/bbox3d" in r and "spans/parse_fail_frac" in r for r in rec)
        assert any("rollout/logp_gap_max" in r for r in rec)
    # validation curves: sampled before the first step and after every step (smoke: val_every 1)
    val = [r for r in rec if "val/n" in r]
    assert [r["step"] for r in val] == [0, 1, 2]
    assert all("val/reward/bbox3d" in r and "val/pck3d" in r for r in val)
    assert "val/reward/seq/slope_per_100/slope" in metrics
    assert not (tmp / f"logs/rl_{name}/log.jsonl.partial").exists()


def test_rl_stage_is_bitwise_repeatable(built):
    """The same seed twice (``launch.rl_cpu_threads: 1``): the same losses, grad norms,
    rewards and validation curves to the last bit, and the same final weights. With 2
    threads the tiny profile's grad norms differed in the 7th digit from step 2."""
    from safetensors.torch import load_file

    tmp, _ = built
    runs = []
    for rep in ("a", "b"):
        params = write_params(tmp, rl={
            "out_dir": str(tmp / f"rep_{rep}/{{variant}}"),
            "log_dir": str(tmp / f"rep_{rep}/logs_{{variant}}"),
            "metrics": str(tmp / f"rep_{rep}/m_{{variant}}.json"),
        })  # fmt: skip
        cli("pointvl.stages.rl", "--params", str(params), "--variant", "grca")
        log = (tmp / f"rep_{rep}/logs_grca/log.jsonl").read_text().splitlines()
        timing = ("step_time", "runtime", "per_second")
        rec = [{k: v for k, v in json.loads(x).items() if not any(t in k for t in timing)}
               for x in log]  # fmt: skip
        weights = load_file(tmp / f"rep_{rep}/grca/final/model.safetensors")
        runs.append((rec, weights))
    (rec_a, w_a), (rec_b, w_b) = runs
    assert any("grad_norm" in r for r in rec_a)
    assert rec_a == rec_b
    assert w_a.keys() == w_b.keys() and all(torch.equal(w_a[k], w_b[k]) for k in w_a)


def test_rl_cpu_threads_applies_on_cpu_launches_only():
    from pointvl.config import from_dict
    from pointvl.train.launch import Launch, LaunchConfig, set_cpu_threads

    before = torch.get_num_threads()
    cpu = Launch("cpu.yaml", "NO", 1, "cpu", "no", None)
    gpu = Launch("gpu.yaml", "MULTI_GPU", 4, "cuda", "bf16", None)
    try:
        torch.set_num_threads(2)
        assert set_cpu_threads(LaunchConfig(rl_cpu_threads=1), gpu) == 2
        assert set_cpu_threads(LaunchConfig(rl_cpu_threads=0), cpu) == 2
        assert set_cpu_threads(LaunchConfig(rl_cpu_threads=1), cpu) == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError, match=r"launch.rl_cpu_threads=-1: expected an integer >= 0"):
        from_dict(LaunchConfig, {"rl_cpu_threads": -1}, "launch")


def test_sft_resume_ends_with_the_same_weights(built, monkeypatch):
    """Crash after step 3 of 6, ``--resume`` from checkpoint-2: bitwise the same final weights."""
    from safetensors.torch import load_file

    from pointvl.stages import sft as stage
    from pointvl.train import sft as train_sft

    tmp, _ = built
    straight = write_params(
        tmp, sft={"out_dir": str(tmp / "a"), "max_steps": 6, "metrics": str(tmp / "m/a.json")}
    )
    stage.main(["--params", str(straight)])
    broken = write_params(
        tmp, sft={"out_dir": str(tmp / "b"), "max_steps": 6, "metrics": str(tmp / "m/b.json")}
    )
    orig = train_sft.build_sft_trainer
    monkeypatch.setattr(
        train_sft, "build_sft_trainer", lambda *a: orig(*a[:4], [*a[4], train_sft.StopAfter(3)])
    )
    with pytest.raises(KeyboardInterrupt, match="stopped after step 3"):
        stage.main(["--params", str(broken)])
    assert not (tmp / "b/final").exists()
    monkeypatch.setattr(train_sft, "build_sft_trainer", orig)
    stage.main(["--params", str(broken), "--resume"])
    assert json.loads((tmp / "m/b.json").read_text())["resumed_from"].endswith("checkpoint-2")
    a = load_file(tmp / "a/final/model.safetensors")
    b = load_file(tmp / "b/final/model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_bad_configs_fail_before_work_naming_the_field(built, tmp_path, capsys):
    from pointvl.stages import rl as stage

    tmp, _ = built
    cases = [
        ({"rl": {"variant": "ppo"}}, "rl.variant='ppo'.*grpo.*grca.*grca_rpc.*sft_budget"),
        ({"rl": {"lam": 1.5}}, r"rl.lam=1.5.*\[0, 1\]"),
        ({"rl": {"num_generations": 1}}, "rl.num_generations=1.*>= 2"),
        ({"rl": {"sft_checkpoint": str(tmp_path / "none")}}, "rl.sft_checkpoint=.*none"),
        ({"rl": {"background": "mean"}}, "rl.background='mean'.*seq.*zero"),
    ]
    for extra, pattern in cases:
        params = write_params(tmp, **extra)
        with pytest.raises(SystemExit) as exc:
            stage.main(["--params", str(params)])
        assert re.search(pattern, str(exc.value)), (pattern, str(exc.value))
    # CLI overrides are validated too
    with pytest.raises(SystemExit, match=r"rl.lam=-0.1"):
        stage.main(["--params", str(write_params(tmp)), "--lam", "-0.1"])


def test_dataset_of_another_profile_is_rejected(built, tmp_path):
    tmp, params = built
    manifest = json.loads((tmp / "data/manifest.json").read_text())
    other = tmp_path / "data"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({**manifest, "profile": "paper"}))
    cfg = load_section(params, "sft", SFTConfig).resolved("smoke")
    cfg.data_dir = str(other)
    with pytest.raises(ConfigError, match="sft.data_dir=.*profile 'paper'.*'smoke'"):
        cfg.check_inputs("smoke")
    rl = load_section(params, "rl", RLConfig).resolved("smoke")
    with pytest.raises(ConfigError, match="rl.sft_checkpoint"):
        RLConfig(sft_checkpoint=str(tmp_path / "x"), data_dir=rl.data_dir).check_inputs("smoke")


@pytest.mark.slow
def test_rl_stage_under_deepspeed_zero3_with_two_cpu_processes(built, tmp_path_factory):
    """The distributed path: ``accelerate launch`` zero3.yaml, 2 processes, gloo, grca, 2 steps."""
    pytest.importorskip("deepspeed")
    tmp, params = built
    ext = tmp_path_factory.getbasetemp().parent / "torch_extensions"  # JIT op cache (~30 s once)
    env = {**__import__("os").environ, "TORCH_EXTENSIONS_DIR": str(ext)}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ROOT / "configs/accelerate/zero3.yaml"),
        "--num_processes", "2", "--mixed_precision", "no",
        "-m", "pointvl.stages.rl", "--params", str(params), "--variant", "grca",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-5000:]
    metrics = json.loads((tmp / "m/rl_grca.json").read_text())
    assert metrics["steps"] == 2 and metrics["variant"] == "grca"
    # the final weights are whole (gathered from the ZeRO-3 shards), equal to the last checkpoint
    from safetensors.torch import load_file

    final = load_file(tmp / "rl/grca/final/model.safetensors")
    ckpt = load_file(tmp / "rl/grca/checkpoint-2/model.safetensors")
    sft = load_file(tmp / "sft/final/model.safetensors")
    assert final.keys() == sft.keys()
    for k in final:
        assert final[k].shape == sft[k].shape and torch.equal(final[k], ckpt[k]), k


def test_rl_with_fewer_train_prompts_than_one_optimizer_step_is_refused(built):
    """One optimizer step takes prompts_per_step x grad_accum x processes prompts; with fewer,
    TRL's sampler yields no batch and the run used to 'finish' after 0 steps, exit 0."""
    from pointvl.stages import rl as stage

    tmp, _ = built
    params = write_params(tmp, rl={"max_train_prompts": 1, "prompts_per_step": 2})
    with pytest.raises(SystemExit) as exc:
        stage.main(["--params", str(params), "--variant", "grpo"])
    assert re.search(r"rl.prompts_per_step=2.*1 train prompt", str(exc.value)), str(exc.value)
    assert not (tmp / "m/rl_grpo.json").exists()


# Modules every stage shares that parse params and write files; the values they read are
# tracked as params, so they are not listed as code deps (a change to them reruns nothing).
SHARED_INFRA = {"pointvl/config.py", "pointvl/io.py", "pointvl/stages/_cli.py"}
PIPELINES = ["dvc.yaml", "studies/rl/dvc.yaml", "studies/view/dvc.yaml",
             "studies/paper_sim/dvc.yaml", "studies/sft_seeds/dvc.yaml"]  # fmt: skip
_IMPORTS = """
import atexit, json, runpy, sys
out, mod = sys.argv[1], sys.argv[2]
def dump():
    files = [getattr(m, "__file__", None) for m in list(sys.modules.values())]
    with open(out, "w") as f:
        json.dump(sorted(x for x in files if x and "/pointvl/" in x), f)
atexit.register(dump)
sys.argv = [mod, *sys.argv[3:]]
runpy.run_module(mod, run_name="__main__", alter_sys=True)
"""


def _imported(tmp: Path, module: str, *args) -> set[str]:
    """The pointvl source files a stage run imports (run in a fresh interpreter)."""
    out = tmp / f"imports_{module}.json"
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORTS, str(out), module, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = {Path(f).resolve() for f in json.loads(out.read_text())}
    rel = {f.relative_to(ROOT).as_posix() for f in files if f.is_relative_to(ROOT)}
    assert rel, f"{module}: no pointvl file of this checkout imported ({sorted(files)[:3]})"
    return {f for f in rel if not f.endswith("__init__.py")} - SHARED_INFRA


def _stage_deps(pipeline: str, module: str) -> list[list[str]]:
    """The code deps (pointvl/...) of every stage of ``pipeline`` whose command runs ``module``."""
    stages = yaml.safe_load((ROOT / pipeline).read_text())["stages"]
    found = []
    for stage in stages.values():
        body = stage.get("do", stage)
        if f"-m {module} " in body["cmd"] + " ":
            found.append(
                [d for d in body["deps"] if isinstance(d, str) and d.startswith("pointvl")]
            )
    return found


@pytest.mark.parametrize(
    "module,args",
    [
        ("pointvl.stages.rl", ("--variant", "grca_rpc")),
        ("pointvl.stages.sft", ()),
        ("pointvl.stages.evaluate", ("--system", "sft", "--checkpoint", "{tmp}/sft/final")),
    ],
    ids=["rl", "sft", "evaluate"],
)
def test_every_module_a_stage_imports_is_one_of_its_deps(built, module, args):
    """DVC reruns a stage only when a listed dep changes: a module the run imports but the
    stage does not list (the rl stage once missed pointvl/data/dataset.py, evaluate the
    model code) lets results go stale silently. Checked for every pipeline running it."""
    tmp, _ = built
    params = write_params(tmp, evaluate={"limit": 4, "data_dir": str(tmp / "data"),
                                         "predictions_dir": str(tmp / "ev/p"),
                                         "metrics_dir": str(tmp / "ev/m")})  # fmt: skip
    args = [a.format(tmp=tmp) for a in args]
    imported = _imported(tmp, module, "--params", str(params), *args)
    missing = {}
    for pipeline in PIPELINES:
        for deps in _stage_deps(pipeline, module):
            gap = sorted(
                f
                for f in imported
                if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)
            )
            if gap:
                missing[pipeline] = gap
    assert not missing, missing
