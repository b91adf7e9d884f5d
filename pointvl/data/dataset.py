"""Torch-ready loader over a built benchmark folder (``data/<profile>/``, see ``build.py``).

    ds = PointVLDataset("data/tiny", "train")          # qa_mode="rotate" by default
    s = ds[0]
    s["points"]    # (N, 6) float32 tensor: xyz + normals, normalized object frame
    s["image"]     # (H, W, 3) uint8 tensor
    s["K"], s["R"], s["t"]                             # (3, 3), (3, 3), (3,) float64
    s["question"], s["answer"], s["qa_type"], s["target"]   # str; target = format_target JSON
    s["bbox2d"] (4,), s["bbox3d"] (6,), s["kpts2d"] (M, 2), s["kpts3d"] (M, 3)   # float64 GT

Each instance has several QA pairs. ``qa_mode`` picks how they become samples:
``"rotate"`` (one sample per instance, QA number ``crc32(uid) % n_qa``: every type
appears, the dataset keeps one row per object), ``"all"`` (one sample per instance and QA pair) or
``"first"`` (the multiple-choice category question only). Every shard is checked against
the manifest's sha256 the first time a process reads it (``verify_shard``: a flipped bit is
a ``DataError``, never silently loaded). ``list_texts`` returns every text
of a folder (questions, answers, descriptions, targets) for tokenizer training.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from pointvl.config import DataError

QA_MODES = ("rotate", "all", "first")
VAL_FRACTION = 0.05
"""The validation split: the last 5% (at least 1) of the stored train split's instances, held
out from ``train`` (SFT, RL prompts, baselines), never taken from test. RL recipes and
validation curves are chosen and drawn on it."""
SPLITS = ("train", "val", "test", "train_all")
"""``train_all`` is the stored train split whole (train + val)."""
_META_COLUMNS = (
    "uid", "category", "index", "description", "questions", "answers", "qa_types", "targets",
    "K", "R", "t", "bbox2d", "bbox3d", "kpts2d", "kpts3d", "width", "height",
    "azimuth_deg", "elevation_deg",
)  # fmt: skip


def rotate_qa(uid: str, n_qa: int) -> int:
    """QA number of an instance in ``rotate`` mode: crc32(uid) mod n_qa.

    (Not ``index % n_qa``: categories are assigned round-robin, so that would tie each
    category to a few QA types.)
    """
    return zlib.crc32(uid.encode()) % n_qa


def read_manifest(root: str | os.PathLike) -> dict:
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{root}: no manifest.json (not a built dataset, or unfinished)")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err}); rebuild the dataset") from None
    if not isinstance(manifest, dict) or "splits" not in manifest:
        raise DataError(f"{path}: not a dataset manifest (no 'splits'); rebuild the dataset")
    return manifest


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shard_hashes(root: str | os.PathLike) -> dict[str, str]:
    """{relative shard path: sha256} of every shard under ``root``, sorted by path."""
    root = Path(root)
    return {
        p.relative_to(root).as_posix(): file_sha256(p)
        for p in sorted(root.glob("*/shard-*.parquet"))
    }


def content_hash(root: str | os.PathLike, hashes: dict[str, str] | None = None) -> str:
    """sha256 over (relative path, sha256) of every shard, sorted by path."""
    hashes = shard_hashes(root) if hashes is None else hashes
    h = hashlib.sha256()
    for rel, digest in sorted(hashes.items()):
        h.update(f"{rel}:{digest}\n".encode())
    return h.hexdigest()


_VERIFIED: set[tuple] = set()
"""Shards whose sha256 matched the manifest in this process: (path, size, mtime_ns, sha256)."""


def verify_shard(root: str | os.PathLike, rel: str, manifest: dict) -> None:
    """Check one shard against the manifest's ``shard_sha256`` (once per process and file
    version); ``DataError`` naming the shard when it differs. A manifest written before
    per-shard hashes existed is checked against ``content_hash`` over all its shards."""
    path = Path(root) / rel
    expected = (manifest.get("shard_sha256") or {}).get(rel)
    if expected is None and "content_hash" in manifest:
        key = (str(Path(root).resolve()), "content_hash", manifest["content_hash"])
        if key not in _VERIFIED:
            if content_hash(root, shard_hashes(root)) != manifest["content_hash"]:
                raise DataError(
                    f"{root}: the shards' content hash differs from manifest.json's: a shard "
                    "is corrupted or was changed after the build; rebuild the dataset"
                )
            _VERIFIED.add(key)
        return
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, expected)
    if key in _VERIFIED:
        return
    actual = file_sha256(path)
    if actual != expected:
        raise DataError(
            f"{path}: sha256 {actual[:16]}... differs from manifest.json's "
            f"{expected[:16]}...: the shard is corrupted or was changed after the build; "
            "rebuild the dataset"
        )
    _VERIFIED.add(key)


def val_count(num_train: int) -> int:
    """Instances of the stored train split that form the val split (``VAL_FRACTION``)."""
    return max(1, int(round(VAL_FRACTION * num_train))) if num_train > 1 else 0


def read_split(
    root: str | os.PathLike, split: str, columns: Sequence[str] | None = None
) -> pa.Table:
    """The rows of one split as a pyarrow Table (shards concatenated in order), each shard
    checked against the manifest's sha256 first (``verify_shard``).

    ``train`` and ``val`` are carved from the stored train split (``VAL_FRACTION``);
    ``train_all`` is the stored train split whole."""
    manifest = read_manifest(root)
    stored = "train" if split in ("val", "train_all") else split
    if stored not in manifest["splits"] or split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}")
    shards = manifest["splits"][stored]["shards"]
    if not shards:
        any_shard = next(Path(root).glob("*/shard-*.parquet"), None)
        if any_shard is None:
            raise DataError(f"{root}: the dataset has no shards at all; rebuild it")
        return pq.read_schema(any_shard).empty_table()
    for rel in shards:
        verify_shard(root, rel, manifest)
    table = pa.concat_tables([pq.read_table(Path(root) / s, columns=columns) for s in shards])
    if stored == "train" and split != "train_all":
        n_val = val_count(table.num_rows)
        cut = table.num_rows - n_val
        table = table.slice(cut) if split == "val" else table.slice(0, cut)
    return table


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def instance_sample(row: dict[str, Any], qa: int | None = None) -> dict[str, Any]:
    """A ``build.make_instance`` row as the sample ``PointVLDataset`` yields, in numpy.

    PNG bytes are decoded (``image`` (H, W, 3) uint8, ``mask`` (H, W) bool), flat columns are
    reshaped (``points`` (N, 6), ``K`` / ``R`` (3, 3), ``kpts2d`` (M, 2), ``kpts3d`` (M, 3)).
    The QA pair is number ``qa``; None picks it as ``qa_mode="rotate"`` does, so a rebuilt
    instance asks the question the loader (and the evaluation) asked.
    """
    k = rotate_qa(row["uid"], len(row["questions"])) if qa is None else qa
    return {
        "uid": row["uid"],
        "category": row["category"],
        "points": np.asarray(row["points"], np.float32).reshape(-1, 6),  # (N, 6)
        "image": decode_png(row["image_png"]),  # (H, W, 3)
        "mask": decode_png(row["mask_png"]).astype(bool),  # (H, W)
        "K": np.asarray(row["K"], np.float64).reshape(3, 3),
        "R": np.asarray(row["R"], np.float64).reshape(3, 3),
        "t": np.asarray(row["t"], np.float64).reshape(3),
        "bbox2d": np.asarray(row["bbox2d"], np.float64),  # (4,)
        "bbox3d": np.asarray(row["bbox3d"], np.float64),  # (6,)
        "kpts2d": np.asarray(row["kpts2d"], np.float64).reshape(-1, 2),  # (M, 2)
        "kpts3d": np.asarray(row["kpts3d"], np.float64).reshape(-1, 3),  # (M, 3)
        "question": row["questions"][k],
        "answer": row["answers"][k],
        "qa_type": row["qa_types"][k],
        "target": row["targets"][k],
        "description": row["description"],
    }


class PointVLDataset(torch.utils.data.Dataset):
    """One split of a built benchmark as a map-style torch Dataset (see module docstring)."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        qa_mode: str = "rotate",
        with_mask: bool = False,
        with_depth: bool = False,
    ):
        if qa_mode not in QA_MODES:
            raise ValueError(f"qa_mode={qa_mode!r}: expected one of {QA_MODES}")
        self.root, self.split, self.qa_mode = Path(root), split, qa_mode
        self.with_mask, self.with_depth = with_mask, with_depth
        self.manifest = read_manifest(root)
        self.quant_bins = int(self.manifest["quant_bins"])
        n_pts = self.manifest["points_shape"][0]
        table = read_split(root, split)
        self._n = table.num_rows
        pts = table.column("points").combine_chunks()
        self._points = pts.flatten().to_numpy().reshape(self._n, n_pts, 6)  # (R, N, 6)
        self._images = table.column("image_png").to_pylist()
        self._masks = table.column("mask_png").to_pylist() if with_mask else None
        self._depths = table.column("depth_png").to_pylist() if with_depth else None
        self._meta = table.select(list(_META_COLUMNS)).to_pylist()
        self._index: list[tuple[int, int]] = []  # (row, qa number)
        for r, meta in enumerate(self._meta):
            n_qa = len(meta["questions"])
            if qa_mode == "all":
                self._index += [(r, k) for k in range(n_qa)]
            elif qa_mode == "first":
                self._index.append((r, 0))
            else:
                self._index.append((r, rotate_qa(meta["uid"], n_qa)))

    def __len__(self) -> int:
        return len(self._index)

    @property
    def num_instances(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> dict[str, Any]:
        r, k = self._index[i]
        meta = self._meta[r]
        m = len(meta["kpts3d"]) // 3
        f64 = torch.float64
        sample = {
            "uid": meta["uid"],
            "category": meta["category"],
            "points": torch.from_numpy(self._points[r].copy()),  # (N, 6)
            "image": torch.from_numpy(decode_png(self._images[r]).copy()),  # (H, W, 3)
            "K": torch.tensor(meta["K"], dtype=f64).reshape(3, 3),
            "R": torch.tensor(meta["R"], dtype=f64).reshape(3, 3),
            "t": torch.tensor(meta["t"], dtype=f64),
            "question": meta["questions"][k],
            "answer": meta["answers"][k],
            "qa_type": meta["qa_types"][k],
            "target": meta["targets"][k],
            "description": meta["description"],
            "bbox2d": torch.tensor(meta["bbox2d"], dtype=f64),
            "bbox3d": torch.tensor(meta["bbox3d"], dtype=f64),
            "kpts2d": torch.tensor(meta["kpts2d"], dtype=f64).reshape(m, 2),
            "kpts3d": torch.tensor(meta["kpts3d"], dtype=f64).reshape(m, 3),
            "quant_bins": self.quant_bins,
        }
        if self.with_mask:
            sample["mask"] = torch.from_numpy(decode_png(self._masks[r]).astype(bool))  # (H, W)
        if self.with_depth:
            depth = decode_png(self._depths[r]).astype(np.float32)
            sample["depth"] = torch.from_numpy(depth / float(self.manifest["depth_scale"]))
        return sample


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors of equal shape, keep everything else as lists."""
    out: dict[str, Any] = {}
    for key in batch[0]:
        vals = [b[key] for b in batch]
        if isinstance(vals[0], torch.Tensor) and all(v.shape == vals[0].shape for v in vals):
            out[key] = torch.stack(vals)
        else:
            out[key] = vals
    return out


def iter_texts(root: str | os.PathLike, splits: Iterable[str] = ("train",)) -> Iterable[str]:
    """Every question, answer, description and target JSON of the given splits."""
    for split in splits:
        table = read_split(root, split, ["questions", "answers", "description", "targets"])
        for row in table.to_pylist():
            yield from row["questions"]
            yield from row["answers"]
            yield row["description"]
            yield from row["targets"]


def list_texts(root: str | os.PathLike, splits: Iterable[str] = ("train",)) -> list[str]:
    """``iter_texts`` as a list (for tokenizer training; train split only by default)."""
    return list(iter_texts(root, splits))
