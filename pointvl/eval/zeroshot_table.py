"""Table 1's zero-shot VLM rows on our test split (the ``zeroshot`` stage; Sec. 4.4.1).

For each entry of ``zeroshot.models`` (paper row name -> local folder of a Hugging Face VLM):
the rendered test image + a grounding instruction -> greedy reply -> 2D box and keypoints
(``pointvl.eval.zeroshot``) -> IoU2D and KPA-2D with 95% bootstrap CIs. Nothing is faked:
a model whose folder is absent, or that asks for CUDA on a machine without it, is recorded as
``{"status": "not run: <reason>"}``; one that fails to load or generate as
``{"status": "failed: <error>"}``. Output (``zeroshot.metrics``)::

    {"<row name>": {"status": "ok",
                    "iou2d": {"mean", "lo", "hi", "n"}, "kpa2d": {...}, "parse_fail": {...},
                    "parse_fail/bbox2d": {...}, "parse_fail/kpts2d": {...},
                    "kpts_count_ok": {...},
                    "_meta": {"path", "n", "seconds", "device", "dtype", "coords", ...}},
     "<row name>": {"status": "not run: ..."}}

Predictions go to ``<predictions_dir>/zeroshot_<slug>.jsonl``, one line per sample:
``{"uid", "question", "completion", "image_size", "input_size"}`` (sizes as [W, H]: with
them the reply can be re-scored without the model). ``run(cfg, profile, only=NAME)`` runs one
entry and keeps the others already in the metrics file.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Annotated, Any

from pointvl.config import ConfigError, NonNegativeInt, OneOf, PositiveInt, Range
from pointvl.io import atomic_write_json, atomic_write_text

DTYPES = ("auto", "float32", "float16", "bfloat16")
COORDS_OPTIONS = ("auto", "pixels", "norm1000", "norm1")
ENTRY_KEYS = ("path", "coords", "trust_remote_code", "dtype", "device")
ENTRY_KEYS += ("batch_size", "max_new_tokens")


@dataclasses.dataclass
class ZeroShotConfig:
    """Section ``zeroshot`` of params.yaml ({profile} is replaced by the active profile)."""

    models: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Paper row name -> a local model folder (str), null (not available: "not run"), or a
    dict {path, coords, trust_remote_code, dtype, device, batch_size, max_new_tokens} whose
    keys override the section-wide values below for that model."""
    data_dir: str = "data/{profile}"
    """The built benchmark; the ``test`` split is evaluated."""
    limit: NonNegativeInt = 0
    """Evaluate only the first N test samples (0: all)."""
    batch_size: PositiveInt = 8
    """Generation batch size (left padding)."""
    max_new_tokens: PositiveInt = 512
    """Generation budget per reply."""
    dtype: Annotated[str, OneOf(*DTYPES)] = "bfloat16"
    """Model weights' dtype: auto | float32 | float16 | bfloat16."""
    device: str = "cuda"
    """cuda, cuda:N or cpu. cuda on a machine without it: the model is "not run"."""
    trust_remote_code: bool = False
    """Allow the folder's own modelling code (InternVL / DeepSeek remote-code checkpoints)."""
    coords: Annotated[str, OneOf(*COORDS_OPTIONS)] = "auto"
    """Coordinate convention of the replies: pixels (of the resized input, Qwen2.5-VL),
    norm1000, norm1, or auto (from config.json model_type, ``zeroshot.AUTO_COORDS``)."""
    strict_keypoints: bool = False
    """True: a reply with another number of keypoints than the GT's M fails kpts2d."""
    n_boot: Annotated[int, Range(ge=100)] = 1000
    """Bootstrap resamples for the 95% CIs."""
    seed: int = 0
    """Seeds the bootstrap (generation is greedy)."""
    predictions_dir: str = "results/predictions"
    """Where ``zeroshot_<slug>.jsonl`` goes."""
    metrics: str = "results/metrics/eval/zeroshot.json"
    """Output: {row name: {status, metrics with CIs, _meta}} (see the module docstring)."""

    def validate(self) -> None:
        _check_options("zeroshot", vars(self))
        for name, entry in self.models.items():
            model_spec(self, name, entry)  # raises ConfigError on a bad entry


