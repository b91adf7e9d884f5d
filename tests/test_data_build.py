"""The build (determinism, atomicity, manifest), the loader and the build_dataset stage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from pointvl.config import ConfigError, load_section
from pointvl.data import build as build_mod
from pointvl.data.build import BuildDatasetConfig, build, content_hash
from pointvl.data.dataset import PointVLDataset, collate, list_texts, read_split
from pointvl.geometry import keypoint_containment, reprojected_footprint
from pointvl.schema import dequantize_3d, format_target, parse_output

ROOT = Path(__file__).resolve().parent.parent
Q = 100


def small_cfg(**kw) -> BuildDatasetConfig:
    base = dict(train_count=16, test_count=6, num_points=128, image_size=48, workers=1,
                shard_size=7)  # fmt: skip
    return BuildDatasetConfig(**(base | kw))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "smoke"
    metrics = build(small_cfg(), out, Q, "smoke", progress=False)
    return out, metrics


def test_manifest_counts_and_histogram(built):
    out, metrics = built
    man = json.loads((out / "manifest.json").read_text())
    assert man["splits"]["train"]["count"] == 16 and man["splits"]["test"]["count"] == 6
    assert len(man["splits"]["train"]["shards"]) == 3  # 7 + 7 + 2 rows
    hist = man["splits"]["train"]["category_histogram"]
    assert sum(hist.values()) == 16 and len(hist) == 14  # round robin over 14 categories
    assert man["content_hash"] == content_hash(out) == metrics["content_hash"]
    assert metrics["skipped_total"] == 0 and metrics["train"] == 16
    assert 0.3 < man["gt_rpc_mean"] < 1.0  # footprint of the AABB vs mask box
    table = pq.read_table(out / man["splits"]["train"]["shards"][0])
    assert table.num_rows == 7 and table.schema.field("points").type.list_size == 128 * 6
    assert not list(out.parent.glob(".*tmp*"))


def test_rebuild_is_byte_identical_and_seed_sensitive(built, tmp_path):
    out, metrics = built
    again = build(small_cfg(), tmp_path / "again", Q, "smoke", progress=False)
    assert again["content_hash"] == metrics["content_hash"]
    for shard in sorted(out.glob("*/shard-*.parquet")):
        twin = tmp_path / "again" / shard.relative_to(out)
        assert twin.read_bytes() == shard.read_bytes()
    assert (tmp_path / "again" / "manifest.json").read_bytes() == (
        out / "manifest.json"
    ).read_bytes()
    other = build(small_cfg(seed=1), tmp_path / "other", Q, "smoke", progress=False)
    assert other["content_hash"] != metrics["content_hash"]


def test_two_workers_give_the_same_bytes(built, tmp_path):
    out, metrics = built
    par = build(small_cfg(workers=2), tmp_path / "par", Q, "smoke", progress=False)
    assert par["content_hash"] == metrics["content_hash"]


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = build_mod.make_instance

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(build_mod, "make_instance", flaky)
    with pytest.raises(KeyboardInterrupt):
        build(small_cfg(), tmp_path / "ds", Q, "smoke", progress=False)
    assert not (tmp_path / "ds").exists()
    assert list(tmp_path.iterdir()) == []


def test_an_unexpected_error_stops_the_build_and_names_the_instance(tmp_path, monkeypatch):
    """Was: counted as a skip, so a code or config error built an empty dataset that looked
    complete. Only known mesh faults are skipped."""
    real = build_mod.make_instance

    def broken(spec, *a, **k):
        if spec.index == 3 and spec.split == "train":
            raise TypeError("boom")
        return real(spec, *a, **k)

    monkeypatch.setattr(build_mod, "make_instance", broken)
    with pytest.raises(RuntimeError, match=r"instance train/3 \(\w+, attempt 0\).*TypeError: boom"):
        build(small_cfg(), tmp_path / "ds", Q, "smoke", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_skipped_procedural_slot_is_reseeded(tmp_path, monkeypatch):
    from pointvl.data.shapenet import MeshSkip

    real = build_mod.make_instance

    def flaky(spec, *a, **k):
        if spec.index == 3 and spec.split == "train" and spec.attempt == 0:
            raise MeshSkip("degenerate", "empty render")
        return real(spec, *a, **k)

    monkeypatch.setattr(build_mod, "make_instance", flaky)
    m = build(small_cfg(), tmp_path / "ds", Q, "smoke", progress=False)
    assert m["skipped"] == {"degenerate": 1} and m["train"] == 16


def test_out_refuses_a_folder_that_is_not_a_dataset(tmp_path, built):
    """Was: build_dataset --out DIR deleted whatever folder it named."""
    mine = tmp_path / "my_thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("precious")
    with pytest.raises(ConfigError, match="not empty and is not a built dataset"):
        build(small_cfg(), mine, Q, "smoke", progress=False)
    assert (mine / "chapter1.tex").read_text() == "precious"
    (tmp_path / "empty").mkdir()
    build_mod.check_out_dir(tmp_path / "empty")  # empty, or one of ours: fine
    build_mod.check_out_dir(built[0])


def test_a_flipped_bit_in_a_shard_is_caught_at_load(built, tmp_path):
    """Was: a 64-byte change in a shard loaded silently. The loader checks each shard's
    sha256 (once per process and file version)."""
    import shutil

    from pointvl.config import DataError
    from pointvl.data import dataset as dataset_mod

    copy = tmp_path / "copy"
    shutil.copytree(built[0], copy)
    PointVLDataset(copy, "train")  # intact: loads
    shard = copy / "train" / "shard-00001.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"shard-00001.parquet: sha256 .* differs"):
        PointVLDataset(copy, "train")
    assert len(dataset_mod._VERIFIED) >= 3  # the intact shards were checked once


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="build_dataset.source"):
        small_cfg(source="blender").validate()
    with pytest.raises(ConfigError, match="build_dataset.categories"):
        small_cfg(categories=["chair", "unicorn"]).validate()
    with pytest.raises(ConfigError, match="build_dataset.num_points"):
        small_cfg(num_points=0).validate()
    with pytest.raises(ConfigError, match="build_dataset.renderer"):
        small_cfg(renderer="vulkan").validate()


def test_params_profiles_load():
    cfgs = {p: load_section(ROOT / "params.yaml", "build_dataset", BuildDatasetConfig, p)
            for p in ("smoke", "tiny", "paper")}  # fmt: skip
    assert cfgs["paper"].num_points == 8192 and cfgs["paper"].image_size == 448
    assert cfgs["paper"].source == "shapenet"
    assert cfgs["smoke"].train_count < cfgs["tiny"].train_count


def test_loader_samples(built):
    out, _ = built
    ds = PointVLDataset(out, "train", with_mask=True, with_depth=True)
    val = PointVLDataset(out, "val")
    whole = PointVLDataset(out, "train_all")
    # val: the last 5% (at least 1) of the stored train split, held out from train
    assert len(whole) == 16 and len(val) == 1 and len(ds) == 15 and ds.num_instances == 15
    assert val[0]["uid"] == whole[15]["uid"] and ds[14]["uid"] == whole[14]["uid"]
    s = ds[5]
    assert s["points"].shape == (128, 6) and s["points"].dtype == torch.float32
    assert s["image"].shape == (48, 48, 3) and s["image"].dtype == torch.uint8
    assert s["K"].shape == (3, 3) and s["R"].shape == (3, 3) and s["t"].shape == (3,)
    assert s["kpts2d"].shape == (16, 2) and s["kpts3d"].shape == (16, 3)
    assert s["mask"].dtype == torch.bool and s["depth"].shape == (48, 48)
    assert s["category"] in s["description"]
    # the target is format_target of the continuous GT with this sample's answer
    gt = {k: s[k].numpy() for k in ("bbox2d", "bbox3d", "kpts2d", "kpts3d")}
    assert s["target"] == format_target({**gt, "answer": s["answer"],
                                         "description": s["description"]}, Q)  # fmt: skip
    parsed = parse_output(s["target"])
    assert all(e is None for e in parsed.errors.values())
    np.testing.assert_allclose(
        dequantize_3d(parsed.values["bbox3d"], Q), gt["bbox3d"], atol=0.5 / Q
    )
    # GT containment and footprint validity
    assert keypoint_containment(gt["kpts2d"], gt["bbox2d"]) == 1.0
    assert keypoint_containment(gt["kpts3d"], gt["bbox3d"]) == 1.0
    mask = s["mask"].numpy()
    rows, cols = np.nonzero(mask)
    np.testing.assert_array_equal(
        gt["bbox2d"], [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
    )
    foot, ok = reprojected_footprint(gt["bbox3d"], s["K"].numpy(), s["R"].numpy(), s["t"].numpy())
    assert ok
    # points + normals: unit normals, points inside the normalized cube
    p = s["points"].numpy()
    assert np.abs(p[:, :3]).max() <= 0.5 + 1e-6
    np.testing.assert_allclose(np.linalg.norm(p[:, 3:], axis=1), 1.0, atol=1e-4)


def test_loader_qa_modes_and_texts(built):
    out, _ = built
    rotate = PointVLDataset(out, "test")
    every = PointVLDataset(out, "test", qa_mode="all")
    first = PointVLDataset(out, "test", qa_mode="first")
    n_qa = sum(
        len(q) for q in read_split(out, "test", ["questions"]).column("questions").to_pylist()
    )
    assert len(rotate) == len(first) == 6 and len(every) == n_qa
    assert all(first[i]["qa_type"] == "category_mc" for i in range(6))
    assert len({rotate[i]["qa_type"] for i in range(6)}) > 2
    batch = collate([every[i] for i in range(4)])
    assert batch["points"].shape == (4, 128, 6) and batch["image"].shape == (4, 48, 48, 3)
    assert isinstance(batch["question"], list) and len(batch["target"]) == 4
    texts = list_texts(out)
    assert any(t.startswith('{"answer"') for t in texts) and any(t.endswith("?") for t in texts)
    with pytest.raises(ValueError, match="qa_mode"):
        PointVLDataset(out, "test", qa_mode="random")


def test_rotate_covers_every_qa_type_per_category():
    from pointvl.data.dataset import rotate_qa

    # train uids of one category (round robin over 14), 6 QA pairs each
    picks = {rotate_qa(f"train-{i:06d}", 6) for i in range(0, 14 * 60, 14)}
    assert picks == set(range(6))


def test_opens_without_our_code(built):
    import datasets

    out, _ = built
    d = datasets.load_dataset("parquet", data_files={"train": str(out / "train" / "*.parquet")})
    assert d["train"].num_rows == 16 and "image_png" in d["train"].column_names


def test_stage_cli_smoke(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["overrides"]["smoke"]["build_dataset"].update(train_count=8, test_count=4)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    res = subprocess.run(
        [sys.executable, "-m", "pointvl.stages.build_dataset", "--params",
         str(tmp_path / "params.yaml"), "--profile", "smoke", "--out", str(tmp_path / "data"),
         "--metrics", str(tmp_path / "m.json"), "--figures", str(tmp_path / "fig"),
         "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "m.json").read_text())
    run = json.loads((tmp_path / "m.run.json").read_text())  # names and timings
    assert m["train"] == 8 and m["test"] == 4 and run["profile"] == "smoke"
    assert "seconds" in run and "seconds" not in m  # a timing is not a metric
    man = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert man["content_hash"] == run["content_hash"] and man["image_size"] == 56
    page = (tmp_path / "fig" / "dataset_reprojection.html").read_text()
    assert "_static/plotly.min.js" in page and (tmp_path / "fig/_static/plotly.min.js").is_file()
    assert (tmp_path / "fig" / "dataset_gallery.png").is_file()
