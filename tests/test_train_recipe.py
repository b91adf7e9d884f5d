"""The recipe measurements: share of within-group reward variance explained by parse success."""

from __future__ import annotations

import numpy as np
import pytest

from pointvl.train.recipe import choose, parse_variance_share


def test_parse_share_is_one_when_parsing_decides_the_reward_and_zero_when_it_cannot():
    ok = np.array([1, 1, 0, 0, 1, 0, 1, 1], bool)
    r = np.where(ok, 0.8, 0.0)
    assert parse_variance_share(r, ok, 4)["share_parse"] == pytest.approx(1.0)
    r2 = np.array([0.1, 0.5, 0.3, 0.9, 0.2, 0.4, 0.6, 0.8])
    out = parse_variance_share(r2, np.ones(8, bool), 4)
    assert out["share_parse"] == pytest.approx(0.0) and out["zero_spread_frac"] == 0.0
    mixed = parse_variance_share(np.array([0.8, 0.6, 0.0, 0.0]), np.array([1, 1, 0, 0], bool), 4)
    assert 0.9 < mixed["share_parse"] < 1.0  # most, not all: the parsed two differ too


def test_choose_prefers_eligible_best_slope():
    short = {
        "a": {"grpo": {"val_slope_per_100": 0.05, "rollout_parse_fail_max": 0.5},
              "grca": {"val_slope_per_100": 0.06, "rollout_parse_fail_max": 0.1}},
        "b": {"grpo": {"val_slope_per_100": 0.01, "rollout_parse_fail_max": 0.1},
              "grca": {"val_slope_per_100": 0.02, "rollout_parse_fail_max": 0.1}},
    }  # fmt: skip
    c = choose(short)
    assert c["chosen"] == "b" and not c["candidates"]["a"]["eligible"]
