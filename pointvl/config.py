"""Stage configuration: one dataclass per section of ``params.yaml``, checked by type and range.

``params.yaml`` holds the default (``tiny``) values of every section, a ``shared`` table of
values several sections use, and an ``overrides`` mapping ``profile -> {section: {key:
value}}``. The top-level ``profile`` key selects the override block merged in. Profiles
change values only, never code paths.

    profile: tiny                                     # smoke | tiny | paper
    shared:                                           # one row per coupled value,
      image_size: {smoke: 56, tiny: 112, paper: 448}  #   one column per profile
    schema: {quant_bins: 100}
    model: {image_size: "${shared.image_size}"}       # a reference, resolved by load_params
    overrides:
      paper: {schema: {quant_bins: 1000}}

``load_params`` reads the file (bad YAML or structure: ``ConfigError`` with the line),
merges the profile and replaces every ``${shared.<name>}`` by that value for the profile.
A value coupled across sections (image size, points, M, G, λ, ...) is therefore written once;
DVC stages track ``shared.<name>.${profile}`` for the names their sections refer to.

The typed layer: ``from_dict(cls, mapping, section)`` builds the section's dataclass and
checks every field against its annotation before anything else runs: the section must be a
mapping, keys must be known (a renamed key says its new name), ``int`` takes integers only
(not ``256.5`` or ``true``), ``float`` takes finite numbers (not NaN / inf; a numeric string
such as YAML 1.1's ``1e-5`` is read as the number), ``bool`` takes true / false only (not
``"no"``), ``str`` / ``list[...]`` / ``dict`` / ``X | None`` as written. ``Annotated[int,
Range(ge=1)]`` and ``Annotated[str, OneOf(...)]`` add ranges and choices, checked the same
way; the dataclass's ``validate()`` then checks rules across fields. Every failure is one
``ConfigError`` line naming the field, the value and what is accepted.
``with_overrides(cfg, section, values)`` applies CLI flags through the same checks.

A study file layers on another params file (``extends``, relative to the study file), e.g.
``studies/view/params.yaml``: the same stages, other values and output paths::

    extends: ../../params.yaml
    build_dataset: {task: view}           # applied after the base's profile overrides
    overrides:
      smoke: {rl: {max_steps: 2}}         # the study's own profile overrides, applied last

Merge order: base defaults, base overrides[profile], study defaults, study overrides[profile];
``shared`` rows of a study replace the base's rows of the same name; references are resolved
once, after the last layer.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union

import yaml

PROFILES = ("smoke", "tiny", "paper", "paper_sim")
DEFAULT_PROFILE = "tiny"
"""The profile whose results are committed under ``results/`` itself (``results_root``)."""
RESULTS = "results"
ACTIVE_KEYS = ("results_root", "accelerate_config")
"""The keys of params.yaml's top-level ``active`` block (what dvc.yaml reads; ``load_params``)."""
DEFAULT_PARAMS = Path(__file__).resolve().parent.parent / "params.yaml"
RENAMED = {"model.group_size": "points_per_group"}
"""Keys renamed in params.yaml: old ``section.key`` -> new key (named in the error)."""

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad value in params.yaml or on the command line (names the field and what is accepted)."""


class DataError(RuntimeError):
    """Input data that cannot be used as asked (a dataset, a mesh root, a checkpoint file):
    the message names the file and what was expected."""


# ----------------------------------------------------------------------------- params.yaml
_REF = re.compile(r"\$\{shared\.([A-Za-z_][A-Za-z0-9_]*)\}")


def _deep_merge(base: dict, over: Mapping) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: str | os.PathLike) -> Any:
    """``yaml.safe_load`` of a file; ``ConfigError`` naming the file and line if it is bad."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}:{where}: not valid YAML ({problem})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason})") from None


