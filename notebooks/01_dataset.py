# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: PointVL-3D
#     language: python
#     name: pointvl-3d
# ---

# %% [markdown]
# # 01 · The benchmark: meshes → points → camera → image → labels
#
# **Paper: Section 4.1, "Dataset construction and protocols" (4.1.1 point clouds, 4.1.2
# views and rendering, 4.1.3 annotations).** Every training example pairs a point cloud with
# an image of the *same* object through a *known* camera, so that its 2D and 3D labels agree
# exactly: the reprojection consistency reward of Sec. 3.4 depends on it. This notebook builds
# one object step by step with `pointvl.data`, then one object per category live, shows them in
# the interactive reprojection view, and reads the built dataset's manifest if there is one.
#
# Departures (see `paper/departures.md`): procedural meshes by default instead of ShapeNet
# (`source: shapenet` reads a local copy), a ray-cast renderer without the paper's diffusion
# refinement, template language instead of GPT-5.

# %% tags=["parameters"]
profile = "tiny"
fast = False
seed = 0

# %%
import json
import time

import numpy as np

from pointvl.config import DEFAULT_PARAMS, load_params, load_section
from pointvl.data import PointVLDataset, annotate, read_manifest, shapes
from pointvl.data.build import (
    BuildDatasetConfig,
    InstanceSpec,
    instance_seed,
    make_instance,
    plan_instances,
)
from pointvl.data.cameras import sample_camera
from pointvl.data.dataset import instance_sample
from pointvl.data.render import Material, RaycastRenderer
from pointvl.data.sampling import farthest_point_sampling, sample_points
from pointvl.geometry import iou_2d, project_points, reprojected_footprint
from pointvl.schema import format_target
from pointvl.viz.dataset import (
    camera_views_figure,
    category_histogram_figure,
    mesh_cloud_figure,
    render_figure,
)
from pointvl.viz.html import html_table
from pointvl.viz.notebook import notebook_setup
from pointvl.viz.reprojection import reprojection_figure

notebook_setup()
ROOT = DEFAULT_PARAMS.parent  # the repository (the kernel runs in notebooks/)
Q = load_params(profile=profile)["schema"]["quant_bins"]
cfg = load_section(DEFAULT_PARAMS, "build_dataset", BuildDatasetConfig, profile)
print(f"profile {profile}: N = {cfg.num_points} points, {cfg.image_size}² px, M = "
      f"{cfg.num_keypoints} keypoints, Q = {Q} bins, source = {cfg.source}")  # fmt: skip

# %% [markdown]
# ## One object, one seed
#
# Instance i of split s has its own seed, `SeedSequence([seed, s, i])`: workers share nothing,
# so a build is byte-identical whatever the number of processes. Everything below draws from
# that one generator in the order `build.make_instance` does, so at the end we can check that
# the walk-through produced exactly the row the builder writes.

# %%
category = "chair"
spec = InstanceSpec("test", 0, category, instance_seed(seed, "test", 0))
rng = np.random.default_rng(spec.seed)

# %% [markdown]
# ## A mesh in ShapeNet's frame
#
# `shapes.FAMILIES[category]` assembles closed primitives (boxes, surfaces of revolution, torus
# arcs), one part id per triangle. `normalize` puts it in ShapeNet's frame: bounding box
# centred at 0, diagonal 1, y up, the object's front facing +z:
#
# $$x_{\mathrm{norm}} = (x - c)\, s, \qquad c = \tfrac{1}{2}(\min x + \max x), \qquad s = 1/\lVert \max x - \min x \rVert$$

# %%
mesh, centre, scale = shapes.normalize(shapes.FAMILIES[category](rng))
lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
print("vertices", mesh.vertices.shape, "triangles", mesh.triangles.shape, "(V, 3), (F, 3)")
print("parts:", dict(zip(mesh.part_names, mesh.part_counts)))
print("attributes:", mesh.attributes)
print(f"bbox diagonal after normalize: {np.linalg.norm(hi - lo):.6f}, centre {(lo + hi) / 2}")

# %% [markdown]
# ## Points (Sec. 4.1.1): Poisson-disk sampling, KNN normals, FPS keypoints
#
# Open3D's Poisson-disk sampler (init factor 5, the paper's value) spreads N points evenly over
# the surface; normals come from a plane fit to the 30 nearest neighbours. The M = 16
# keypoints are picked by farthest point sampling, started at the point farthest from the
# centroid:
#
# $$i_1 = \arg\max_i \lVert x_i - \bar x\rVert, \qquad i_{m+1} = \arg\max_i \min_{j\le m} \lVert x_i - x_{i_j}\rVert$$

