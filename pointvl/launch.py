"""Run the real stages from a notebook or a shell, safely: a sandboxed params file, live logs.

    sandbox = Sandbox.create("/tmp/pointvl-run", profile="smoke")   # params.yaml, rebased
    run_live(sandbox.stage("build_dataset"))                          # python -m ... --params
    run_live(sandbox.accelerate("sft"))                               # accelerate launch ...

``Sandbox.create`` copies ``params.yaml`` with ``profile`` set and every output path (any
value under ``data/``, ``models/``, ``checkpoints/`` or ``results/``) moved under the sandbox
folder, so a stage run there reads and writes nothing of this checkout: the committed
results of any profile stay as they are. ``overrides`` change section values of that profile
(e.g. fewer steps). ``run_live`` runs a command, prints its output line by line as it comes
(progress bars included) and raises with the last lines when it fails.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
OUTPUT_ROOTS = ("data/", "models/", "checkpoints/", "results/")
"""Values under these folders are outputs of some stage: a sandbox moves them."""
INPUT_KEYS = frozenset({"shapenet_root", "backbone", "point_bert_checkpoint"})
"""Paths a stage only reads from the checkout (left as they are)."""
ACCELERATE_CONFIG = "configs/accelerate/cpu.yaml"
STAGE_ENV = {
    "OPEN3D_DISABLE_WEB_VISUALIZER": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}


def rebase_outputs(node: Any, root: Path, key: str | None = None) -> Any:
    """A copy of a params tree with every output path (``OUTPUT_ROOTS``) under ``root``."""
    if isinstance(node, Mapping):
        return {k: rebase_outputs(v, root, k) for k, v in node.items()}
    if isinstance(node, list):
        return [rebase_outputs(v, root, key) for v in node]
    if isinstance(node, str) and key not in INPUT_KEYS and node.startswith(OUTPUT_ROOTS):
        return str(root / node)
    return node


@dataclasses.dataclass(frozen=True)
class Sandbox:
    """A folder holding a params file whose outputs all live inside it."""

    root: Path
    params: Path
    profile: str

    @classmethod
    def create(
        cls,
        root: str | os.PathLike,
        profile: str = "smoke",
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        base: str | os.PathLike = ROOT / "params.yaml",
    ) -> Sandbox:
        """Write ``<root>/params.yaml`` (see the module docstring) and return the sandbox."""
        root = Path(root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        raw = yaml.safe_load(Path(base).read_text())
        if profile not in raw.get("overrides", {}):
            raise ValueError(f"profile={profile!r}: expected one of {sorted(raw['overrides'])}")
        raw = rebase_outputs(raw, root)
        raw["profile"] = profile
        block = raw["overrides"].setdefault(profile, {})
        for section, values in (overrides or {}).items():
            block[section] = {**(block.get(section) or {}), **values}
        params = root / "params.yaml"
        params.write_text(yaml.safe_dump(raw, sort_keys=False))
        if "active" in raw:  # what dvc.yaml reads: set for `profile` as `make profile` does
            from pointvl.profile import switch

            switch(params, profile)
        return cls(root, params, profile)

    def stage(self, name: str, *args: str) -> list[str]:
        """``python -m pointvl.stages.<name> --params <sandbox params> args...``."""
        return [sys.executable, "-m", f"pointvl.stages.{name}", "--params", str(self.params),
                *args]  # fmt: skip

    def accelerate(self, name: str, *args: str, config: str = ACCELERATE_CONFIG) -> list[str]:
        """``accelerate launch --config_file <config> -m pointvl.stages.<name> --params ...``."""
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                  str(ROOT / config), "--num_cpu_threads_per_process", str(os.cpu_count() or 1)]  # fmt: skip
        return [*launch, "-m", f"pointvl.stages.{name}", "--params", str(self.params), *args]

    def path(self, value: str) -> Path:
        """A params path value (e.g. ``results/train/rl_{variant}/log.jsonl``) in the sandbox."""
        return self.root / value.format(profile=self.profile)


def shown(cmd: Sequence[str]) -> str:
    """A command as a reader would type it (``python -m ...``, ``accelerate launch ...``)."""
    text = " ".join(str(c) for c in cmd)
    text = text.replace(f"{sys.executable} -m accelerate.commands.launch", "accelerate launch")
    return text.replace(sys.executable, "python")


def _cuda_env() -> dict[str, str]:
    """``DS_ACCELERATOR=cpu`` where no GPU driver is present (DeepSpeed otherwise warns)."""
    import shutil

    return {} if shutil.which("nvidia-smi") else {"DS_ACCELERATOR": "cpu"}


class _Echo:
    """Prints lines in small batches (one notebook output per batch, not per line) and elides
    a stage's closing JSON summary after ``json_lines`` lines (the metrics file has it all)."""

    def __init__(self, echo: bool, json_lines: int = 12, every_s: float = 0.5):
        self.echo, self.json_lines, self.every_s = echo, json_lines, every_s
        self.batch: list[str] = []
        self.in_json, self.json_seen, self.elided = False, 0, 0
        self.last = 0.0

    def __call__(self, line: str) -> None:
        import time

        if line == "{":
            self.in_json, self.json_seen, self.elided = True, 0, 0
        if self.in_json:
            self.json_seen += 1
            if line == "}":
                self.in_json = False
                if self.elided:
                    self.batch.append(f"  ... {self.elided} more lines (the metrics file has them)")
            elif self.json_seen > self.json_lines:
                self.elided += 1
                return
        self.batch.append(line)
        if time.monotonic() - self.last > self.every_s:
            self.flush()

    def flush(self) -> None:
        import time

        if self.echo and self.batch:
            print("\n".join(self.batch), flush=True)
        self.batch, self.last = [], time.monotonic()


def run_live(
    cmd: Sequence[str],
    cwd: str | os.PathLike = ROOT,
    env: Mapping[str, str] | None = None,
    echo: bool = True,
    keep: int = 40,
) -> list[str]:
    """Run ``cmd``, printing its output as it arrives (stdout and stderr merged; a progress
    bar's carriage returns become lines; a stage's closing JSON summary is cut after 12
    lines). Returns the last ``keep`` lines; raises ``RuntimeError`` with them when the
    command fails. The checkout's ``pointvl`` is first on ``PYTHONPATH``, hubs are offline
    (``STAGE_ENV``)."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    full_env = {**os.environ, **STAGE_ENV, **_cuda_env(), "PYTHONPATH": path, **(env or {})}
    if echo:
        print("$", shown(cmd), flush=True)
    tail: deque[str] = deque(maxlen=keep)
    out = _Echo(echo)
    with subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=full_env, text=True, bufsize=1,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:  # fmt: skip
        for line in proc.stdout:  # text mode: "\r" (tqdm) ends a line too
            line = line.rstrip()
            if line and (not tail or line != tail[-1]):
                tail.append(line)
                out(line)
    out.flush()
    if proc.returncode != 0:
        raise RuntimeError(f"{shown(cmd)} exited {proc.returncode}:\n" + "\n".join(tail))
    return list(tail)
