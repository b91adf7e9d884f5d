"""Point clouds from meshes (Sec. 4.1.1): Poisson-disk sampling, KNN normals, FPS keypoints.

- Poisson-disk sampling with Open3D, ``init_factor = 5`` (the paper's value): ``N`` points
  spread evenly over the surface.
- Normals by KNN plane fitting (k = 30, the recorded default), oriented to agree with the
  mesh's own vertex normals (Open3D orients new normals against existing ones).
- 16 keypoints by farthest point sampling on the cloud (Sec. 4.1.3), started from the point
  farthest from the centroid so that the result depends on the cloud only.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPEN3D_DISABLE_WEB_VISUALIZER", "true")

import numpy as np  # noqa: E402
import open3d as o3d  # noqa: E402

from pointvl.data.shapes import PartMesh  # noqa: E402


def to_o3d(mesh: PartMesh) -> o3d.geometry.TriangleMesh:
    """PartMesh -> legacy Open3D TriangleMesh with vertex normals."""
    m = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(np.ascontiguousarray(mesh.vertices, np.float64)),
        o3d.utility.Vector3iVector(np.ascontiguousarray(mesh.triangles, np.int32)),
    )
    m.compute_vertex_normals()
    return m


def sample_points(
    mesh: PartMesh,
    num_points: int,
    seed: int,
    init_factor: int = 5,
    normal_knn: int = 30,
) -> np.ndarray:
    """Poisson-disk sample ``num_points`` points with KNN normals -> (N, 6) float32 [xyz, nxyz].

    Deterministic for a given ``seed`` (Open3D's global generator is re-seeded here).
    """
    if num_points < 1:
        raise ValueError(f"num_points={num_points}: expected >= 1")
    m = to_o3d(mesh)
    o3d.utility.random.seed(int(seed) % (2**31 - 1))
    pcd = m.sample_points_poisson_disk(number_of_points=num_points, init_factor=init_factor)
    if len(pcd.points) != num_points:
        raise RuntimeError(f"poisson sampling returned {len(pcd.points)} points, not {num_points}")
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(knn=normal_knn))
    pts = np.asarray(pcd.points, np.float64)
    nrm = np.asarray(pcd.normals, np.float64)
    nrm = nrm / np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    return np.concatenate([pts, nrm], 1).astype(np.float32)  # (N, 6)


def farthest_point_sampling(xyz: np.ndarray, m: int) -> np.ndarray:
    """Indices of ``m`` points by farthest point sampling -> (m,) int64.

    Start: the point farthest from the centroid (ties: lowest index), then repeatedly the
    point with the largest distance to the chosen set.
    """
    xyz = np.asarray(xyz, np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz has shape {xyz.shape}, expected (N, 3)")
    n = len(xyz)
    if not 1 <= m <= n:
        raise ValueError(f"m={m}: expected 1 <= m <= N={n}")
    idx = np.empty(m, np.int64)
    idx[0] = int(np.argmax(np.linalg.norm(xyz - xyz.mean(0), axis=1)))
    dist = np.linalg.norm(xyz - xyz[idx[0]], axis=1)  # (N,)
    for i in range(1, m):
        idx[i] = int(np.argmax(dist))
        dist = np.minimum(dist, np.linalg.norm(xyz - xyz[idx[i]], axis=1))
    return idx