# %%
points = sample_points(mesh, cfg.num_points, spec.seed, cfg.poisson_init_factor, cfg.normal_knn)
kpt_idx = farthest_point_sampling(points[:, :3], cfg.num_keypoints)  # (M,)
print("points", points.shape, points.dtype, "(N, 6): x y z nx ny nz")
print("normals unit length:", np.allclose(np.linalg.norm(points[:, 3:], axis=1), 1, atol=1e-5))
print("keypoint indices:", kpt_idx)
mesh_cloud_figure(mesh, points, kpt_idx)

# %% [markdown]
# ## A category-adaptive camera (Sec. 4.1.2)
#
# The camera looks at the origin from azimuth a and elevation e (OpenCV convention: x right,
# y down, z forward), at a distance that keeps the bounding sphere (radius 0.5) in view:
#
# $$C = d\,(\cos e \sin a,\ \sin e,\ \cos e \cos a), \qquad X_c = R X + t,\ t = -RC, \qquad u = \pi(K X_c)$$
#
# The azimuth range depends on the category: cars and airplanes are seen from the side,
# furniture from the front half, round objects from anywhere; e ∈ [10°, 45°].

# %%
camera = sample_camera(
    category, rng, cfg.image_size, cfg.fov_deg, (cfg.elevation_min_deg, cfg.elevation_max_deg)
)
print(f"azimuth {camera.azimuth_deg:.1f}°, elevation {camera.elevation_deg:.1f}°")
print("K =\n", camera.K, "\ncentre C =", camera.center, " |C| =", np.linalg.norm(camera.center))

# %% [markdown]
# The same sampler, 60 draws for four categories (a fresh generator, so the instance above is
# not disturbed):

# %%
view_rng = np.random.default_rng(seed + 1)
views = {
    c: [sample_camera(c, view_rng, cfg.image_size) for _ in range(60)]
    for c in ("car", "chair", "mug", "bookshelf")
}
fig = camera_views_figure(views)

# %% [markdown]
# ## Rendering
#
# `RaycastRenderer` casts one ray per pixel centre through K, R, t (Open3D, headless CPU) and
# shades each hit with Lambert + ambient light and a per-category, per-part colour. It returns
# the RGB image, the foreground mask and the z-depth, pixel-aligned with the camera.
# (The paper rasterized with PyTorch3D and refined the appearance with a diffusion model; that
# is an `AppearanceBackend` here, identity by default: labels do not depend on it.)

# %%
render = RaycastRenderer().render(mesh, camera, Material.for_mesh(mesh, rng))
print("rgb", render.rgb.shape, "mask", render.mask.shape, "depth", render.depth.shape)
print(f"foreground: {render.mask.mean():.1%} of the pixels")
uv, in_front = project_points(points[:, :3], camera.K, camera.R, camera.t)  # (N, 2), (N,)
px = np.clip(np.floor(uv).astype(int), 0, cfg.image_size - 1)  # (N, 2) column, row
print(f"cloud points projecting onto the mask: {render.mask[px[:, 1], px[:, 0]].mean():.1%}")

# %% [markdown]
# ## Labels (Sec. 4.1.3)
#
# - `bbox3d`: the axis-aligned box of the cloud (the keypoints are cloud points, so they lie
#   inside); `kpts3d`: the FPS keypoints.
# - `bbox2d`: the tight box of the mask in continuous pixels, pixel (i, j) covering
#   [j, j+1] × [i, i+1].
# - `kpts2d`: each 3D keypoint projected; if it misses the mask it is snapped to the nearest
#   foreground pixel centre. Orange crosses: raw projections; blue dots: the labels.

# %%
geo = annotate.geometry_labels(points, kpt_idx, camera, render.mask)
for name, value in geo.items():
    print(f"{name:7s} {str(value.shape):8s} {np.round(value.reshape(-1)[:6], 3)}")
raw_uv, _ = project_points(geo["kpts3d"], camera.K, camera.R, camera.t)  # (M, 2)
print("snapped keypoints:", int((np.abs(raw_uv - geo["kpts2d"]) > 1e-9).any(1).sum()))
fig = render_figure(render, geo["bbox2d"], geo["kpts2d"], raw_uv)

# %% [markdown]
# How consistent are the ground-truth labels with each other? Eqs. (11)–(13) project the
# 8 corners of `bbox3d` and compare their footprint with `bbox2d`; on ground truth the IoU is
# high but below 1 (the box of a cloud is larger than the object's silhouette from most views).

# %%
footprint, ok = reprojected_footprint(geo["bbox3d"], camera.K, camera.R, camera.t)
print("footprint", np.round(footprint, 1), " bbox2d", geo["bbox2d"])
print(f"ground-truth r_rpc = IoU(footprint, bbox2d) = {iou_2d(footprint, geo['bbox2d']):.3f}")

