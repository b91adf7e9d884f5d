"""Stage configuration: one dataclass per stage <-> one section of ``params.yaml``.

``params.yaml`` holds the default (``tiny``) values of every section plus an ``overrides``
mapping ``profile -> {section: {key: value}}``. The top-level ``profile`` key selects which
override block is merged in. Profiles change values only, never code paths.

    profile: tiny              # smoke | tiny | paper
    schema: {quant_bins: 100}  # defaults
    overrides:
      paper: {schema: {quant_bins: 1000}}

``load_section(path, "schema", SchemaConfig)`` returns the merged section as a dataclass and
raises ``ConfigError`` naming the section, the key and the accepted keys on any unknown key.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

PROFILES = ("smoke", "tiny", "paper")
DEFAULT_PARAMS = Path(__file__).resolve().parent.parent / "params.yaml"

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad value in params.yaml or on the command line (names the field and what is accepted)."""


class DataError(RuntimeError):
    """Input data that cannot be used as asked (a dataset, a mesh root, a checkpoint file):
    the message names the file and what was expected."""


def _deep_merge(base: dict, over: Mapping) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_params(path: str | os.PathLike | None = None, profile: str | None = None) -> dict:
    """Read ``params.yaml`` and merge the selected profile's overrides into the defaults.

    ``profile`` (argument) > ``$POINTVL_PROFILE`` > the file's ``profile`` key.
    """
    path = Path(path) if path is not None else DEFAULT_PARAMS
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    profile = profile or os.environ.get("POINTVL_PROFILE") or raw.get("profile", "tiny")
    if profile not in PROFILES:
        raise ConfigError(f"profile={profile!r} in {path}: expected one of {PROFILES}")
    overrides = raw.pop("overrides", {}) or {}
    merged = _deep_merge(raw, overrides.get(profile, {}) or {})
    merged["profile"] = profile
    return merged


def from_dict(cls: type[T], data: Mapping[str, Any] | None, section: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys raise ``ConfigError``."""
    data = dict(data or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"params section {section or cls.__name__!r}: unknown key(s) {unknown}; "
            f"accepted keys are {sorted(names)}"
        )
    return cls(**data)


def load_section(
    path: str | os.PathLike | None, section: str, cls: type[T], profile: str | None = None
) -> T:
    """Load one section of params.yaml (profile merged) as dataclass ``cls``."""
    params = load_params(path, profile)
    cfg = from_dict(cls, params.get(section, {}), section)
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


@dataclasses.dataclass
class SchemaConfig:
    """Section ``schema``: the output format the model is trained to write."""

    quant_bins: int = 100
    """Q: 3D coordinates (the normalized unit cube [-0.5, 0.5]^3) are written as bins in [0, Q)."""
    num_keypoints: int = 16
    """M: keypoints per object in kpts2d / kpts3d (the paper uses 16, by FPS)."""

    def validate(self) -> None:
        if self.quant_bins < 2:
            raise ConfigError(f"schema.quant_bins={self.quant_bins}: expected an integer >= 2")
        if self.num_keypoints < 1:
            raise ConfigError(f"schema.num_keypoints={self.num_keypoints}: expected >= 1")


@dataclasses.dataclass
class CreditDemoConfig:
    """Section ``credit_demo``: the per-token advantage figure on one group of completions."""

    seed: int = 0
    """Seeds the ground truth, the noisy completions and the tokenizer corpus."""
    lam: float = 0.15
    """Eq. (14) RPC mixing weight λ for the GRCA+RPC panel, in [0, 1]."""
    background: str = "seq"
    """Eq. (10b) background advantage: "seq" (standardized sequence reward) or "zero"."""
    vocab_size: int = 400
    """Size of the byte-level BPE trained for the demo (small, so numbers split irregularly)."""
    tokenizer_corpus: int = 200
    """Number of random target JSONs the demo tokenizer is trained on."""
    out_dir: str = "results/credit_demo"
    """Where the HTML, PNG and completions go."""
    metrics: str = "results/metrics/credit_demo.json"
    """The stage's metrics file (read by ``dvc metrics show``)."""

    def validate(self) -> None:
        if not 0.0 <= self.lam <= 1.0:
            raise ConfigError(f"credit_demo.lam={self.lam}: expected a number in [0, 1]")
        if self.background not in ("seq", "zero"):
            raise ConfigError(
                f"credit_demo.background={self.background!r}: expected 'seq' or 'zero'"
            )
        if self.vocab_size < 300:
            raise ConfigError(
                f"credit_demo.vocab_size={self.vocab_size}: expected >= 300 "
                "(256 byte symbols + special tokens + merges)"
            )
