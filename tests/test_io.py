"""pointvl.io: atomic writes leave either the old file or the whole new one, readable by all."""

from __future__ import annotations

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