# %% [markdown]
# Language: a template description and QA pairs (category multiple choice first, then part
# count, attribute, proportion, orientation). Each QA pair becomes one target JSON (Eq. 1),
# geometry quantized: 3D coordinates to bins in [0, Q), 2D to integer pixels.

# %%
description = annotate.describe(mesh, geo["bbox3d"], camera)
qas = annotate.question_answers(mesh, geo["bbox3d"], camera, rng, cfg.category_list())
print(description)
for qa_type, question, answer in qas:
    print(f"  [{qa_type}] {question} -> {answer}")
target = format_target({**geo, "answer": qas[0][2], "description": description}, Q)
print(target[:300], "...")

# %% [markdown]
# The walk-through is the builder: `make_instance` on the same spec writes the same numbers.

# %%
row = make_instance(spec, cfg, Q)
same = all(np.allclose(row[k], geo[k].reshape(-1)) for k in geo)
print("same labels:", same, "| same points:", np.array_equal(row["points"], points.reshape(-1)))
print("same description:", row["description"] == description, "| same target:",
      row["targets"][0] == target)  # fmt: skip

# %% [markdown]
# ## The `view` task: what one camera sees, and the whole object as the answer
#
# Above, the 3D targets are functions of the input: `bbox3d` is the cloud's min / max and
# `kpts3d` is FPS on the cloud, so no learning is needed to reach them. The `view` task (ours,
# issue 16; `build_dataset.task: view`, `pointvl.data.view`) gives the model only what the
# image's camera sees — the foreground pixels of the same render's depth, back-projected and
# FPS-thinned to N points — and asks for the **whole** object's box and keypoints (amodal),
# in a frame built from the visible points alone:
#
# $$X_v = s\,Q\,(X - c), \qquad Q = (\text{camera right},\ \text{up},\ \text{toward the camera}), \qquad c = \bar v, \qquad s = \rho \,/\, \max_i \lVert v_i - c \rVert$$
#
# Q is the camera's frame with the pitch removed (gravity-aligned). The stored camera becomes
# R' = R Qᵀ, t' = s (R c + t), so every pixel projection — and RPC — is unchanged; the image,
# the 2D labels and the language are the same as in the full task.

# %%
from pointvl.data.view import ViewFrame, point_visibility  # noqa: E402
from pointvl.eval.trivial import probe_row  # noqa: E402
from pointvl.viz.view import visibility_figure  # noqa: E402

VIEW_PARAMS = ROOT / "studies/view/params.yaml"
vcfg = load_section(VIEW_PARAMS, "build_dataset", BuildDatasetConfig, profile)
vrow = make_instance(spec, vcfg, Q)  # the same chair, same seed
frame = ViewFrame.from_row(vrow)
seen = point_visibility(mesh, camera, points[:, :3])  # (N,) which full-cloud points it sees
print(f"input: {vrow['visible_pixels']} foreground depth pixels -> {vcfg.num_points} points; "
      f"the camera sees {seen.mean():.0%} of the full cloud and "
      f"{np.mean(vrow['kpts3d_visible']):.0%} of the {cfg.num_keypoints} keypoints")  # fmt: skip
print(f"view frame: scale s = {frame.scale:.3f}, origin c = {np.round(frame.origin, 3)}")

# %% [markdown]
# Grey: the points the camera does not see (never in the input). Dark blue: the input cloud.
# Green: the amodal target box; orange dashed: the input's own AABB, the best box without
# learning. Red crosses: GT keypoints the camera does not see — FPS on the input cannot find
# them.

# %%
visibility_figure(frame.to_view(points[:, :3]), seen, vrow["points"].reshape(-1, 6),
                  vrow["bbox3d"], vrow["kpts3d"], vrow["kpts3d_visible"],
                  title=f"{category}: visible vs occluded, amodal box (view frame)")  # fmt: skip

# %% [markdown]
# How much of the target the input still gives away (``trivial.probe_row``, no quantization):
# the input's AABB against the amodal box, in the view frame and — what an object-aligned
# frame would give — in the object frame; FPS on the input against the GT keypoints.

# %%
for name, value in probe_row(vrow, vcfg.num_points).items():
    print(f"{name:32s} {value:.3f}")
reprojection_figure([instance_sample(vrow)], max_points=1024 if fast else 2048)

# %% [markdown]
# The built `view` dataset and its probes over the test split, if `dvc repro
# studies/view/dvc.yaml:eval_trivial` has run (it builds `data/<profile>_view` first):

# %%
vdata = ROOT / f"data/{profile}_view"
probes_json = ROOT / load_params(VIEW_PARAMS, profile)["eval_trivial"]["probes"]
if (vdata / "manifest.json").is_file():
    print(f"{vdata.name}: {read_manifest(vdata)['view']}")
