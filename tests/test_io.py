"""pointvl.io: atomic writes leave either the old file or the whole new one, readable by all."""

from __future__ import annotations

import json
import os
import stat

import pytest

from pointvl.io import atomic_write_json, atomic_write_text


def test_atomic_write_is_readable_and_leaves_no_temp(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_json(tmp_path / "m" / "x.json", {"b": 1, "a": 2})
    finally:
        os.umask(old)
    assert path.read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = atomic_write_text(tmp_path / "x.txt", "old")

    with pytest.raises(TypeError):
        atomic_write_text(path, 3)  # not text: the write fails half-way
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_metrics_hold_results_and_run_facts_go_beside_them(tmp_path):
    """Numbers a rerun reproduces -> the metrics file; timings, rates, strings -> .run.json."""
    from pointvl.io import split_metrics, write_metrics

    record = {
        "train": 16, "gt_rpc_mean": 0.79, "profile": "tiny", "seconds": 61.6,
        "instances_per_s": 71.4, "instances_per_s_per_core": 35.7, "wall_s": 3.0,
        "s_per_step": 1.2, "train_runtime": 4.6, "group/generate_s": 0.4, "figures": ["a"],
        "reward/seq/first": 0.5, "val/spans/parse_fail_frac/last": 1.0, "resumed_from": None,
        "iou3d": {"mean": 0.7, "lo": 0.6, "hi": 0.8, "n": 400}, "flag": True,
        "tokens/bbox2d": 12, "spread3d": 0.1, "samples": 3,
    }  # fmt: skip
    metrics, run = split_metrics(record)
    assert metrics == {"train": 16, "gt_rpc_mean": 0.79, "reward/seq/first": 0.5,
                       "val/spans/parse_fail_frac/last": 1.0, "iou3d": record["iou3d"],
                       "tokens/bbox2d": 12, "spread3d": 0.1, "samples": 3}  # fmt: skip
    assert {**metrics, **run} == record  # nothing lost
    m_path, r_path = write_metrics(tmp_path / "m" / "stage.json", record)
    assert r_path.name == "stage.run.json"
    assert json.loads(m_path.read_text()) == metrics and json.loads(r_path.read_text()) == run


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_next_run_removes_what_a_killed_run_left(tmp_path):
    """kill -9 mid-write leaves '.<name>.<host>-<pid>.<rnd>.tmp'; the next write removes it
    (its process is gone), but never a live process's temporary."""
    from pointvl.io import _host, atomic_dir

    dead = tmp_path / f".x.json.{_host()}-{_dead_pid()}.abc.tmp"
    dead.write_text("half")
    live = tmp_path / f".x.json.{_host()}-{os.getpid()}.def.tmp"
    live.write_text("in progress")
    other_host = tmp_path / f".x.json.ffffffff-{_dead_pid()}.ghi.tmp"
    other_host.write_text("someone else's")
    atomic_write_json(tmp_path / "x.json", {})
    assert not dead.exists() and live.exists() and other_host.exists()

    stale_dir = tmp_path / f".data.{_host()}-{_dead_pid()}.xyz.tmp"
    (stale_dir / "train").mkdir(parents=True)
    with atomic_dir(tmp_path / "data") as tmp:
        (tmp / "f").write_text("1")
    assert not stale_dir.exists() and (tmp_path / "data" / "f").read_text() == "1"
