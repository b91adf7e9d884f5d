"""pointvl.eval.objects: the objects behind saved predictions, exactly, in any checkout."""

from __future__ import annotations

import numpy as np
import pytest

from pointvl.data.build import BuildDatasetConfig, build, build_instances
from pointvl.data.dataset import read_split
from pointvl.eval.objects import check_same_objects, planned_test_uids, prediction_objects

CFG = BuildDatasetConfig(train_count=4, test_count=6, num_points=128, image_size=48, workers=1)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("objects") / "ds"
    build(CFG, out, 100, "smoke", progress=False)
    return out


def test_rebuilt_instances_are_the_stored_rows_byte_for_byte(built):
    table = read_split(built, "test").to_pylist()
    uids = [table[4]["uid"], table[1]["uid"]]
    for row, stored in zip(build_instances(CFG, 100, uids), (table[4], table[1])):
        for key in ("uid", "category", "questions", "targets", "image_png", "mask_png"):
            assert row[key] == stored[key], key
        np.testing.assert_array_equal(np.asarray(row["points"]).reshape(-1), stored["points"])
    with pytest.raises(KeyError, match="test-999999"):
        build_instances(CFG, 100, ["test-999999"])


def test_read_and_built_objects_agree_and_questions_guard_the_pairing(built, tmp_path):
    uids = planned_test_uids(CFG, 3)
    assert uids == ["test-000000", "test-000001", "test-000002"]
    read, src_read = prediction_objects(uids, built, CFG, 100)
    made, src_made = prediction_objects(uids, tmp_path / "absent", CFG, 100)
    assert src_read.startswith("read") and src_made.startswith("built")
    for a, b in zip(read, made):
        assert a["uid"] == b["uid"] and a["question"] == b["question"]
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_allclose(a["bbox3d"], b["bbox3d"])
    preds = {s["uid"]: {"uid": s["uid"], "question": s["question"]} for s in read}
    check_same_objects(read, preds)
    # a prediction made on another build of this uid asked another question: refused
    wrong = {**preds, uids[1]: {"uid": uids[1], "question": read[0]["question"] + " (other)"}}
    with pytest.raises(ValueError, match="another dataset build"):
        check_same_objects(read, wrong)
    with pytest.raises(ValueError, match="no prediction"):
        check_same_objects(read, {})
