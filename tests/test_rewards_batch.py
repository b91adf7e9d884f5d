"""score_batch (vectorized per group) equals score_completion row by row."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pointvl.demo import demo_completions, demo_target
from pointvl.rewards import score_batch, score_completion
from pointvl.schema import GEOMETRIC_FIELDS, parse_output

_NOISE = st.sampled_from(list('{}[],:"0123456789 -.') + ["NaN", "1e999", "[[", "]]"])


@settings(max_examples=60, deadline=None)
@given(
    seeds=st.lists(st.integers(0, 30), min_size=1, max_size=3),
    edits=st.lists(st.tuples(st.integers(0, 23), st.integers(0, 900), _NOISE), max_size=6),
    q=st.sampled_from([10, 100, 1000]),
)
def test_vectorized_equals_rowwise(seeds, edits, q):
    texts, targets = [], []
    for s in seeds:
        tg = demo_target(s)
        texts += demo_completions(tg, q, seed=s)
        targets += [tg] * 8
    for row, pos, ins in edits:
        row %= len(texts)
        texts[row] = texts[row][:pos] + ins + texts[row][pos:]
    parsed = [parse_output(t, num_keypoints=None) for t in texts]
    batch = score_batch(parsed, targets, q)
    for i, (p, tg) in enumerate(zip(parsed, targets)):
        r = score_completion(p, tg, q)
        assert np.allclose(batch["per_field_rewards"][i], [r.fields[k] for k in GEOMETRIC_FIELDS])
        for name in ("rpc", "seq", "format", "answer", "description"):
            assert np.isclose(batch[name][i], getattr(r, name)), (name, i, texts[i])