def _shared_values(raw: Any, profile: str, path: Path) -> dict:
    """The ``shared`` table's column for ``profile``: {name: value}."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: shared={raw!r}: expected a mapping name -> {{profile: value}}")
    out = {}
    for name, row in raw.items():
        if not isinstance(row, Mapping) or set(row) != set(PROFILES):
            raise ConfigError(
                f"{path}: shared.{name}={row!r}: expected one value per profile {{"
                + ", ".join(f"{p}: ..." for p in PROFILES)
                + "}"
            )
        out[name] = row[profile]
    return out


def _resolve(value: Any, shared: dict, where: str) -> Any:
    """Replace every ``${shared.<name>}`` in ``value`` (whole strings only: the type is kept)."""
    if isinstance(value, Mapping):
        return {k: _resolve(v, shared, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, shared, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:
        m = _REF.fullmatch(value.strip())
        if m is None:
            raise ConfigError(
                f"{where}={value!r}: a reference must be a whole value '${{shared.<name>}}'"
            )
        if m.group(1) not in shared:
            raise ConfigError(
                f"{where}={value!r}: no shared.{m.group(1)}; defined: {sorted(shared)}"
            )
        return shared[m.group(1)]
    return value


def _layers(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict]]:
    """(file, raw mapping) of ``path`` and of every file it ``extends``, base first."""
    if path.resolve() in seen:
        raise ConfigError(f"params file {path}: 'extends' loops back to itself")
    raw = read_yaml(path)
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    raw = dict(raw)
    _check_structure(path, raw)
    base = raw.pop("extends", None)
    if base is None:
        return [(path, raw)]
    if not isinstance(base, str):
        raise ConfigError(f"params file {path}: extends={base!r}: expected a relative path")
    return _layers(path.parent / base, (*seen, path.resolve())) + [(path, raw)]


def _check_structure(path: Path, raw: dict) -> None:
    """Every section and every profile's override block is a mapping (not a scalar)."""
    for section, values in raw.items():
        if section in ("profile", "extends") or values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"{path}: params section {section!r}={values!r}: expected a mapping key -> value"
            )
    for name, blk in (raw.get("overrides") or {}).items():
        if name not in PROFILES:
            raise ConfigError(f"{path}: overrides.{name}: unknown profile; expected {PROFILES}")
        if blk is not None and not isinstance(blk, Mapping):
            raise ConfigError(
                f"{path}: overrides.{name}={blk!r}: expected a mapping section -> {{key: value}}"
            )
        for section, values in (blk or {}).items():
            if values is not None and not isinstance(values, Mapping):
                raise ConfigError(
                    f"{path}: overrides.{name}.{section}={values!r}: expected a mapping key -> value"
                )


def results_root(profile: str) -> str:
    """Where a profile's results live: ``results`` for the default profile (``tiny``, whose
    results are committed), ``results/<profile>`` for every other one. The one rule;
    ``load_params`` applies it to every params value under ``results/``."""
    return RESULTS if profile == DEFAULT_PROFILE else f"{RESULTS}/{profile}"


