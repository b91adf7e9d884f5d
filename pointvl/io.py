"""Atomic writes: a half-written file or folder is never taken as complete.

Every output is first written to a temporary sibling ``.<name>.<tag>.<random>.tmp`` and renamed
over ``<name>`` only when whole. ``<tag>`` is ``<host>-<pid>`` of the writing process, so the
next write of the same path removes the temporaries that a killed run (kill -9, power loss)
left behind: those whose process no longer runs on this host (``remove_stale_temps``).
Temporaries of live processes, and of other hosts sharing the folder, are left alone.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STALE_UNTAGGED_S = 24 * 3600
"""A temporary without a host-pid tag (written before tags existed) is stale after a day."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _tag() -> str:
    return f"{_host()}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of ``path`` left by dead processes of this host; return them."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        tag = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        host, _, pid = tag.partition("-")
        if pid.isdigit():
            stale = host == _host() and not _alive(int(pid))
        else:
            try:
                stale = time.time() - tmp.lstat().st_mtime > STALE_UNTAGGED_S
            except FileNotFoundError:
                continue
        if stale:
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


@contextmanager
def atomic_file(path: str | os.PathLike):
    """Yield a temporary file path beside ``path``; on success it replaces ``path`` (mode
    0644 under the usual umask, not mkstemp's 0600), on error it vanishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_tag()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place."""
    with atomic_file(path) as tmp, open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """JSON with sorted keys and a trailing newline, written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, renamed into place."""
    import torch

    with atomic_file(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


@contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary folder; on success it replaces ``path`` whole, on error it vanishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{_tag()}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Records of a JSON-lines file ([] when it does not exist); blank lines are skipped."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not a JSON line ({e.msg})") from None
    return out


def write_csv(records: list[dict], path: str | os.PathLike) -> Path:
    """Records -> CSV with the union of keys (``step`` first, empty where absent), atomically.

    Nested values (lists, dicts) are left out: CSV columns are scalars (DVC plots, pandas)."""
    import csv
    import io

    keys = sorted({k for r in records for k, v in r.items() if not isinstance(v, list | dict)})
    keys = ["step", *[k for k in keys if k != "step"]]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, restval="", extrasaction="ignore")
    w.writeheader()
    for r in records:
        w.writerow({k: v for k, v in r.items() if not isinstance(v, list | dict)})
    return atomic_write_text(path, buf.getvalue())


# a key (its last "/" part) naming a duration or a rate: run facts, not results
TIMING_KEY = re.compile(
    r"(^|_)(s|seconds|secs|runtime|wall)$|(^|_)per_s(ec|econd)?(_|$)|^s_per_|step_time"
)


def split_metrics(record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, run facts) of a stage's record. Metrics: the numbers a rerun must reproduce
    (nested dicts kept); run facts: timings and rates (``TIMING_KEY``), strings, None,
    lists and booleans (what ``dvc metrics diff`` should not list as changed results)."""
    metrics: dict[str, Any] = {}
    run: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            m, r = split_metrics(value)
            if m:
                metrics[key] = m
            if r:
                run[key] = r
        elif (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and not TIMING_KEY.search(key.rsplit("/", 1)[-1])
        ):
            metrics[key] = value
        else:
            run[key] = value
    return metrics, run


def write_metrics(path: str | os.PathLike, record: dict[str, Any]) -> tuple[Path, Path]:
    """A stage's record as two JSON files, atomically: ``path`` holds the metrics (what DVC
    tracks, ``dvc metrics show / diff``), ``<stem>.run.json`` beside it the run facts
    (timings, strings; see ``split_metrics``). Returns both paths."""
    path = Path(path)
    metrics, run = split_metrics(record)
    run_path = path.with_name(path.stem + ".run.json")
    return atomic_write_json(path, metrics), atomic_write_json(run_path, run)