if probes_json.is_file():
    for name, v in json.loads(probes_json.read_text()).items():
        print(f"{name:32s} {v}" if name.startswith("_") else f"{name:32s} {v['mean']:.3f}")
else:
    print("not built: dvc repro studies/view/dvc.yaml:eval_trivial (a few minutes on 2 cores)")

# %% [markdown]
# ## One instance per category, live
#
# `make_instance` for each of the 14 procedural categories (test split, indices 0–13, so
# categories rotate as in a build), then `instance_sample` turns each row into the sample dict
# `PointVLDataset` yields.

# %%
t0 = time.perf_counter()
rows = [
    make_instance(InstanceSpec("test", i, c, instance_seed(seed, "test", i)), cfg, Q)
    for i, c in enumerate(cfg.category_list())
]
samples = [instance_sample(r) for r in rows]
print(f"{len(rows)} instances in {time.perf_counter() - t0:.2f} s")
html_table(
    [
        [s["category"], len(r["questions"]), s["description"][:70] + "…"]
        for s, r in zip(samples, rows)
    ],
    ["category", "QA pairs", "description"],
)

# %% [markdown]
# ## The reprojection view
#
# Left: the cloud, its 3D box and keypoints, and the camera frustum in the object frame.
# Right: the image with the 2D box, the 2D keypoints and the 3D box **projected** through K,
# R, t (Eqs. 11–12). Pick an object in the drop-down; rotate the 3D scene to find the camera.

# %%
reprojection_figure(samples, max_points=1024 if fast else 2048)

# %% [markdown]
# ## The built dataset
#
# `dvc repro build_dataset` (or `python -m pointvl.stages.build_dataset --params params.yaml`)
# writes `data/<profile>/`: Parquet shards per split and `manifest.json` (counts, category
# histograms, content hash, the config). When it is not built (CI, a fresh clone) we plot the
# histogram the build *would* produce, from `build.plan_instances`.

# %%
data_dir = ROOT / cfg.out_dir
built = (data_dir / "manifest.json").is_file()
if built:
    manifest = read_manifest(data_dir)
    hists = {s: v["category_histogram"] for s, v in manifest["splits"].items()}
    title = (
        f"{cfg.out_dir}: {manifest['content_hash'][:12]}…, gt r_rpc mean {manifest['gt_rpc_mean']}"
    )
else:
    specs, _ = plan_instances(cfg)
    hists = {s: {} for s in ("train", "test")}
    for sp in specs:
        hists[sp.split][sp.category] = hists[sp.split].get(sp.category, 0) + 1
    title = f"{cfg.out_dir} is not built: the planned histogram"
category_histogram_figure(hists, title)

# %% [markdown]
# With a built dataset, the loader: one sample per instance (`qa_mode="rotate"` picks one QA
# pair per object), tensors with the shapes the processor of notebook 02 expects.

# %%
if built:
    ds = PointVLDataset(data_dir, "test")
    sample = ds[0]
    print(
        len(ds), "samples |", {k: tuple(v.shape) for k, v in sample.items() if hasattr(v, "shape")}
    )
    print(sample["question"], "->", sample["answer"])
else:
    print(f"no {cfg.out_dir}/manifest.json: run `dvc repro build_dataset` to build it")

# %% [markdown]
# ## What to try next
#
# 1. **Another category, another seed.** Set `category = "car"` (or any of
#    `shapes.CATEGORIES`) and re-run from "One object": cars are only seen from the side.

# %%
print(shapes.CATEGORIES)
car = make_instance(InstanceSpec("test", 9, "car", instance_seed(seed + 1, "test", 9)), cfg, Q)
print(f"car azimuth {car['azimuth_deg']:.0f}°:", car["description"])

# %% [markdown]
# 2. **Steeper views.** Raise the elevation range and watch the descriptions and the
#    orientation answers change ("from above", "steeply").

# %%
steep = BuildDatasetConfig(
    num_points=cfg.num_points, image_size=cfg.image_size, elevation_min_deg=50, elevation_max_deg=80
)
r = make_instance(InstanceSpec("test", 2, "lamp", instance_seed(seed, "test", 2)), steep, Q)
print(f"elevation {r['elevation_deg']:.0f}°:", r["description"], "|", r["answers"][-1])

# %% [markdown]
# 3. **Resolution and cost.** The paper's profile uses 8,192 points and 448² images; time one
#    instance at a larger size (keep it modest on a laptop).

# %%
big = BuildDatasetConfig(num_points=512 if fast else 4096, image_size=64 if fast else 224)
t0 = time.perf_counter()
r = make_instance(InstanceSpec("test", 0, "sofa", instance_seed(seed, "test", 0)), big, Q)
print(f"{big.num_points} points, {big.image_size}² px: {time.perf_counter() - t0:.2f} s")