def _reroot(value: Any, root: str) -> Any:
    """``value`` with every string ``results`` / ``results/...`` moved under ``root``."""
    if root == RESULTS:
        return value
    if isinstance(value, Mapping):
        return {k: _reroot(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_reroot(v, root) for v in value]
    if isinstance(value, str) and (value == RESULTS or value.startswith(RESULTS + "/")):
        return root + value[len(RESULTS) :]
    return value


def load_params(
    path: str | os.PathLike | None = None,
    profile: str | None = None,
    check_active: bool | None = None,
) -> dict:
    """Read ``params.yaml`` (and the files it ``extends``), merge the selected profile's
    overrides into the defaults and resolve the ``${shared.<name>}`` references (``shared``
    itself becomes {name: value}; absent when the files have no shared table).

    ``profile`` (argument) > ``$POINTVL_PROFILE`` > the file's ``profile`` key (the last
    file of an ``extends`` chain that has one).

    Outputs per profile: every value ``results/...`` becomes ``<results_root(profile)>/...``
    (``tiny``: unchanged; ``paper``: ``results/paper/...``), so no profile writes or reads
    another's results. ``active`` (what dvc.yaml reads: it cannot look up a row by
    ``${profile}``) must hold the file profile's ``results_root`` and
    ``launch.accelerate_config``, else DVC would expect the outputs elsewhere than the stage
    writes them: checked when ``check_active`` (default: under DVC, ``$DVC_STAGE`` set; and
    ``python -m pointvl.profile --check``), a ``ConfigError`` saying what to set
    (``python -m pointvl.profile <name>`` writes all three).
    """
    path = Path(path) if path is not None else DEFAULT_PARAMS
    layers = _layers(path)
    in_files = [raw["profile"] for _, raw in layers if "profile" in raw]
    file_profile = (in_files or [DEFAULT_PROFILE])[-1]
    profile = profile or os.environ.get("POINTVL_PROFILE") or file_profile
    if profile not in PROFILES:
        raise ConfigError(f"profile={profile!r} in {path}: expected one of {PROFILES}")
    merged: dict = {}
    shared_rows: dict = {}
    active: dict = {}
    for _, raw in layers:
        raw = dict(raw)
        overrides = raw.pop("overrides", None) or {}
        shared_rows.update(raw.pop("shared", None) or {})
        active.update(raw.pop("active", None) or {})
        merged = _deep_merge(_deep_merge(merged, raw), overrides.get(profile) or {})
    shared = _shared_values(shared_rows, profile, path)
    merged = {k: _reroot(_resolve(v, shared, k), results_root(profile)) for k, v in merged.items()}
    merged["profile"] = profile
    if shared:
        merged["shared"] = shared
    if check_active is None:
        check_active = bool(os.environ.get("DVC_STAGE"))
    if active and check_active and profile == file_profile:
        _check_active(path, profile, active, merged)
    return merged


def _check_active(path: Path, profile: str, active: Mapping, merged: dict) -> None:
    """``active`` (read by dvc.yaml) equals what ``profile`` uses; one line naming the key."""
    unknown = sorted(set(active) - set(ACTIVE_KEYS))
    if unknown:
        raise ConfigError(f"{path}: active: unknown key(s) {unknown}; accepted {ACTIVE_KEYS}")
    expected = {
        "results_root": results_root(profile),
        "accelerate_config": (merged.get("launch") or {}).get("accelerate_config"),
    }
    for key, want in expected.items():
        if want is not None and active.get(key) != want:
            raise ConfigError(
                f"{path}: active.{key}={active.get(key)!r}, but profile {profile!r} uses {want!r}"
                f"; set active.{key}: {want} (dvc.yaml reads it), or run "
                f"`python -m pointvl.profile {profile} --params {path}`"
            )


# ----------------------------------------------------------------------------- the typed layer
@dataclasses.dataclass(frozen=True)
class Range:
    """A numeric range for ``Annotated[int | float, Range(...)]``; ``also`` admits special values
    outside it (e.g. ``also=(-1,)`` for "-1 = from epochs")."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    also: tuple = ()

    def describe(self) -> str:
        if self.ge is not None and self.le is not None:
            text = f"in [{self.ge:g}, {self.le:g}]"
        elif self.gt is not None and self.lt is not None:
            text = f"in ({self.gt:g}, {self.lt:g})"
        else:
            parts = [f"{op} {v:g}" for op, v in ((">=", self.ge), (">", self.gt), ("<=", self.le),
                                                 ("<", self.lt)) if v is not None]  # fmt: skip
            text = " and ".join(parts)
        return text + "".join(f" or {v!r}" for v in self.also)

    def check(self, where: str, value: Any, kind: str) -> None:
        if value in self.also:
            return
        ok = (self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
        ok = ok and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt)
        if not ok:
            raise ConfigError(f"{where}={value!r}: expected {kind} {self.describe()}")


class OneOf:
    """Choices for ``Annotated[str, OneOf("a", "b")]``."""

    def __init__(self, *choices: Any):
        self.choices = tuple(choices)

    def __repr__(self) -> str:
        return f"OneOf{self.choices!r}"

    def check(self, where: str, value: Any, kind: str) -> None:
        if value not in self.choices:
            raise ConfigError(f"{where}={value!r}: expected one of {list(self.choices)}")


UNIT_RANGE = Range(ge=0.0, le=1.0)
"""[0, 1]: the one definition behind ``UnitInterval`` and ``check_unit_interval``."""
UnitInterval = Annotated[float, UNIT_RANGE]
"""A number in [0, 1], e.g. λ of Eq. (14)."""
PositiveInt = Annotated[int, Range(ge=1)]
NonNegativeInt = Annotated[int, Range(ge=0)]
PositiveFloat = Annotated[float, Range(gt=0.0)]
TokenBudget = Annotated[int, Range(ge=1)] | Annotated[str, OneOf("auto")]
"""A generation length: an integer >= 1, or ``auto`` (derived: ``pointvl.budget``)."""


def check_unit_interval(where: str, value: Any, error: type[ValueError] = ConfigError) -> None:
    """Raise ``error`` naming ``where`` and ``value`` unless ``value`` lies in [0, 1]
    (``UNIT_RANGE``; NaN does not): the ``UnitInterval`` check for values that do not come
    through ``from_dict`` (``validate`` / ``__post_init__`` of a dataclass, an argument)."""
    if not UNIT_RANGE.ge <= value <= UNIT_RANGE.le:
        raise error(f"{where}={value!r}: expected a number {UNIT_RANGE.describe()}")


_FLOAT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _describe(hint: Any) -> str:
    """What a type accepts, in words."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return _describe(args[0])
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin in (list, tuple):
        inner = f" of {_describe(args[0])}s" if args and args[0] is not Any else ""
        return f"a list{inner}"
    if origin is dict or hint is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string",
            type(None): "null", list: "a list", Any: "any value"}.get(hint, getattr(hint, "__name__", str(hint)))  # fmt: skip


