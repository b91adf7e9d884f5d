"""Point-only baselines (Table 2): shapes, set-loss invariances, learning, the stage end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pointvl.baselines import (
    BASELINES,
    RegressionData,
    build_baseline,
    chamfer_loss,
    fit,
    hungarian_loss,
    regression_loss,
)
from pointvl.baselines.experiment import BASELINE_NAMES, BaselineConfig
from pointvl.baselines.experiment import run_baseline as run
from pointvl.baselines.pointnet2 import ball_query
from pointvl.config import ConfigError, from_dict
from pointvl.eval.trivial import REPORTED_METRICS

ROOT = Path(__file__).resolve().parent.parent
M = 16


def small(name: str):
    """The CPU-profile backbone sizes, Point-BERT with 8 groups of 8 for 64-point clouds."""
    size = (
        {"num_points": 64, "num_groups": 8, "points_per_group": 8} if name == "pointbert" else None
    )
    return build_baseline(name, M, 6, size)


def clouds(b: int = 4, n: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(b, n, 3, generator=g) - 0.5  # (B, N, 3)
    normals = torch.nn.functional.normalize(torch.randn(b, n, 3, generator=g), dim=-1)
    return torch.cat([xyz * torch.rand(b, 1, 3, generator=g), normals], dim=-1)  # (B, N, 6)


@pytest.mark.parametrize("name", BASELINES)
def test_shapes_and_valid_boxes(name):
    torch.manual_seed(0)
    box, kpts = small(name)(clouds())
    assert box.shape == (4, 6) and kpts.shape == (4, M, 3)
    assert (box[:, 3:] > box[:, :3]).all()  # min < max by construction (softplus size)


@pytest.mark.parametrize("name", BASELINES)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    model = small(name)
    pts = clouds()
    box, kpts = model(pts)
    gt_box = torch.cat([pts[..., :3].amin(1), pts[..., :3].amax(1)], dim=-1)  # (B, 6)
    regression_loss(box, kpts, gt_box, pts[:, :M, :3])["loss/total"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, missing


@pytest.mark.parametrize("loss_fn", [hungarian_loss, chamfer_loss])
def test_set_loss_is_permutation_invariant_and_zero_at_gt(loss_fn):
    g = torch.Generator().manual_seed(1)
    gt = torch.rand(3, M, 3, generator=g) - 0.5  # (B, M, 3)
    pred = gt + 0.05 * torch.randn(3, M, 3, generator=g)  # (B, M, 3)
    perm = torch.randperm(M, generator=g)
    assert loss_fn(gt, gt).item() == 0.0
    assert loss_fn(gt[:, perm], gt).item() == 0.0
    torch.testing.assert_close(loss_fn(pred, gt[:, perm]), loss_fn(pred, gt))
    torch.testing.assert_close(loss_fn(pred[:, perm], gt), loss_fn(pred, gt))
    assert loss_fn(pred, gt).item() > 0.0


def test_hungarian_loss_is_the_minimum_over_permutations():
    """Brute force on M = 4: the loss equals min_σ (1/4) Σ_i d_{iσ(i)} over all 24 σ."""
    from itertools import permutations

    g = torch.Generator().manual_seed(2)
    pred, gt = torch.rand(1, 4, 3, generator=g), torch.rand(1, 4, 3, generator=g)
    brute = min((pred[0] - gt[0, list(s)]).abs().mean().item() for s in permutations(range(4)))
    assert hungarian_loss(pred, gt).item() == pytest.approx(brute, abs=1e-6)


def test_ball_query_matches_a_naive_loop():
    g = torch.Generator().manual_seed(3)
    xyz, centres = torch.rand(2, 50, 3, generator=g), torch.rand(2, 5, 3, generator=g)
    centres[:, 0] = xyz[:, 7]  # a centre on the cloud
    idx = ball_query(xyz, centres, 0.3, 8)  # (B, S, K)
    for b in range(2):
        for s in range(5):
            inside = [j for j in range(50) if (xyz[b, j] - centres[b, s]).norm() <= 0.3][:8]
            if inside:
                want = inside + [inside[0]] * (8 - len(inside))
                assert idx[b, s].tolist() == want


def test_pointnet_overfits_a_handful_of_samples():
    torch.manual_seed(0)
    pts = clouds(8, 64, seed=4)
    data = RegressionData(
        points=pts,
        boxes=torch.cat([pts[..., :3].amin(1), pts[..., :3].amax(1)], dim=-1),
        kpts=pts[:, :M, :3].clone(),
    )
    model = small("pointnet")
    model.head.init_box_bias(data.boxes)
    log = fit(
        model, data, epochs=150, batch_size=8, learning_rate=3e-3, weight_decay=0.0,
        num_points=64, keypoint_loss="hungarian", seed=0, threads=1, progress=False,
    )  # fmt: skip
    assert log[-1]["loss/total"] < 0.2 * log[0]["loss/total"]


def test_bad_values_raise_config_errors_naming_them():
    assert BASELINE_NAMES == BASELINES  # the stage checks names without importing torch
    with pytest.raises(ConfigError, match="'pointnet3'"):
        run(BaselineConfig(), "pointnet3", "smoke")
    with pytest.raises(ConfigError, match="keypoint_loss='l2'"):
        from_dict(BaselineConfig, {"keypoint_loss": "l2"}, "baselines")
    with pytest.raises(ConfigError, match=r"sizes.pointnet: unknown key\(s\) \['depth'\]"):
        BaselineConfig(sizes={"pointnet": {"depth": 3}}).validate()


def section(data_dir, tmp_path, **values) -> dict:
    """A ``baselines`` section for the smoke data, writing under ``tmp_path``."""
    return {
        "data_dir": str(data_dir),
        "epochs": 2,
        "batch_size": 8,
        "num_points": 64,
        "n_boot": 100,
        "threads": 1,
        "out_dir": str(tmp_path / "ckpt"),
        "predictions_dir": str(tmp_path / "pred"),
        "metrics_dir": str(tmp_path / "metrics"),
        "log_dir": str(tmp_path / "log"),
        **values,
    }


@pytest.mark.parametrize("name", ["pointnet2", "pointbert"])
def test_stage_runs_every_backbone(smoke_data, tmp_path, name):
    cfg = BaselineConfig(**section(smoke_data, tmp_path, epochs=1, keypoint_loss="chamfer"))
    out = run(cfg, name, "smoke", progress=False)
    assert out["_meta"]["system"] == name and out["parse_fail"]["mean"] == 0.0
    assert (tmp_path / f"ckpt/{name}/model.pt").is_file()


def test_stage_end_to_end_and_from_predictions(smoke_data, tmp_path):
    params = {"profile": "smoke", "baselines": section(smoke_data, tmp_path)}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [
        sys.executable,
        "-m",
        "pointvl.stages.baseline",
        "--params",
        str(tmp_path / "params.yaml"),
    ]
    cmd += ["--name", "pointnet", "--no-progress"]
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=300, capture_output=True)
    first = json.loads((tmp_path / "metrics/pointnet.json").read_text())
    assert set(first) == {*REPORTED_METRICS, "_meta"}
    assert first["_meta"]["n"] == 8 and first["_meta"]["system"] == "pointnet"
    assert first["parse_fail"]["mean"] == 0.0 and 0.0 < first["iou3d"]["mean"] <= 1.0
    rows = (tmp_path / "pred/pointnet.jsonl").read_text().splitlines()
    assert len(rows) == 8 and set(json.loads(rows[0])) == {"uid", "question", "completion"}
    assert len((tmp_path / "log/pointnet.jsonl").read_text().splitlines()) == 2
    csv = (tmp_path / "log/pointnet.csv").read_text().splitlines()  # what `dvc plots` reads
    assert len(csv) == 3 and {"epoch", "loss/total"} <= set(csv[0].split(","))
    assert (tmp_path / "ckpt/pointnet/model.pt").is_file()
    subprocess.run(cmd + ["--from-predictions"], check=True, cwd=ROOT, timeout=300)
    again = json.loads((tmp_path / "metrics/pointnet.json").read_text())
    assert again == first


def test_cosine_schedule_is_warmup_then_half_cosine():
    """transformers' schedule: lr · t / W for t < W, then lr · ½ (1 + cos(π (t − W) / (T − W)))."""
    import math

    from pointvl.baselines.train import cosine_schedule

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
    T, W = 40, 2  # warmup_frac 0.05 of 40 steps
    sched = cosine_schedule(opt, T)
    got = []
    for _ in range(T):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    want = [2.0 * t / W if t < W else 1.0 * (1 + math.cos(math.pi * (t - W) / (T - W)))
            for t in range(T)]  # fmt: skip
    assert got == pytest.approx(want, abs=1e-12)
