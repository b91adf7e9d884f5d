"""pointvl.data: the benchmark of Sec. 4.1 (build) and its torch loader.

    build:    shapes | shapenet -> sampling -> cameras -> render -> annotate -> build
    load:     PointVLDataset(root, split, qa_mode) -> dict samples; collate; list_texts

Only the loader is imported here (torch + pyarrow); the builder modules import Open3D and
are imported explicitly (``from pointvl.data.build import build``).
"""

from pointvl.data.dataset import (
    PointVLDataset,
    collate,
    iter_texts,
    list_texts,
    read_manifest,
    read_split,
)

__all__ = ["PointVLDataset", "collate", "iter_texts", "list_texts", "read_manifest", "read_split"]
