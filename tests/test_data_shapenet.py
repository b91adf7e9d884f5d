"""ShapeNetCore v2 reader on a fixture in ShapeNet's exact layout (written here)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pointvl.data import shapenet
from pointvl.data.build import BuildDatasetConfig, build
from pointvl.data.dataset import PointVLDataset

CHAIR, MUG, PLANE = "03001627", "03797390", "02691156"


def _box_obj(size=(0.6, 1.0, 0.5), offset=(3.0, 2.0, 1.0)) -> str:
    sx, sy, sz = size
    v = [(x * sx + offset[0], y * sy + offset[1], z * sz + offset[2])
         for x in (0, 1) for y in (0, 1) for z in (0, 1)]  # fmt: skip
    faces = [(1, 2, 4), (1, 4, 3), (5, 7, 8), (5, 8, 6), (1, 5, 6), (1, 6, 2),
             (3, 4, 8), (3, 8, 7), (1, 3, 7), (1, 7, 5), (2, 6, 8), (2, 8, 4)]  # fmt: skip
    lines = ["# box", "mtllib model_normalized.mtl"] + [f"v {a} {b} {c}" for a, b, c in v]
    lines += [f"f {a} {b} {c}" for a, b, c in faces]
    return "\n".join(lines) + "\n"


def write_fixture(root):
    (root).mkdir(parents=True, exist_ok=True)
    taxonomy = [
        {"synsetId": CHAIR, "name": "chair", "children": [], "numInstances": 3},
        {"synsetId": MUG, "name": "mug", "children": [], "numInstances": 2},
        {"synsetId": PLANE, "name": "airplane,aeroplane,plane", "children": [], "numInstances": 2},
    ]
    (root / "taxonomy.json").write_text(json.dumps(taxonomy))
    models = {
        (CHAIR, "c_good1"): _box_obj((0.5, 1.0, 0.5)),
        (CHAIR, "c_good2"): _box_obj((0.6, 0.9, 0.6), (0, 0, 0)),
        (CHAIR, "c_nofaces"): "v 0 0 0\nv 1 0 0\nv 0 1 0\n",
        (MUG, "m_good"): _box_obj((0.4, 0.5, 0.4)),
        (MUG, "m_empty"): "",
        (PLANE, "p_good"): _box_obj((1.0, 0.2, 1.2)),
        (PLANE, "p_flat"): "v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n",
    }
    for (syn, mid), text in models.items():
        d = root / syn / mid / "models"
        d.mkdir(parents=True)
        (d / "model_normalized.obj").write_text(text)
    (root / MUG / "m_missing" / "models").mkdir(parents=True)  # folder without the OBJ
    return root


@pytest.fixture()
def fixture_root(tmp_path):
    return write_fixture(tmp_path / "ShapeNetCore.v2")


def test_taxonomy_and_listing(fixture_root):
    names = shapenet.read_taxonomy(fixture_root)
    assert names[PLANE] == "airplane" and names[CHAIR] == "chair"
    models = shapenet.list_models(fixture_root)
    assert len(models) == 8
    keys = [(m.synset, m.model_id) for m in models]
    assert keys == sorted(keys)  # deterministic order
    assert all(m.path.name == "model_normalized.obj" for m in models)
    assert {m.category for m in models} == {"chair", "mug", "airplane"}
    with pytest.raises(FileNotFoundError, match="taxonomy.json"):
        shapenet.read_taxonomy(fixture_root / CHAIR)


@pytest.mark.parametrize(
    "model_id, reason",
    [("c_nofaces", "no_triangles"), ("m_empty", "unreadable"), ("m_missing", "missing_file"),
     ("p_flat", "degenerate")],
)  # fmt: skip
def test_broken_meshes_raise_skip_with_reason(fixture_root, model_id, reason):
    model = next(m for m in shapenet.list_models(fixture_root) if m.model_id == model_id)
    with pytest.raises(shapenet.MeshSkip) as err:
        shapenet.load_mesh(model)
    assert err.value.reason == reason and reason in shapenet.SKIP_REASONS


def test_good_mesh_is_renormalized(fixture_root):
    model = next(m for m in shapenet.list_models(fixture_root) if m.model_id == "c_good1")
    mesh, centre, scale = shapenet.load_mesh(model)
    # the fixture box spans [3, 3.5] x [2, 3] x [1, 1.5] in the file
    np.testing.assert_allclose(centre, [3.25, 2.5, 1.25])
    assert scale == pytest.approx(1 / np.linalg.norm([0.5, 1.0, 0.5]))
    lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
    assert np.linalg.norm(hi - lo) == pytest.approx(1.0)
    np.testing.assert_allclose((hi + lo) / 2, 0, atol=1e-12)
    assert len(mesh.triangles) == 12 and mesh.category == "chair"


def test_build_from_shapenet_counts_skips(fixture_root, tmp_path):
    cfg = BuildDatasetConfig(source="shapenet", shapenet_root=str(fixture_root), train_count=6,
                             test_count=2, num_points=64, image_size=32, workers=1)  # fmt: skip
    m = build(cfg, tmp_path / "paper", 1000, "paper", progress=False)
    assert m["skipped"] == {"degenerate": 1, "missing_file": 1, "no_triangles": 1, "unreadable": 1}
    assert m["train"] + m["test"] == 4 and m["skipped_total"] == 4
    ds = PointVLDataset(tmp_path / "paper", "train", qa_mode="all")
    cats = {ds[i]["category"] for i in range(len(ds))}
    assert cats <= {"chair", "mug", "airplane"}
    s = ds[0]
    assert s["points"].shape == (64, 6) and "/" in s["uid"]
    # no part attributes for ShapeNet: category, proportion and orientation questions only
    assert {ds[i]["qa_type"] for i in range(len(ds))} <= {
        "category_mc", "category_open", "proportion", "orientation"
    }  # fmt: skip
    man = json.loads((tmp_path / "paper" / "manifest.json").read_text())
    assert man["skipped"] == m["skipped"] and man["quant_bins"] == 1000
