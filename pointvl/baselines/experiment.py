"""Table 2's point-only regressors, trained and scored (the ``baseline`` stage; Sec. 4.3).

A regressor (``pointnet`` | ``pointnet2`` (SSG) | ``pointbert``) trains on the ``train``
split to predict ``bbox3d`` and the unordered ``kpts3d`` from the point cloud alone (xyz +
normals), then predicts the ``test`` split.

Its predictions are written as completion texts with ``schema.format_target``, exactly as
the trivial predictors (``pointvl.eval.trivial``): the predicted 3D fields, and every other
field (``answer``, ``description``, ``bbox2d``, ``kpts2d``) copied from the ground truth.
They go through the same parser and metrics as the VLM. Because the 2D box is the GT one,
**RPC is computed against the GT 2D box** (the footprint of the predicted 3D box under the
GT camera, compared with the true 2D box), and only ``trivial.REPORTED_METRICS`` are kept
(the 2D and language metrics would only score the copied ground truth).

Outputs, per name: ``<predictions_dir>/<name>.jsonl`` (lines {uid, question, completion}),
``<metrics_dir>/<name>.json`` ({metric: {mean, lo, hi, n}} + ``_meta``), the weights in
``<out_dir>/<name>/model.pt`` and the epoch log ``<log_dir>/<name>.jsonl``.
``from_predictions`` recomputes the metrics from the saved predictions without training.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Annotated

import numpy as np

from pointvl.config import (
    ConfigError,
    NonNegativeInt,
    OneOf,
    PositiveFloat,
    PositiveInt,
    Range,
)
from pointvl.io import (
    atomic_file,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
    write_csv,
)

BASELINE_NAMES = ("pointnet", "pointnet2", "pointbert")
KEYPOINT_LOSS_NAMES = ("hungarian", "chamfer")


@dataclasses.dataclass
class BaselineConfig:
    """Section ``baselines`` of params.yaml ({profile} is replaced by the active profile)."""

    data_dir: str = "data/{profile}"
    """The built benchmark: trains on ``train``, predicts and scores ``test``."""
    epochs: PositiveInt = 20
    """Passes over the training split."""
    batch_size: Annotated[int, Range(ge=2)] = 32
    """Clouds per optimizer step (>= 2: BatchNorm)."""
    learning_rate: PositiveFloat = 1e-3
    """AdamW peak learning rate (linear warm-up over 5% of the steps, cosine decay to 0)."""
    weight_decay: Annotated[float, Range(ge=0.0)] = 1e-4
    """AdamW decoupled weight decay."""
    num_points: Annotated[int, Range(ge=32)] = 1024
    """Points fed to the regressor: a random subset per step in training, a fixed one at test
    (all points, in stored order, when the cloud has at most this many)."""
    keypoint_loss: Annotated[str, OneOf(*KEYPOINT_LOSS_NAMES)] = "hungarian"
    """Set loss on the unordered keypoints: ``hungarian`` (L1 after optimal matching) or
    ``chamfer`` (symmetric L1 Chamfer)."""
    max_train_samples: NonNegativeInt = 0
    """Train on the first N training objects only (0: the whole split)."""
    n_boot: Annotated[int, Range(ge=100)] = 1000
    """Bootstrap resamples for the 95% CIs."""
    seed: int = 0
    """Seeds the initialization, the batches, the point subsets and the bootstrap."""
    threads: PositiveInt = 2
    """torch CPU threads (``torch.set_num_threads``)."""
    out_dir: str = "checkpoints/{profile}/baselines"
    """Trained weights go to ``<out_dir>/<name>/model.pt``."""
    predictions_dir: str = "results/predictions"
    """Where ``<name>.jsonl`` goes."""
    metrics_dir: str = "results/metrics/eval"
    """Where ``<name>.json`` goes."""
    log_dir: str = "results/train/baselines"
    """Where the per-epoch log ``<name>.jsonl`` goes."""
    sizes: dict[str, dict] = dataclasses.field(default_factory=dict)
    """Per-model backbone size, {name: {key: value}} (keys: ``regressor.SIZE_KEYS``);
    ``pointnet``: widths; ``pointnet2``: levels [[centres, radius, K, widths], ...] and
    global_widths; ``pointbert``: fields replacing the ``model`` section's Point-BERT size.
    A model left out gets ``regressor.DEFAULT_SIZES``."""

    def validate(self) -> None:
        from pointvl.baselines.regressor import SIZE_KEYS

        for name, size in (self.sizes or {}).items():
            if name not in BASELINE_NAMES:
                raise ConfigError(
                    f"baselines.sizes.{name}: unknown baseline; expected one of {BASELINE_NAMES}"
                )
            unknown = sorted(set(size or {}) - set(SIZE_KEYS[name]))
            if unknown:
                raise ConfigError(
                    f"baselines.sizes.{name}: unknown key(s) {unknown}; expected {SIZE_KEYS[name]}"
                )


def check_name(name: str) -> None:
    if name not in BASELINE_NAMES:
        raise ConfigError(f"baseline: unknown name {name!r}; expected one of {BASELINE_NAMES}")


# ----------------------------------------------------------------------------- data
def load_regression_split(data_dir: str, split: str, limit: int = 0):
    """(uids, RegressionData) of one split: points (R, N, 6), bbox3d (R, 6), kpts3d (R, M, 3)."""
    import torch

    from pointvl.baselines.train import RegressionData
    from pointvl.data.dataset import read_manifest, read_split

    n_pts, n_ch = read_manifest(data_dir)["points_shape"]
    table = read_split(data_dir, split, ["uid", "points", "bbox3d", "kpts3d"])
    if limit:
        table = table.slice(0, limit)
    r = table.num_rows
    pts = table.column("points").combine_chunks().flatten().to_numpy()
    boxes = np.asarray(table.column("bbox3d").to_pylist(), dtype=np.float32)
    kpts = np.asarray(table.column("kpts3d").to_pylist(), dtype=np.float32).reshape(r, -1, 3)
    data = RegressionData(
        points=torch.from_numpy(pts.reshape(r, n_pts, n_ch).astype(np.float32)),
        boxes=torch.from_numpy(boxes),
        kpts=torch.from_numpy(kpts),
    )
    return table.column("uid").to_pylist(), data


def build_model(cfg: BaselineConfig, name: str, model_cfg, num_keypoints: int):
    """The regressor ``name``, sized by ``cfg.sizes``; inputs as the policy's point encoder.

    Every baseline takes the per-point channels of ``model_cfg`` (the ``model`` section: xyz
    + normals in the CPU profiles, xyz in ``paper``); Point-BERT starts from its encoder size.
    """
    from pointvl.baselines import build_baseline

    size = (cfg.sizes or {}).get(name)
    if name == "pointbert":
        size = {"num_points": cfg.num_points, **(size or {})}
    return build_baseline(
        name, num_keypoints, model_cfg.point_in_channels, size, model_cfg.point_config()
    )


# ----------------------------------------------------------------------------- stage
def _train_and_predict(cfg, name, model_cfg, data_dir, test_uids, progress, profile, log_path):
    """Train ``name`` on the train split; -> (boxes (R, 6), kpts (R, M, 3), meta)."""
    import torch

    from pointvl.baselines import fit, predict

    uids, train = load_regression_split(data_dir, "train", cfg.max_train_samples)
    test_ids, test = load_regression_split(data_dir, "test")
    if test_ids != test_uids:
        raise ValueError(f"{data_dir}: test point clouds and targets are not in the same order")
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, name, model_cfg, train.kpts.shape[1])
    model.head.init_box_bias(train.boxes)
    t0 = time.perf_counter()
    fit(
        model, train, epochs=cfg.epochs, batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
        num_points=cfg.num_points, keypoint_loss=cfg.keypoint_loss, seed=cfg.seed,
        threads=cfg.threads, log_path=log_path, progress=progress,
    )  # fmt: skip
    train_s = time.perf_counter() - t0
    boxes, kpts = predict(model, test.points, cfg.num_points, cfg.seed)  # (R, 6), (R, M, 3)
    atomic_torch_save(
        {"name": name, "state_dict": model.state_dict(), "config": dataclasses.asdict(cfg)},
        Path(cfg.out_dir.format(profile=profile)) / name / "model.pt",
    )
    n_params = sum(p.numel() for p in model.parameters())
    return boxes, kpts, {"train_s": train_s, "params": n_params, "n_train": len(uids)}


def _read_predictions(pred_path: Path, metrics_path: Path, targets: list) -> tuple[list, dict]:
    """Completions of ``pred_path`` (checked against the targets' uids) and the old _meta."""
    rows = [json.loads(line) for line in pred_path.read_text().splitlines()]
    if [r["uid"] for r in rows] != [t["uid"] for t in targets]:
        raise ValueError(f"{pred_path}: uids do not match the test split")
    old = json.loads(metrics_path.read_text()).get("_meta", {}) if metrics_path.is_file() else {}
    return [r["completion"] for r in rows], {
        k: old.get(k) for k in ("train_s", "params", "n_train")
    }


def _write_predictions(pred_path: Path, targets: list, texts: list[str]) -> None:
    """One line {uid, question, completion} per test sample, as ``stages.evaluate``."""
    lines = (
        json.dumps({"uid": t["uid"], "question": t["question"], "completion": c}) + "\n"
        for t, c in zip(targets, texts)
    )
    atomic_write_text(pred_path, "".join(lines))


def run_baseline(
    cfg: BaselineConfig,
    name: str,
    profile: str,
    model=None,
    from_predictions: bool = False,
    progress: bool = True,
) -> dict:
    """Train (or read the saved predictions of) baseline ``name``; score the test split.

    ``model``: the ``model`` section (``ModelConfig``; default: its defaults). The epoch log,
    predictions, weights and metrics each replace the old file only once complete.
    """
    from pointvl.eval.metrics import evaluate
    from pointvl.eval.targets import load_targets
    from pointvl.eval.trivial import REPORTED_METRICS, write_completion
    from pointvl.model import ModelConfig

    check_name(name)
    data_dir = cfg.data_dir.format(profile=profile)
    targets, _, quant_bins = load_targets(data_dir, "test")
    pred_path = Path(cfg.predictions_dir) / f"{name}.jsonl"
    metrics_path = Path(cfg.metrics_dir) / f"{name}.json"
    if from_predictions:
        texts, meta = _read_predictions(pred_path, metrics_path, targets)
    else:
        uids = [t["uid"] for t in targets]
        with atomic_file(Path(cfg.log_dir) / f"{name}.jsonl") as log_path:
            boxes, kpts, meta = _train_and_predict(
                cfg, name, model or ModelConfig(), data_dir, uids, progress, profile, log_path
            )
            # predicted bbox3d / kpts3d; answer, description, bbox2d, kpts2d copied from GT
            texts = [write_completion(b, k, t, quant_bins) for b, k, t in zip(boxes, kpts, targets)]
            _write_predictions(pred_path, targets, texts)
        log = Path(cfg.log_dir) / f"{name}.jsonl"
        write_csv(read_jsonl(log), log.with_suffix(".csv"))  # the epoch log for `dvc plots`
    res = evaluate(texts, targets, quant_bins, seed=cfg.seed, n_boot=cfg.n_boot, language=False)
    out = {m: res[m] for m in REPORTED_METRICS if m in res}
    out["_meta"] = {
        "system": name, "profile": profile, "n": len(targets), "epochs": cfg.epochs, **meta,
    }  # fmt: skip
    atomic_write_json(metrics_path, out)
    return out
