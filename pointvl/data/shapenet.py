"""ShapeNetCore v2 reader (the ``paper`` profile's mesh source).

Layout read (ShapeNet's own)::

    <root>/taxonomy.json                                   [{"synsetId": "03001627",
                                                             "name": "chair", ...}, ...]
    <root>/<synsetId>/<modelId>/models/model_normalized.obj

A synset maps to the first comma-separated word of its taxonomy name ("airplane,aeroplane,
plane" -> "airplane"); synsets absent from taxonomy.json are named by their id. Meshes are
loaded without textures and re-normalized (bbox centre at 0, unit diagonal; ShapeNet v2's
own frame is y up). A broken model is never a crash and never a silent drop:
``load_mesh`` raises ``MeshSkip(reason)`` with one of ``SKIP_REASONS`` and the build counts
it per reason in the stage's metrics.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OPEN3D_DISABLE_WEB_VISUALIZER", "true")

import numpy as np  # noqa: E402

from pointvl.data.shapes import PartMesh, normalize  # noqa: E402

log = logging.getLogger(__name__)

MODEL_FILE = Path("models") / "model_normalized.obj"
SKIP_REASONS = (
    "missing_file",  # no model_normalized.obj
    "unreadable",  # the OBJ parser failed or returned no vertices
    "no_triangles",  # vertices but no faces
    "non_finite",  # NaN / inf coordinates
    "degenerate",  # zero-size bounding box or zero surface area
)


class MeshSkip(Exception):
    """A model that cannot be used; ``reason`` is one of ``SKIP_REASONS``."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class ShapeNetModel:
    synset: str
    model_id: str
    category: str
    path: Path


def read_taxonomy(root: str | os.PathLike) -> dict[str, str]:
    """synsetId -> category name (first word of the taxonomy name)."""
    path = Path(root) / "taxonomy.json"
    if not path.is_file():
        raise FileNotFoundError(f"ShapeNetCore root {root}: taxonomy.json not found")
    entries = json.loads(path.read_text())
    return {e["synsetId"]: e["name"].split(",")[0].strip() for e in entries}


def list_models(root: str | os.PathLike, synsets: list[str] | None = None) -> list[ShapeNetModel]:
    """Every <synset>/<model> directory under ``root``, sorted (deterministic)."""
    root = Path(root)
    names = read_taxonomy(root)
    out = []
    for syn_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if synsets is not None and syn_dir.name not in synsets:
            continue
        cat = names.get(syn_dir.name, syn_dir.name)
        for model_dir in sorted(p for p in syn_dir.iterdir() if p.is_dir()):
            out.append(ShapeNetModel(syn_dir.name, model_dir.name, cat, model_dir / MODEL_FILE))
    return out


def _count_obj_records(path: Path) -> tuple[int, int]:
    """(vertex lines, face lines) of an OBJ file, by a plain text scan."""
    n_v = n_f = 0
    with open(path, errors="replace") as fh:
        for line in fh:
            if line.startswith("v "):
                n_v += 1
            elif line.startswith("f "):
                n_f += 1
    return n_v, n_f


def load_mesh(model: ShapeNetModel) -> tuple[PartMesh, np.ndarray, float]:
    """Read and re-normalize one model as a single-part PartMesh; raises ``MeshSkip``.

    Returns (mesh, centre, scale) with x_normalized = (x_file - centre) * scale.
    """
    import open3d as o3d

    if not model.path.is_file():
        raise MeshSkip("missing_file", str(model.path))
    try:
        with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
            m = o3d.io.read_triangle_mesh(str(model.path), enable_post_processing=False)
    except Exception as err:  # noqa: BLE001 - any parser failure is a skip
        raise MeshSkip("unreadable", f"{model.path}: {err}") from err
    v = np.asarray(m.vertices, np.float64)
    f = np.asarray(m.triangles, np.int64)
    if len(v) == 0 or len(f) == 0:
        # the OBJ parser drops face-less files whole: tell "no faces" from "nothing" by text
        n_v, n_f = _count_obj_records(model.path)
        if n_v > 0 and n_f == 0:
            raise MeshSkip("no_triangles", str(model.path))
        if len(v) == 0:
            raise MeshSkip("unreadable", f"{model.path}: no vertices")
        raise MeshSkip("no_triangles", str(model.path))
    if not np.isfinite(v).all():
        raise MeshSkip("non_finite", str(model.path))
    area = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    if area.sum() <= 0:
        raise MeshSkip("degenerate", f"{model.path}: zero surface area")
    mesh = PartMesh(v, f, np.zeros(len(f), np.int64), [], model.category, {}, [])
    try:
        return normalize(mesh)
    except ValueError as err:
        raise MeshSkip("degenerate", f"{model.path}: {err}") from err
