"""How the training stages start: section ``launch`` of params.yaml and its checks.

Every training stage of dvc.yaml runs as::

    accelerate launch --config_file ${active.accelerate_config} -m pointvl.stages.<sft|rl> ...

``active.accelerate_config`` is the profile's ``launch.accelerate_config`` (``load_params``
checks that they agree). The accelerate file fixes the process count, the distribution
(DDP, DeepSpeed ZeRO-2/3 or one process), the device and the mixed precision:

    profile    config                                processes  device  distribution  precision
    smoke      configs/accelerate/cpu.yaml                   1  cpu     none          fp32
    tiny       configs/accelerate/cpu.yaml                   1  cpu     none          fp32
    paper      configs/accelerate/zero3.yaml (paper's)       4  cuda    ZeRO-3        bf16
               configs/accelerate/zero2.yaml | ddp.yaml      4  cuda    ZeRO-2 | DDP  bf16
    paper_sim  configs/accelerate/cpu_zero3.yaml             2  cpu     ZeRO-3, gloo  fp32

``check_launch`` runs in the stage's ``prepare`` (before any weight is loaded) and refuses,
in one line naming the field, a config that does not match the machine (GPU processes
without enough CUDA devices, a missing file) or the section's precision (``bf16`` vs the
file's ``mixed_precision``). Weights are always loaded in float32 (``MASTER_DTYPE``): bf16 is
compute only (autocast under DDP; DeepSpeed keeps its own fp32 master copy), so AdamW never
updates bf16 weights, where lr 1e-6 steps would round away.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated

import torch
import yaml

from pointvl.config import ConfigError, NonNegativeInt, OneOf

MASTER_DTYPE = torch.float32
"""The dtype every training stage loads its weights in (see the module docstring)."""
GPU_TYPES = ("MULTI_GPU", "DEEPSPEED", "FSDP", "NO")
ATTENTION = ("sdpa", "eager", "flash_attention_2")


@dataclasses.dataclass
class LaunchConfig:
    """Section ``launch``: the accelerate config the training stages are launched with."""

    accelerate_config: str = "configs/accelerate/cpu.yaml"
    """Accelerate config file (process count, DDP / DeepSpeed ZeRO stage, device, precision);
    dvc.yaml reads its copy ``active.accelerate_config``."""
    attn_implementation: Annotated[str, OneOf(*ATTENTION)] = "sdpa"
    """Attention kernel of the language model and vision tower in every stage that loads the
    policy: ``sdpa`` (PyTorch), ``eager`` or ``flash_attention_2`` (needs flash-attn and a
    GPU). The same function; speed and memory differ (no (L, L) scores with sdpa/flash)."""
    rl_cpu_threads: NonNegativeInt = 1
    """torch threads of each ``rl`` process on a CPU launch (0: torch's default, one per
    core). 1 makes RL bitwise repeatable: with 2 threads some CPU backward kernel sums in a
    thread-dependent order, the grad norm differs in the 7th digit from optimizer step 2 and,
    tens of steps later, the sampled completions (measured on ``tiny``; SFT and evaluation
    are repeatable either way). Ignored on a GPU launch."""


@dataclasses.dataclass(frozen=True)
class Launch:
    """What an accelerate config file asks for."""

    path: str
    distributed_type: str
    num_processes: int
    device: str
    """``cpu`` or ``cuda``."""
    mixed_precision: str
    zero_stage: int | None

    @property
    def describe(self) -> str:
        dist = f"ZeRO-{self.zero_stage}" if self.zero_stage is not None else self.distributed_type
        return f"{self.num_processes} {self.device} process(es), {dist}, {self.mixed_precision}"


def read_launch(path: str | os.PathLike, field: str = "launch.accelerate_config") -> Launch:
    """An accelerate config file -> ``Launch``; ``ConfigError`` naming ``field`` if unusable."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{field}={str(path)!r}: no such file (configs/accelerate/ has them)")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{field}={str(path)!r}: not valid YAML ({err})") from None
    dist = str(raw.get("distributed_type", "NO"))
    if dist not in GPU_TYPES:
        raise ConfigError(f"{field}={str(path)!r}: distributed_type={dist!r}, expected {GPU_TYPES}")
    ds = raw.get("deepspeed_config") or {}
    return Launch(
        path=str(path),
        distributed_type=dist,
        num_processes=int(raw.get("num_processes", 1)),
        device="cpu" if raw.get("use_cpu") else "cuda",
        mixed_precision=str(raw.get("mixed_precision", "no")),
        zero_stage=int(ds["zero_stage"]) if dist == "DEEPSPEED" and "zero_stage" in ds else None,
    )


def processes_launched() -> int:
    """Processes of this run (``WORLD_SIZE`` set by ``accelerate launch``; 1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def set_cpu_threads(cfg: LaunchConfig, launch: Launch) -> int:
    """Apply ``launch.rl_cpu_threads`` on a CPU launch; -> the torch thread count in use."""
    if launch.device == "cpu" and cfg.rl_cpu_threads > 0:
        torch.set_num_threads(cfg.rl_cpu_threads)
    return torch.get_num_threads()


def check_launch(
    cfg: LaunchConfig,
    bf16: bool,
    section: str,
    cuda_devices: int | None = None,
    launched: int | None = None,
) -> Launch:
    """Refuse a launch the machine or the section cannot honour (module docstring); -> it.

    ``bf16`` / ``section``: the training section's precision flag and name (``sft``, ``rl``).
    ``cuda_devices`` / ``launched`` default to what this machine and process see.
    """
    launch = read_launch(cfg.accelerate_config)
    cuda = torch.cuda.device_count() if cuda_devices is None else cuda_devices
    procs = processes_launched() if launched is None else launched
    where = f"launch.accelerate_config={cfg.accelerate_config!r} ({launch.describe})"
    if launch.device == "cuda" and cuda < procs:
        raise ConfigError(
            f"{where}: needs {procs} CUDA device(s), this machine has {cuda}; on a CPU machine "
            "use configs/accelerate/cpu.yaml (or cpu_zero3.yaml, the paper_sim rehearsal)"
        )
    if launch.device == "cpu" and bf16:
        raise ConfigError(
            f"{section}.bf16=true with {where}: bf16 mixed precision is for GPU launches; "
            f"set {section}.bf16: false"
        )
    if launch.device == "cuda" and bf16 != (launch.mixed_precision == "bf16"):
        raise ConfigError(
            f"{section}.bf16={str(bf16).lower()} but {where} sets mixed_precision: "
            f"{launch.mixed_precision}; make them agree"
        )
    return launch
