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
