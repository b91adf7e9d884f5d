"""ShapeNetCore v2 reader on a fixture in ShapeNet's exact layout (written here)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pointvl.config import DataError
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
    models = shapenet.list_models(fixture_root).models
    assert len(models) == 8
    keys = [(m.synset, m.model_id) for m in models]
    assert keys == sorted(keys)  # deterministic order
    assert all(m.path.name == "model_normalized.obj" for m in models)
    assert {m.category for m in models} == {"chair", "mug", "airplane"}
    with pytest.raises(DataError, match="taxonomy.json"):
        shapenet.read_taxonomy(fixture_root / CHAIR)


@pytest.mark.parametrize(
    "model_id, reason",
    [("c_nofaces", "no_faces"), ("m_empty", "no_vertices"), ("m_missing", "missing_file"),
     ("p_flat", "degenerate")],
)  # fmt: skip
def test_broken_meshes_raise_skip_with_reason(fixture_root, model_id, reason):
    model = _model(fixture_root, model_id)
    with pytest.raises(shapenet.MeshSkip) as err:
        shapenet.load_mesh(model)
    assert err.value.reason == reason and reason in shapenet.SKIP_REASONS


def test_good_mesh_is_renormalized(fixture_root):
    model = _model(fixture_root, "c_good1")
    mesh, centre, scale = shapenet.load_mesh(model)
    # the fixture box spans [3, 3.5] x [2, 3] x [1, 1.5] in the file
    np.testing.assert_allclose(centre, [3.25, 2.5, 1.25])
    assert scale == pytest.approx(1 / np.linalg.norm([0.5, 1.0, 0.5]))
    lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
    assert np.linalg.norm(hi - lo) == pytest.approx(1.0)
    np.testing.assert_allclose((hi + lo) / 2, 0, atol=1e-12)
    assert len(mesh.triangles) == 12 and mesh.category == "chair"


def test_build_from_shapenet_counts_skips(fixture_root, tmp_path):
    cfg = BuildDatasetConfig(source="shapenet", shapenet_root=str(fixture_root), train_count=3,
                             test_count=1, num_points=64, image_size=32, workers=1)  # fmt: skip
    m = build(cfg, tmp_path / "paper", 1000, "paper", progress=False)
    assert set(m["skipped"]) <= {"degenerate", "missing_file", "no_faces", "no_vertices"}
    assert m["train"] + m["test"] == 4 and m["skipped_total"] == sum(m["skipped"].values()) <= 4
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


# ----------------------------------------------------------------------------- faulty trees
def _write_model(root, synset, model_id, text):
    d = root / synset / model_id / "models"
    d.mkdir(parents=True, exist_ok=True)
    (d / "model_normalized.obj").write_text(text)
    return d / "model_normalized.obj"


def _model(root, model_id):
    return next(m for m in shapenet.list_models(root).models if m.model_id == model_id)


def _area(mesh) -> float:
    v, f = mesh.vertices, mesh.triangles
    return float(
        0.5
        * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1).sum()
    )


CUBE_V = [f"v {x} {y} {z}" for x in (0, 1) for y in (0, 1) for z in (0, 1)]
CUBE_QUADS = ["f 1 3 4 2", "f 5 6 8 7", "f 1 2 6 5", "f 3 7 8 4", "f 1 5 7 3", "f 2 4 8 6"]


def test_quads_and_ngons_are_triangulated(fixture_root):
    """Open3D's OBJ reader dropped every non-triangle face: a quad cube was 'unreadable'."""
    _write_model(fixture_root, CHAIR, "quads", "\n".join(CUBE_V + CUBE_QUADS) + "\n")
    mixed = CUBE_QUADS[:3] + ["f 3 7 8", "f 3 8 4"] + CUBE_QUADS[4:]  # one quad as 2 triangles
    _write_model(fixture_root, CHAIR, "mixed", "\n".join(CUBE_V + mixed) + "\n")
    # a regular pentagon prism's cap written as one 5-gon with v/vt/vn and negative indices
    ang = np.linspace(0, 2 * np.pi, 6)[:-1]
    pent = [f"v {np.cos(a):.9f} {np.sin(a):.9f} 0" for a in ang] + ["vt 0 0", "vn 0 0 1"]
    pent += ["f -5/1/1 -4/1/1 -3/1/1 -2/1/1 -1/1/1", "v 0 0 1", "f 1//1 2//1 6//1"]
    _write_model(fixture_root, CHAIR, "pentagon", "\n".join(pent) + "\n")
    for model_id in ("quads", "mixed"):
        mesh, _, scale = shapenet.load_mesh(_model(fixture_root, model_id))
        assert len(mesh.triangles) == 12
        assert _area(mesh) == pytest.approx(6 * scale**2)  # the whole surface, both files
    mesh, _, scale = shapenet.load_mesh(_model(fixture_root, "pentagon"))
    assert len(mesh.triangles) == 3 + 1  # fan of the 5-gon + one triangle
    pentagon_area = 5 / 2 * np.sin(2 * np.pi / 5)  # unit circumradius
    tri = 0.5 * np.linalg.norm(np.cross([np.cos(ang[1]) - 1, np.sin(ang[1]), 0], [-1, 0, 1]))
    assert _area(mesh) == pytest.approx((pentagon_area + tri) * scale**2)


