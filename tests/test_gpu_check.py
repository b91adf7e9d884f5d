"""The GPU check (scripts/gpu_check.py): runs where CUDA exists, reports cleanly where not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def test_without_cuda_it_says_so_and_exits_0():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the gpu-marked test runs the check")
    out = subprocess.run([sys.executable, str(ROOT / "scripts/gpu_check.py")], capture_output=True,
                         text=True, timeout=120, check=True)  # fmt: skip
    assert json.loads(out.stdout) == {"ran": False, "reason": "no CUDA device"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_paper_path_on_gpu(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts/gpu_check.py"), "--out",
                    str(tmp_path / "gpu.json"), "--new-tokens", "32"], check=True, timeout=900)  # fmt: skip
    r = json.loads((tmp_path / "gpu.json").read_text())
    assert r["ran"] and r["grca_steps"]["steps"] == 2 and r["forward_backward"]["peak_gib"] > 1