def _check_options(where: str, values: dict) -> None:
    """dtype / device / coords / sizes of the section or of one model entry."""
    if "dtype" in values and values["dtype"] not in DTYPES:
        raise ConfigError(f"{where}.dtype={values['dtype']!r}: expected one of {DTYPES}")
    if "coords" in values and values["coords"] not in COORDS_OPTIONS:
        raise ConfigError(f"{where}.coords={values['coords']!r}: expected one of {COORDS_OPTIONS}")
    device = values.get("device", "cpu")
    if not (isinstance(device, str) and re.fullmatch(r"cpu|cuda(:\d+)?", device)):
        raise ConfigError(f"{where}.device={device!r}: expected 'cpu', 'cuda' or 'cuda:N'")
    for key in ("batch_size", "max_new_tokens"):
        if key in values and not (isinstance(values[key], int) and values[key] >= 1):
            raise ConfigError(f"{where}.{key}={values[key]!r}: expected an integer >= 1")
    if "trust_remote_code" in values and not isinstance(values["trust_remote_code"], bool):
        raise ConfigError(
            f"{where}.trust_remote_code={values['trust_remote_code']!r}: expected true or false"
        )


@dataclasses.dataclass
class ModelSpec:
    """One entry of ``zeroshot.models`` with the section-wide defaults filled in."""

    name: str
    path: str | None
    coords: str
    trust_remote_code: bool
    dtype: str
    device: str
    batch_size: int
    max_new_tokens: int