def test_fan_triangulation_matches_the_polygon():
    polys = [[0, 1, 2], [0, 1, 2, 3], [4, 5, 6, 7, 8, 9]]
    tris = shapenet.fan_triangulate(polys)
    assert tris.tolist() == [[0, 1, 2], [0, 1, 2], [0, 2, 3],
                             [4, 5, 6], [4, 6, 7], [4, 7, 8], [4, 8, 9]]  # fmt: skip


@pytest.mark.parametrize(
    "text, reason",
    [
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n", "bad_index"),  # out of range: was "no vertices"
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n", "bad_index"),  # OBJ indices start at 1
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf -4 1 2\n", "bad_index"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\n", "no_faces"),
        ("f 1 2 3\n", "no_vertices"),
        ("# nothing\n", "no_vertices"),
        ("v 0 0 zero\nf 1 1 1\n", "unreadable"),
        ("v 0 0 0\nv 1 0 0\nf 1 2\n", "unreadable"),
        ("v 0 0 nan\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "non_finite"),
        ("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n", "degenerate"),
    ],
)
def test_each_fault_has_its_exact_reason(fixture_root, text, reason):
    _write_model(fixture_root, CHAIR, "faulty", text)
    with pytest.raises(shapenet.MeshSkip) as err:
        shapenet.load_mesh(_model(fixture_root, "faulty"))
    assert err.value.reason == reason and reason in shapenet.SKIP_REASONS


def test_unknown_synsets_and_escaping_links_are_ignored_and_counted(fixture_root, tmp_path):
    _write_model(fixture_root, "99999999", "stray", _box_obj())  # not in taxonomy.json
    outside = tmp_path / "elsewhere"
    _write_model(outside, "x", "secret", _box_obj())
    taxonomy = json.loads((fixture_root / "taxonomy.json").read_text())
    taxonomy.append({"synsetId": "04379243", "name": "table"})
    (fixture_root / "taxonomy.json").write_text(json.dumps(taxonomy))
    (fixture_root / "04379243").symlink_to(outside / "x")  # a synset folder outside the root
    (fixture_root / CHAIR / "linked").symlink_to(outside / "x" / "secret")  # a model folder
    obj = _write_model(fixture_root, MUG, "m_linkfile", "")
    obj.unlink()
    obj.symlink_to(outside / "x" / "secret" / "models" / "model_normalized.obj")
    listing = shapenet.list_models(fixture_root)
    ids = {m.model_id for m in listing.models}
    assert "stray" not in ids and "linked" not in ids and "m_linkfile" not in ids
    assert {m.category for m in listing.models} == {"chair", "mug", "airplane"}
    assert listing.ignored == {
        "unknown_synset": ["99999999"],
        "outside_root": sorted(["04379243", f"{CHAIR}/linked", f"{MUG}/m_linkfile"]),
    }


@pytest.mark.parametrize(
    "text, message",
    [
        ("[{", r"taxonomy.json.*not valid JSON"),
        ('{"synsetId": "1"}', r"taxonomy.json.*expected a list"),
        ('[{"synsetId": "1"}]', r"taxonomy.json.*entry 0.*'name'"),
        ('[{"synsetId": 3, "name": "x"}]', r"taxonomy.json.*entry 0.*synsetId"),
    ],
)
def test_malformed_taxonomy_names_the_file(fixture_root, text, message):
    (fixture_root / "taxonomy.json").write_text(text)
    with pytest.raises(DataError, match=message):
        shapenet.list_models(fixture_root)


def test_skipped_models_are_replaced_so_split_sizes_hold(fixture_root, tmp_path):
    """4 good models of 8: 3 train + 1 test are honoured by drawing replacements."""
    cfg = BuildDatasetConfig(source="shapenet", shapenet_root=str(fixture_root), train_count=3,
                             test_count=1, num_points=64, image_size=32, workers=1)  # fmt: skip
    m = build(cfg, tmp_path / "ds", 1000, "paper", progress=False)
    assert m["train"] == 3 and m["test"] == 1
    again = build(cfg, tmp_path / "again", 1000, "paper", progress=False)
    assert again["content_hash"] == m["content_hash"]
    uids = [r["uid"] for s in ("train_all", "test") for r in
            PointVLDataset(tmp_path / "ds", s, qa_mode="first")._meta]  # fmt: skip
    assert len(set(uids)) == 4


def test_a_shortfall_fails_and_names_it(fixture_root, tmp_path):
    cfg = BuildDatasetConfig(source="shapenet", shapenet_root=str(fixture_root), train_count=6,
                             test_count=2, num_points=64, image_size=32, workers=1)  # fmt: skip
    with pytest.raises(DataError, match=r"train.* of 6.*skipped") as err:
        build(cfg, tmp_path / "ds", 1000, "paper", progress=False)
    for reason in ("degenerate", "missing_file", "no_faces", "no_vertices"):
        assert reason in str(err.value)
    assert not (tmp_path / "ds").exists()


def test_a_build_that_produces_nothing_fails(tmp_path):
    root = tmp_path / "root"
    write_fixture(root)
    for syn in (CHAIR, MUG, PLANE):
        for d in (root / syn).iterdir():
            obj = d / "models" / "model_normalized.obj"
            if obj.exists():
                obj.write_text("v 0 0 0\n")
    cfg = BuildDatasetConfig(source="shapenet", shapenet_root=str(root), train_count=2,
                             test_count=1, num_points=64, image_size=32, workers=1)  # fmt: skip
    with pytest.raises(DataError, match=r"0 of 2"):
        build(cfg, tmp_path / "ds", 1000, "paper", progress=False)
