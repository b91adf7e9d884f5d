"""Training logs: every ``on_log`` record as a JSON line, and a CSV at the end.

A run writes ``<log>.partial`` while it trains and renames it to ``<log>`` only when training
ends, so a failed or killed run never truncates or replaces the log of an earlier, complete
run. ``--resume`` continues the partial log.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from transformers import TrainerCallback

from pointvl.io import read_jsonl, write_csv


def _jsonable(v):
    if isinstance(v, torch.Tensor):
        v = v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class MetricsLogger(TrainerCallback):
    """Every ``on_log`` record -> one JSON line; ``on_train_end`` -> the complete log + CSV.

    Written by the main process only. The CSV has the union of keys (empty where absent), so
    pandas reads it directly; validation records (``val/*``) also go to ``val.csv`` beside
    it, whose columns are all filled (DVC plots). TensorBoard is handled by ``report_to``.
    """

    def __init__(self, jsonl_path: str | os.PathLike, csv_path: str | os.PathLike | None = None):
        self.jsonl_path = Path(jsonl_path)
        self.partial = self.jsonl_path.with_name(self.jsonl_path.name + ".partial")
        self.csv_path = Path(csv_path) if csv_path is not None else None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        if state.global_step == 0 or not self.partial.exists():
            self.partial.write_text("")  # a new run; a resumed one appends
        else:  # resumed: drop records past the checkpoint (they will be logged again)
            kept = [r for r in read_jsonl(self.partial) if r.get("step", 0) <= state.global_step]
            self.partial.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        self.write({"step": state.global_step, **{k: _jsonable(v) for k, v in logs.items()}})

    def write(self, record: dict) -> None:
        """Append one record to the partial log (also used for validation records)."""
        with self.partial.open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        os.replace(self.partial, self.jsonl_path)
        if self.csv_path is not None:
            records = read_jsonl(self.jsonl_path)
            write_csv(records, self.csv_path)
            val = [r for r in records if "val/n" in r]
            if val:  # the validation curve alone (DVC plots read it: no empty cells)
                write_csv(val, self.csv_path.with_name("val.csv"))
