"""eval_trivial stage: trivial predictors through the model metric path, as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_eval_trivial_stage(smoke_data, tmp_path):
    params = {
        "profile": "smoke",
        "eval_trivial": {
            "data_dir": str(smoke_data),
            "n_boot": 200,
            "metrics": str(tmp_path / "trivial.json"),
            "probes": str(tmp_path / "probes.json"),
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pointvl.stages.eval_trivial",
            "--params",
            str(tmp_path / "params.yaml"),
        ],
        check=True,
        cwd=ROOT,
        timeout=300,
    )
    out = json.loads((tmp_path / "trivial.json").read_text())
    assert set(out) == {
        "trivial: train-mean box",
        "trivial: centroid + mean size",
        "trivial: cloud AABB (no learning)",
        "trivial: keypoints at box centre",
        "trivial: cloud AABB + FPS keypoints (no learning)",
    }
    centre = out["trivial: keypoints at box centre"]
    # collapsed keypoints: containment is perfect while the spread is 0 and PCK is low
    assert centre["spread3d"]["mean"] == 0.0 and centre["kpa3d"]["mean"] > 0.9
    assert centre["pck3d"]["mean"] < 0.5
    for row in out.values():
        assert row["parse_fail"]["mean"] == 0.0
        for m in row.values():
            assert m["lo"] <= m["mean"] <= m["hi"] and m["n"] == 8
    probes = json.loads((tmp_path / "probes.json").read_text())
    assert probes["cloud_fps_exact"]["mean"] == 1.0 and probes["_meta"]["task"] == "full"
    fps = out["trivial: cloud AABB + FPS keypoints (no learning)"]
    assert fps["pck3d"]["mean"] == 1.0  # the full task's keypoints are FPS of its input
