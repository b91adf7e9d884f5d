"""``pointvl.train.allocator.keep_heap``: glibc keeps the top of its heap between steps.

The RL stage calls it on a CPU launch (the decoding loop's small tensors then stop costing a
page fault per fresh page). Checked here on the mechanism itself, in fresh processes: the
same allocate-free-allocate pattern takes minor page faults under glibc's defaults and
almost none after ``keep_heap``.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from pointvl.train.allocator import keep_heap

GLIBC = platform.libc_ver()[0] == "glibc"

# 40 buffers of 64 KiB (under glibc's 128 KiB mmap threshold: they come from the heap, whose
# top grows), freed, then the same again: the second round's pages are fresh unless the
# heap's top was kept. -> minor faults of the second round.
PROBE = """
import json, resource, sys
if sys.argv[1] == "keep":
    from pointvl.train.allocator import keep_heap
    keep_heap(8)
def round_():
    bufs = [bytearray(64 * 1024) for _ in range(40)]
    del bufs
round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    round_()
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before))
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_keep_heap_sets_glibc_and_the_heap_top_stays():
    assert keep_heap(8) == {"allocator": "glibc", "set": True, "top_pad_mib": 8, "trim_mib": 16,
                            "mmap_threshold_mib": 32}  # fmt: skip
    default, kept = _faults("default"), _faults("keep")
    # 5 rounds x 40 x 64 KiB = 3,200 fresh pages when the top is trimmed each time
    assert default > 1000, default
    assert kept < 100, kept


def test_keep_heap_refuses_values_glibc_would_not_take():
    with pytest.raises(ValueError, match="top_pad_mib=-1"):
        keep_heap(-1)
    with pytest.raises(ValueError, match="mmap_threshold_mib=64"):
        keep_heap(8, 64)


DECODE = """
import json, sys, torch
if sys.argv[1] == "keep":
    from pointvl.train.allocator import keep_heap
    keep_heap()
from pointvl.eval.generate import decode
from pointvl.train.lab import lab_sampling, prompt_batch
from pointvl.train.tiny import tiny_lm, tiny_tokenizer
torch.set_num_threads(1)
tok = tiny_tokenizer()
model = tiny_lm(tok, hidden=64, layers=2, seed=5).eval()
batch = prompt_batch(tok, [{"prompt": "a"}, {"prompt": "the box is"}])  # left-padded
sampling = lab_sampling(tok, temperature=0.7)  # 40 new tokens at most
torch.manual_seed(3)
out = decode(model, batch, sampling, 4, return_logprobs=True)
print(json.dumps([out.ids, [[float.hex(x) for x in r] for r in out.logprobs]]))
"""


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_sampled_completions_and_logprobs_are_the_same_bits_with_and_without_keep_heap():
    def run(mode: str):
        out = subprocess.run([sys.executable, "-c", DECODE, mode], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    default, kept = run("default"), run("keep")
    assert len(default[0]) == 8 and sum(map(len, default[0])) > 8
    assert kept == default
