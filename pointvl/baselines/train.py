"""Training and inference loops of the point-only regressors (Table 2 baselines).

AdamW, a linear warm-up over the first ``WARMUP_FRAC`` of the steps, then a cosine decay
to 0; one random subset of ``num_points`` points per cloud and step (a random permutation
when the cloud has no more points than that, which also moves the FPS start point of
PointNet++ and Point-BERT). Inference is deterministic: every point in its stored order
when the cloud has at most ``num_points`` points, else one subset drawn with ``seed``.
One JSON line per epoch goes to ``log_path``: ``loss/total``, ``loss/box``, ``loss/kpts``
(means over the epoch's steps), ``lr``, ``epoch_s`` (the stage copies it to a CSV beside it,
what ``dvc plots`` reads).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from pointvl.baselines.regressor import regression_loss

WARMUP_FRAC = 0.05


@dataclass
class RegressionData:
    """One split in memory: points (R, N, C) float32, boxes (R, 6), keypoints (R, M, 3)."""

    points: torch.Tensor
    boxes: torch.Tensor
    kpts: torch.Tensor

    def __post_init__(self) -> None:
        r = self.points.shape[0]
        if self.points.ndim != 3 or self.boxes.shape != (r, 6) or self.kpts.shape[::2] != (r, 3):
            raise ValueError(
                "RegressionData: expected points (R, N, C), boxes (R, 6), kpts (R, M, 3); got "
                f"{tuple(self.points.shape)}, {tuple(self.boxes.shape)}, {tuple(self.kpts.shape)}"
            )

    def __len__(self) -> int:
        return self.points.shape[0]


def subsample(points: torch.Tensor, num_points: int, generator: torch.Generator) -> torch.Tensor:
    """A random subset of min(num_points, N) points of each cloud: (B, N, C) -> (B, n, C)."""
    b, n = points.shape[:2]
    order = torch.rand(b, n, generator=generator).argsort(dim=1)[:, :num_points]  # (B, n)
    return points[torch.arange(b)[:, None], order]  # (B, n, C)


def cosine_schedule(optimizer, total_steps: int, warmup_frac: float = WARMUP_FRAC):
    """transformers' cosine schedule with linear warm-up: lr factor t / W for t < W (the first
    step runs at 0), then ½ (1 + cos(π (t − W) / (T − W))), W = ``warmup_frac`` · T (≥ 1)."""
    from transformers import get_cosine_schedule_with_warmup

    warmup = max(1, int(warmup_frac * total_steps))
    return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled index batches; a last batch of one sample is dropped (BatchNorm needs 2)."""
    batches = list(torch.randperm(n, generator=generator).split(batch_size))
    return batches[:-1] if len(batches) > 1 and len(batches[-1]) < 2 else batches


def _num_batches(n: int, batch_size: int) -> int:
    """len(_batches(n, batch_size, ...)) without drawing a permutation."""
    full, rest = divmod(n, batch_size)
    return full + int(rest >= 2 or full == 0)


def _step(model, opt, sched, data, idx, num_points, keypoint_loss, gen) -> dict[str, float]:
    """One AdamW step on the clouds ``idx`` (B,) -> the batch's losses."""
    pts = subsample(data.points[idx], num_points, gen)  # (B, n, C)
    box, kpts = model(pts)  # (B, 6), (B, M, 3)
    losses = regression_loss(box, kpts, data.boxes[idx], data.kpts[idx], keypoint_loss)
    opt.zero_grad(set_to_none=True)
    losses["loss/total"].backward()
    opt.step()
    sched.step()
    return {k: v.item() for k, v in losses.items()}


def fit(
    model: nn.Module,
    data: RegressionData,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    weight_decay: float,
    num_points: int,
    keypoint_loss: str,
    seed: int,
    threads: int,
    log_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train ``model`` in place on ``data``; returns the per-epoch log rows (see module doc)."""
    if len(data) < 2:
        raise ValueError(f"fit: need at least 2 training samples, got {len(data)}")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = _num_batches(len(data), batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    sched = cosine_schedule(opt, epochs * steps_per_epoch)
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        Path(log_path).write_text("")
    model.train()
    history = []
    bar = tqdm(total=epochs * steps_per_epoch, disable=not progress, desc="train", leave=False)
    for epoch in range(1, epochs + 1):
        t0, sums = time.perf_counter(), {}
        for idx in _batches(len(data), batch_size, gen):
            losses = _step(model, opt, sched, data, idx, num_points, keypoint_loss, gen)
            sums = {k: sums.get(k, 0.0) + v for k, v in losses.items()}
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{losses['loss/total']:.4f}")
        row = {"epoch": epoch, "step": epoch * steps_per_epoch}
        row |= {k: v / steps_per_epoch for k, v in sums.items()}
        row |= {"lr": sched.get_last_lr()[0], "epoch_s": time.perf_counter() - t0}
        history.append(row)
        if log_path is not None:
            with open(log_path, "a") as f:
                f.write(json.dumps(row) + "\n")
    bar.close()
    return history


@torch.no_grad()
def predict(
    model: nn.Module, points: torch.Tensor, num_points: int, seed: int = 0, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (R, 6) and keypoints (R, M, 3), float64, for clouds (R, N, C) (see module doc)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    boxes, kpts = [], []
    for chunk in points.split(batch_size):
        if chunk.shape[1] > num_points:
            chunk = subsample(chunk, num_points, gen)  # (B, n, C)
        box, kp = model(chunk)  # (B, 6), (B, M, 3)
        boxes.append(box.double().numpy())
        kpts.append(kp.double().numpy())
    return np.concatenate(boxes), np.concatenate(kpts)
