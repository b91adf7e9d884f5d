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
    kind=st.sampled_from(["kpa", "matched"]),
)
def test_vectorized_equals_rowwise(seeds, edits, q, kind):
    texts, targets = [], []
    for s in seeds:
        tg = demo_target(s)
        texts += demo_completions(tg, q, seed=s)
        targets += [tg] * 8
    for row, pos, ins in edits:
        row %= len(texts)
        texts[row] = texts[row][:pos] + ins + texts[row][pos:]
    parsed = [parse_output(t, num_keypoints=None) for t in texts]
    batch = score_batch(parsed, targets, q, keypoint_reward=kind)
    for i, (p, tg) in enumerate(zip(parsed, targets)):
        r = score_completion(p, tg, q, keypoint_reward=kind)
        assert np.allclose(batch["per_field_rewards"][i], [r.fields[k] for k in GEOMETRIC_FIELDS])
        for name in ("rpc", "seq", "format", "answer", "description"):
            assert np.isclose(batch[name][i], getattr(r, name)), (name, i, texts[i])


def test_matched_keypoint_reward_cannot_be_won_by_collapse():
    """GT keypoints score 1, any permutation of them too; all keypoints at the box centre
    (which wins the paper's KPA with 1.0) scores low; half the keypoints right scores ~1/2."""
    from pointvl.geometry import keypoint_containment
    from pointvl.rewards import matched_keypoint_reward

    rng = np.random.default_rng(0)
    gt = rng.uniform(-0.4, 0.4, (16, 3))
    box = np.concatenate([gt.min(0), gt.max(0)])
    diag = float(np.linalg.norm(box[3:] - box[:3]))
    assert matched_keypoint_reward(gt, gt, diag) == 1.0
    assert matched_keypoint_reward(gt[rng.permutation(16)], gt, diag) == 1.0
    centre = np.tile((box[:3] + box[3:]) / 2, (16, 1))
    assert keypoint_containment(centre, box) == 1.0
    assert matched_keypoint_reward(centre, gt, diag) < 0.3
    half = np.concatenate([gt[:8], centre[:8]])
    assert 0.5 <= matched_keypoint_reward(half, gt, diag) < 0.5 + 0.3 / 2
    assert matched_keypoint_reward(gt[:4], gt, diag) == 0.25  # missing keypoints count 0
    assert matched_keypoint_reward(np.full((16, 3), np.nan), gt, diag) == 0.0