def model_spec(cfg: ZeroShotConfig, name: str, entry: Any) -> ModelSpec:
    """A models entry (null, a path string or a dict) -> ``ModelSpec``; ConfigError if bad."""
    where = f"zeroshot.models[{name!r}]"
    if entry is None or isinstance(entry, str):
        entry = {"path": entry}
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}={entry!r}: expected null, a path string or a mapping")
    unknown = sorted(set(entry) - set(ENTRY_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; accepted keys are {ENTRY_KEYS}")
    path = entry.get("path")
    if path is not None and not isinstance(path, str):
        raise ConfigError(f"{where}.path={path!r}: expected a folder path or null")
    _check_options(where, entry)
    merged = {k: entry.get(k, getattr(cfg, k)) for k in ENTRY_KEYS if k != "path"}
    return ModelSpec(name=str(name), path=path, **merged)


def slug(name: str) -> str:
    """'Qwen2.5-VL-7B' -> 'qwen2_5_vl_7b' (file names of the predictions)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "model"


def not_run_reason(spec: ModelSpec, profile: str) -> str | None:
    """Why this model cannot run here (None: it can). Checked before anything is loaded."""
    if spec.path is None:
        return f"not run: no local path given (zeroshot.models[{spec.name!r}] is null)"
    path = Path(spec.path.format(profile=profile))
    if not path.is_dir():
        return f"not run: path {str(path)!r} is not an existing folder"
    if spec.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return (
                f"not run: device {spec.device!r} requested but torch.cuda.is_available() is False"
            )
    return None


# ----------------------------------------------------------------------------- one model
def _load_test(cfg: ZeroShotConfig, profile: str) -> tuple[list[dict], list]:
    """(targets, PIL images) of the first ``limit`` test samples."""
    from PIL import Image

    from pointvl.data.dataset import PointVLDataset
    from pointvl.eval.targets import load_targets

    data_dir = cfg.data_dir.format(profile=profile)
    targets, _, _ = load_targets(data_dir, "test")
    n = len(targets) if cfg.limit <= 0 else min(cfg.limit, len(targets))
    ds = PointVLDataset(data_dir, "test", qa_mode="rotate")
    images = [Image.fromarray(ds[i]["image"].numpy()).convert("RGB") for i in range(n)]
    return targets[:n], images


def run_model(
    cfg: ZeroShotConfig, spec: ModelSpec, profile: str, targets: list[dict], images: list
) -> dict:
    """Load, generate, write predictions, score -> the model's entry of the metrics file."""
    from pointvl.eval.zeroshot import grounding_prompt, per_sample_scores, resolve_coords, summarize

    path = spec.path.format(profile=profile)
    t0 = time.perf_counter()
    try:
        coords = resolve_coords(spec.coords, path)
    except ValueError as err:
        return {"status": f"not run: {err}"}
    prompts = [
        grounding_prompt(t["category"], len(t["kpts2d"]), coords) for t in targets
    ]  # one per sample
    try:
        texts, input_sizes, info = _generate(spec, path, images, prompts)
    except Exception as err:  # noqa: BLE001 - record the failure, go on with the next model
        return {"status": f"failed: {type(err).__name__}: {str(err)[:500]}"}
    seconds = time.perf_counter() - t0
    image_sizes = [im.size for im in images]  # (W, H)
    _write_predictions(cfg, spec, targets, prompts, texts, image_sizes, input_sizes)
    per = per_sample_scores(
        texts, targets, coords, image_sizes, input_sizes, strict_keypoints=cfg.strict_keypoints
    )
    result: dict[str, Any] = {"status": "ok", **summarize(per, cfg.n_boot, cfg.seed)}
    result["_meta"] = {
        "path": path,
        "n": len(texts),
        "seconds": seconds,
        "device": spec.device,
        "dtype": spec.dtype,
        "coords": coords,
        "strict_keypoints": cfg.strict_keypoints,
        "max_new_tokens": spec.max_new_tokens,
        "profile": profile,
        **info,
    }
    return result


def _generate(spec: ModelSpec, path: str, images: list, prompts: list[str]):
    """Load one model, reply to every prompt, free the model -> (texts, input sizes, info)."""
    import torch

    from pointvl.eval.zeroshot import generate_replies, load_vlm

    model, processor, info = load_vlm(path, spec.dtype, spec.device, spec.trust_remote_code)
    try:
        texts, input_sizes = generate_replies(
            model, processor, images, prompts, spec.batch_size, spec.max_new_tokens
        )
    finally:
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return texts, input_sizes, info


def _write_predictions(cfg, spec, targets, prompts, texts, image_sizes, input_sizes) -> Path:
    out = Path(cfg.predictions_dir) / f"zeroshot_{slug(spec.name)}.jsonl"
    rows = [
        {
            "uid": t["uid"],
            "question": q,
            "completion": c,
            "image_size": list(ws),
            "input_size": list(ins) if ins is not None else None,
        }
        for t, q, c, ws, ins in zip(targets, prompts, texts, image_sizes, input_sizes)
    ]
    return atomic_write_text(out, "".join(json.dumps(r) + "\n" for r in rows))


# ----------------------------------------------------------------------------- the stage
def run(cfg: ZeroShotConfig, profile: str, only: str | None = None) -> dict:
    """Every model (or ``only`` one) -> the metrics file, written atomically."""
    if only is not None and only not in cfg.models:
        raise ConfigError(
            f"zeroshot: --only {only!r} is not in zeroshot.models {sorted(cfg.models)}"
        )
    metrics_path = Path(cfg.metrics)
    out: dict[str, Any] = {}
    if only is not None and metrics_path.is_file():
        out = {k: v for k, v in json.loads(metrics_path.read_text()).items() if k in cfg.models}
    data = None
    for name, entry in cfg.models.items():
        if only is not None and name != only:
            continue
        spec = model_spec(cfg, name, entry)
        reason = not_run_reason(spec, profile)
        if reason is not None:
            out[name] = {"status": reason}
            continue
        data = data or _load_test(cfg, profile)
        out[name] = run_model(cfg, spec, profile, *data)
    atomic_write_json(metrics_path, out)
    return out


def summary_line(name: str, entry: dict) -> str:
    """One line per model for the console: status, or the main metrics with CIs."""
    if entry.get("status") != "ok":
        return f"{name}: {entry.get('status')}"
    cells = [f"{m} {entry[m]['mean']:.3f} [{entry[m]['lo']:.3f}, {entry[m]['hi']:.3f}]"
             for m in ("iou2d", "kpa2d", "parse_fail")]  # fmt: skip
    return f"{name}: " + ", ".join(cells) + f" (n={entry['_meta']['n']})"
