"""glibc's heap kept across RL steps: the allocator setting of a CPU RL process.

Why: an RL step of the ``tiny`` policy allocates and frees many tensors. With glibc's
defaults, freeing more than 128 KiB at the top of the heap returns it to the kernel
(``M_TRIM_THRESHOLD``), and tensors above a (dynamic) threshold get their own ``mmap``
(``M_MMAP_THRESHOLD``); either way the next allocation lands on fresh pages, each first
touched through a page fault. ``keep_heap`` (64 MiB spare at the top, trim beyond 128 MiB,
``mmap`` only above 32 MiB) keeps the pages. Measured by ``benchmarks/bench_train.py``
(minor faults per RL step, glibc's defaults -> ``keep_heap``): at 8 prompts x 8, 155,000 ->
84,000 in the committed runs' setting, 15,000 -> 3,100 with ``prompt_sharing: prefix``,
371,000 -> 306,000 for stock TRL; at 2 prompts x 8 ours take ~20 either way (stock TRL
14,800 -> 7,500). Its effect on step time is within this machine's drift between runs (the
two settings cannot share a process, so it is not measured in one run). It changes where
memory comes from, never a value (``tests/test_allocator.py``: sampled completions and their
log-probs are the same bits in a process with it and one without).

``mallopt`` is process-wide and glibc-only: elsewhere (macOS, musl) ``keep_heap`` does
nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX_MIB = 32  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit


def keep_heap(top_pad_mib: int = 64, mmap_threshold_mib: int = MMAP_THRESHOLD_MAX_MIB) -> dict:
    """Ask glibc to keep ``top_pad_mib`` MiB spare at the top of the heap, to trim only beyond
    twice that, and to serve allocations up to ``mmap_threshold_mib`` MiB from the heap.
    -> what was set ({"allocator": "glibc", "set", "top_pad_mib", "trim_mib",
    "mmap_threshold_mib"}), or {"allocator": <libc>, "set": False} without glibc."""
    if top_pad_mib < 0:
        raise ValueError(f"keep_heap(top_pad_mib={top_pad_mib}): expected >= 0")
    if not 0 <= mmap_threshold_mib <= MMAP_THRESHOLD_MAX_MIB:
        raise ValueError(
            f"keep_heap(mmap_threshold_mib={mmap_threshold_mib}): expected 0 ..."
            f" {MMAP_THRESHOLD_MAX_MIB} (glibc's ceiling)"
        )
    libc_name = platform.libc_ver()[0] or "unknown"
    path = ctypes.util.find_library("c")
    if libc_name != "glibc" or path is None:
        return {"allocator": libc_name, "set": False}
    libc = ctypes.CDLL(path)
    pad, trim, mmap = top_pad_mib << 20, 2 * top_pad_mib << 20, mmap_threshold_mib << 20
    ok = all(
        libc.mallopt(option, value) == 1
        for option, value in ((M_TOP_PAD, pad), (M_TRIM_THRESHOLD, trim), (M_MMAP_THRESHOLD, mmap))
    )
    return {"allocator": "glibc", "set": ok, "top_pad_mib": top_pad_mib,
            "trim_mib": trim >> 20, "mmap_threshold_mib": mmap_threshold_mib}  # fmt: skip
