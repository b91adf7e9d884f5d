"""ShapeNetCore v2 reader (the ``paper`` profile's mesh source).

Layout read (ShapeNet's own)::

    <root>/taxonomy.json                                   [{"synsetId": "03001627",
                                                             "name": "chair", ...}, ...]
    <root>/<synsetId>/<modelId>/models/model_normalized.obj

A synset maps to the first comma-separated word of its taxonomy name ("airplane,aeroplane,
plane" -> "airplane"). ``list_models`` ignores, and counts in ``Listing.ignored``, synset
folders absent from taxonomy.json (``unknown_synset``) and every folder or OBJ file that
resolves outside the root through a symbolic link (``outside_root``). A malformed
taxonomy.json is a ``DataError`` naming the file and the entry.

Meshes are read by our own OBJ reader (``read_obj``): Open3D's drops every face that is not
a triangle, so a model built from quads loaded empty and a mixed one with half its surface.
Polygons are fan-triangulated (``fan_triangulate``: exact for the convex planar polygons
exporters write; a concave n-gon may get triangles outside it, a [departure] from a full
ear-clipping triangulation). Materials and textures are not read. Meshes are re-normalized
(bbox centre at 0, unit diagonal; ShapeNet v2's own frame is y up). A broken model is never a
crash and never a silent drop: ``load_mesh`` raises ``MeshSkip(reason)`` with one of
``SKIP_REASONS`` and the build counts it per reason and draws a replacement.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OPEN3D_DISABLE_WEB_VISUALIZER", "true")

import numpy as np  # noqa: E402

from pointvl.config import DataError  # noqa: E402
from pointvl.data.shapes import PartMesh, normalize  # noqa: E402

log = logging.getLogger(__name__)

MODEL_FILE = Path("models") / "model_normalized.obj"
SKIP_REASONS = (
    "missing_file",  # no model_normalized.obj
    "outside_root",  # the OBJ file resolves outside the ShapeNet root (a symbolic link)
    "unreadable",  # not readable, or a malformed record (a non-numeric vertex, a 2-vertex face)
    "no_vertices",  # no vertex records
    "no_faces",  # vertices but no face records
    "bad_index",  # a face index out of range (0, beyond the vertices, or before the first)
    "non_finite",  # NaN / inf coordinates
    "degenerate",  # zero-size bounding box, zero surface area, or an empty render
)
IGNORE_REASONS = ("unknown_synset", "outside_root")


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
    root: Path | None = None
    """The resolved ShapeNet root: ``load_mesh`` refuses a file that resolves outside it."""


@dataclass
class Listing:
    """What ``list_models`` found: usable models (sorted) and what it ignored, per reason."""

    models: list[ShapeNetModel] = field(default_factory=list)
    ignored: dict[str, list[str]] = field(default_factory=dict)
    """``IGNORE_REASONS`` -> sorted paths relative to the root (only reasons that occurred)."""


def read_taxonomy(root: str | os.PathLike) -> dict[str, str]:
    """synsetId -> category name (first word of the taxonomy name); ``DataError`` if bad."""
    path = Path(root) / "taxonomy.json"
    if not path.is_file():
        raise DataError(f"ShapeNetCore root {root}: taxonomy.json not found ({path})")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(entries, list):
        raise DataError(
            f"{path}: expected a list of {{synsetId, name}} entries, got {type(entries).__name__}"
        )
    names = {}
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not {"synsetId", "name"} <= set(e):
            missing = sorted({"synsetId", "name"} - set(e)) if isinstance(e, dict) else "all"
            raise DataError(f"{path}: entry {i} lacks {missing!r}; expected synsetId and name")
        if not isinstance(e["synsetId"], str) or not isinstance(e["name"], str):
            raise DataError(
                f"{path}: entry {i}: synsetId and name must be strings, got {e['synsetId']!r}, "
                f"{e['name']!r}"
            )
        names[e["synsetId"]] = e["name"].split(",")[0].strip()
    return names


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root)


def list_models(root: str | os.PathLike, synsets: list[str] | None = None) -> Listing:
    """Every <synset>/<model> directory under ``root`` (sorted, deterministic); see the module
    docstring for what is ignored and counted."""
    root = Path(root)
    names = read_taxonomy(root)
    real_root = root.resolve()
    out = Listing()

    def ignore(reason: str, path: Path) -> None:
        out.ignored.setdefault(reason, []).append(path.relative_to(root).as_posix())

    for syn_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if synsets is not None and syn_dir.name not in synsets:
            continue
        if syn_dir.name not in names:
            ignore("unknown_synset", syn_dir)
            continue
        if not _inside(syn_dir, real_root):
            ignore("outside_root", syn_dir)
            continue
        cat = names[syn_dir.name]
        for model_dir in sorted(p for p in syn_dir.iterdir() if p.is_dir()):
            obj = model_dir / MODEL_FILE
            if not _inside(model_dir, real_root) or (obj.exists() and not _inside(obj, real_root)):
                ignore("outside_root", model_dir)
                continue
            out.models.append(ShapeNetModel(syn_dir.name, model_dir.name, cat, obj, real_root))
    out.ignored = {k: sorted(v) for k, v in sorted(out.ignored.items())}
    return out


# ----------------------------------------------------------------------------- OBJ
def fan_triangulate(polygons: list[list[int]]) -> np.ndarray:
    """Polygons (lists of >= 3 vertex indices) -> triangles (F, 3).

    (i0, i1, ..., ik) -> (i0, i_j, i_{j+1}) for j = 1 .. k-1: k - 1 triangles that tile a
    convex polygon exactly (a triangle stays as it is).
    """
    tris = [(p[0], p[j], p[j + 1]) for p in polygons for j in range(1, len(p) - 1)]
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3)  # (F, 3)


def _face_index(token: str, n_so_far: int, where: str) -> int:
    """One face token (``v``, ``v/vt``, ``v/vt/vn``, ``v//vn``) -> 0-based vertex index.

    OBJ indices start at 1; a negative one counts back from the last vertex defined so far.
    0 (and a negative one before the first vertex) gives -1, which ``read_obj`` rejects.
    """
    try:
        i = int(token.split("/", 1)[0])
    except ValueError:
        raise MeshSkip("unreadable", f"{where}: face index {token!r} is not an integer") from None
    if i > 0:
        return i - 1
    return n_so_far + i if i < 0 and n_so_far + i >= 0 else -1


def read_obj(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) float64 and fan-triangulated faces (F, 3) int64 of an OBJ file.

    Reads ``v`` and ``f`` records (other records are ignored); raises ``MeshSkip`` with
    ``unreadable`` (naming the line), ``no_vertices``, ``no_faces`` or ``bad_index``.
    """
    try:
        text = Path(path).read_bytes().decode("latin-1")  # OBJ records are ASCII
    except OSError as err:
        raise MeshSkip("unreadable", f"{path}: {err}") from None
    vertices: list[list[str]] = []
    polygons: list[list[int]] = []
    for ln, line in enumerate(text.splitlines(), 1):
        rec = line.split()
        if not rec:
            continue
        if rec[0] == "v":
            if len(rec) < 4:
                raise MeshSkip("unreadable", f"{path}:{ln}: vertex with {len(rec) - 1} values")
            vertices.append(rec[1:4])
        elif rec[0] == "f":
            if len(rec) < 4:
                raise MeshSkip("unreadable", f"{path}:{ln}: face with {len(rec) - 1} vertices")
            polygons.append([_face_index(t, len(vertices), f"{path}:{ln}") for t in rec[1:]])
    if not vertices:
        raise MeshSkip("no_vertices", str(path))
    if not polygons:
        raise MeshSkip("no_faces", str(path))
    try:
        v = np.asarray(vertices, dtype=np.float64)  # (V, 3)
    except ValueError as err:
        raise MeshSkip(
            "unreadable", f"{path}: a vertex coordinate is not a number ({err})"
        ) from None
    f = fan_triangulate(polygons)  # (F, 3)
    bad = (f < 0) | (f >= len(v))
    if bad.any():
        raise MeshSkip(
            "bad_index",
            f"{path}: {int(bad.any(axis=1).sum())} face(s) index outside the {len(v)} vertices "
            "(OBJ indices are 1..V, or -1..-k for the last k vertices defined so far)",
        )
    return v, f


def load_mesh(model: ShapeNetModel) -> tuple[PartMesh, np.ndarray, float]:
    """Read and re-normalize one model as a single-part PartMesh; raises ``MeshSkip``.

    Returns (mesh, centre, scale) with x_normalized = (x_file - centre) * scale.
    """
    if not model.path.is_file():
        raise MeshSkip("missing_file", str(model.path))
    if model.root is not None and not _inside(model.path, model.root):
        raise MeshSkip("outside_root", f"{model.path} resolves outside {model.root}")
    v, f = read_obj(model.path)
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