def _describe_with_rules(hint: Any) -> str:
    """``_describe`` plus an ``Annotated`` type's range or choices ("an integer >= 1")."""
    if typing.get_origin(hint) is not Annotated:
        return _describe(hint)
    base, *rules = typing.get_args(hint)
    for rule in rules:
        if isinstance(rule, OneOf):
            return " or ".join(repr(c) for c in rule.choices)
        if isinstance(rule, Range):
            return f"{_describe(base)} {rule.describe()}"
    return _describe(base)


def check_value(where: str, value: Any, hint: Any) -> Any:
    """``value`` checked against type ``hint`` (see the module docstring); -> the value to use
    (an int for a float field becomes a float). ``ConfigError`` naming ``where`` otherwise."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        value = check_value(where, value, args[0])
        for rule in args[1:]:
            if isinstance(rule, Range | OneOf):
                rule.check(where, value, _describe(args[0]))
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return check_value(where, value, arg)
            except ConfigError:
                continue
        options = " or ".join(_describe_with_rules(a) for a in args)
        raise ConfigError(f"{where}={value!r}: expected {options}")
    if hint is Any or hint is object:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-5 as a string
        if isinstance(value, int | float) and not isinstance(value, bool):
            if math.isfinite(value):
                return float(value)
            raise ConfigError(f"{where}={value!r}: expected a finite number (not NaN or inf)")
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is list or origin in (list, tuple):
        if isinstance(value, list | tuple):
            inner = args[0] if args and origin is list else Any
            return [check_value(f"{where}[{i}]", v, inner) for i, v in enumerate(value)]
    elif hint is dict or origin is dict:
        if isinstance(value, Mapping):
            kt, vt = args if args else (Any, Any)
            return {
                check_value(f"{where} key", k, kt): check_value(f"{where}.{k}", v, vt)
                for k, v in value.items()
            }
    elif dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    else:
        return value
    raise ConfigError(f"{where}={value!r}: expected {_describe(hint)}")


def field_types(cls: type) -> dict[str, Any]:
    """{field name: resolved annotation (with ``Annotated`` extras)} of a config dataclass."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def from_dict(cls: type[T], data: Any, section: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, every field checked by type (``check_value``);
    then ``cfg.validate()`` if it has one. ``ConfigError`` (one line) on the first bad value."""
    section = section or cls.__name__
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"params section {section!r}={data!r}: expected a mapping of keys "
            f"({', '.join(f.name for f in dataclasses.fields(cls))})"
        )
    types_ = field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        hints = [f"{section}.{k} is now {RENAMED[f'{section}.{k}']!r}" for k in unknown
                 if f"{section}.{k}" in RENAMED]  # fmt: skip
        raise ConfigError(
            f"params section {section!r}: unknown key(s) {unknown}"
            + (f" ({'; '.join(hints)})" if hints else "")
            + f"; accepted keys are {sorted(types_)}"
        )
    values = {k: check_value(f"{section}.{k}", v, types_[k]) for k, v in data.items()}
    cfg = cls(**values)
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def with_overrides(cfg: T, section: str, values: Mapping[str, Any]) -> T:
    """``cfg`` with ``values`` (e.g. CLI flags; None = not given) replaced, through the same
    checks as params.yaml, then ``validate()``; CLI strings are parsed for non-str fields."""
    types_ = field_types(type(cfg))
    given = {k: v for k, v in values.items() if v is not None}
    for k in given:
        if k not in types_:
            raise ConfigError(f"{section}: no field {k!r}; fields are {sorted(types_)}")
    checked = {k: check_value(f"{section}.{k}", _from_cli(v, types_[k]), types_[k])
               for k, v in given.items()}  # fmt: skip
    new = dataclasses.replace(cfg, **checked)
    if hasattr(new, "validate"):
        new.validate()
    return new


def _from_cli(value: Any, hint: Any) -> Any:
    """A command-line string read as YAML for non-string fields ("7", "-0.1", "true")."""
    if not isinstance(value, str) or _describe(hint) == "a string":
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def load_section(
    path: str | os.PathLike | None, section: str, cls: type[T], profile: str | None = None
) -> T:
    """Load one section of params.yaml (profile merged, references resolved) as ``cls``."""
    return from_dict(cls, load_params(path, profile).get(section, {}), section)


@dataclasses.dataclass
class SchemaConfig:
    """Section ``schema``: the output format the model is trained to write."""

    quant_bins: Annotated[int, Range(ge=2)] = 100
    """Q: 3D coordinates (the normalized unit cube [-0.5, 0.5]^3) are written as bins in [0, Q)."""
    num_keypoints: PositiveInt = 16
    """M: keypoints per object in kpts2d / kpts3d (the paper uses 16, by FPS)."""


@dataclasses.dataclass
class CreditDemoConfig:
    """Section ``credit_demo``: the per-token advantage figure on one group of completions."""

    seed: int = 0
    """Seeds the ground truth, the noisy completions and the tokenizer corpus."""
    lam: UnitInterval = 0.15
    """Eq. (14) RPC mixing weight λ for the GRCA+RPC panel, in [0, 1]."""
    background: Annotated[str, OneOf("seq", "zero")] = "seq"
    """Eq. (10b) background advantage: "seq" (standardized sequence reward) or "zero"."""
    vocab_size: Annotated[int, Range(ge=300)] = 400
    """Size of the byte-level BPE trained for the demo (small, so numbers split irregularly;
    >= 300: 256 byte symbols + special tokens + merges)."""
    tokenizer_corpus: PositiveInt = 200
    """Number of random target JSONs the demo tokenizer is trained on."""
    out_dir: str = "results/credit_demo"
    """Where the HTML, PNG and completions go."""
    metrics: str = "results/metrics/credit_demo.json"
    """The stage's metrics file (read by ``dvc metrics show``)."""
