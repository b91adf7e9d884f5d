"""Zero-shot 2D grounding of off-the-shelf VLMs: the baseline rows of Table 1 (Sec. 4.4.1).

Any Hugging Face VLM stored in a *local* folder (nothing is downloaded) gets the rendered test
image and an instruction asking for the object's 2D box and 2D keypoints as JSON; its reply is
parsed tolerantly, mapped back to the pixels of the original image and scored with the
definitions of Eq. (8) / Sec. 4.3 (``pointvl.rewards``, ``pointvl.eval.metrics``)::

    image (H, W, 3) + grounding_prompt(category, M, coords)
        -> processor.apply_chat_template -> model.generate (greedy, left padding)
        -> parse_reply (model coordinates) -> reply_to_pixels -> score_sample
        IoU2D  = |B̂ ∩ B*| / |B̂ ∪ B*|                 (``geometry.iou_2d``)
        KPA-2D = (1/M') sum_m 1[p̂_m in B*]            (``geometry.keypoint_containment``)

Coordinate conventions (``coords``), all in the image frame of ``pointvl.geometry``::

    (0, 0) +------------ x (right) ---> W
           |
           y (down)          a coordinate is a position on the continuous image plane,
           |                 origin at the top-left corner of the top-left pixel
           v H

- ``pixels``: absolute pixels of the image *as the model saw it*, i.e. after its processor
  resized it. Qwen2.5-VL (and MiMo-VL, a Qwen2.5-VL) grounds this way; its processor resizes
  to multiples of 28 (``image_grid_thw`` × ``patch_size``), so x is scaled by W / W_in and
  y by H / H_in. Without ``image_grid_thw`` (or 4-D ``pixel_values``) the input size is taken
  to be the original size.
- ``norm1000``: integers in [0, 1000] relative to the width / height (x · W / 1000);
  Qwen2-VL, Qwen3-VL, InternVL3.5 and DeepSeek-VL2 ground this way (DeepSeek-VL2 writes
  0-999; the 0.1% difference is ignored).
- ``norm1``: fractions in [0, 1] (x · W).
- ``auto``: from ``config.json``'s ``model_type`` through ``AUTO_COORDS``.

Loading (``load_vlm``): ``AutoProcessor`` + ``AutoModelForImageTextToText`` (else
``AutoModelForVision2Seq`` where transformers still has it), ``local_files_only``. Where
``AutoProcessor`` fails on a missing optional backend (Qwen's video processor needs
torchvision), the processor is rebuilt from the folder's tokenizer and image processor, without
video. Checkpoints: InternVL3.5 needs its "-HF" (native transformers, model_type ``internvl``)
release; DeepSeek-VL2 has no transformers class (it needs the ``deepseek_vl2`` package), so it
is recorded as failed unless a converted checkpoint is given.

Departures / [reconstruction]: the paper gives neither its zero-shot prompt nor its parser.
Ours names the object's category (the test image shows one object), asks for the model's
native convention, and accepts any number M' >= 1 of keypoints unless ``strict_keypoints``
(KPA is a fraction of the *predicted* keypoints, so one keypoint at the box centre scores 1;
``kpts_count_ok`` reports how often the model gave the M asked for). A field that cannot be
recovered scores 0 and counts in ``parse_fail``; nothing here raises on a malformed reply.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import json_repair
import numpy as np

from pointvl.eval.bootstrap import DEFAULT_N_BOOT, bootstrap_ci
from pointvl.geometry import iou_2d, keypoint_containment
from pointvl.schema import Brackets, finite_number, parse_output

__all__ = [
    "AUTO_COORDS",
    "COORDS",
    "Reply2D",
    "generate_replies",
    "grounding_prompt",
    "load_vlm",
    "parse_reply",
    "per_sample_scores",
    "reply_to_pixels",
    "resolve_coords",
    "score_sample",
    "summarize",
    "to_image_pixels",
]

COORDS = ("pixels", "norm1000", "norm1")
AUTO_COORDS = {
    "qwen2_5_vl": "pixels",  # Qwen2.5-VL, MiMo-VL: absolute pixels of the resized input
    "qwen2_vl": "norm1000",
    "qwen3_vl": "norm1000",
    "qwen3_vl_moe": "norm1000",
    "internvl": "norm1000",  # InternVL3.5 "-HF" checkpoints (native transformers)
    "internvl_chat": "norm1000",  # InternVL3.5 remote-code checkpoints
    "deepseek_vl_v2": "norm1000",  # writes 0-999
}
_SCALE = {"norm1000": 1000.0, "norm1": 1.0}

# ----------------------------------------------------------------------------- prompt
_COORDS_TEXT = {
    "pixels": "All coordinates are integer pixel positions in the image "
    "(origin at the top-left corner, x to the right, y downwards).",
    "norm1000": "All coordinates are integers from 0 to 1000, relative to the image width (x) "
    "and height (y), origin at the top-left corner.",
    "norm1": "All coordinates are numbers from 0 to 1, relative to the image width (x) and "
    "height (y), origin at the top-left corner.",
}
PROMPT = (
    "Locate the {category} in the image. Reply with one JSON object and nothing else:\n"
    '{{"bbox2d": [x1, y1, x2, y2], "kpts2d": [[x, y], ...]}}\n'
    "bbox2d is the tight bounding box of the {category}: (x1, y1) its top-left corner, "
    "(x2, y2) its bottom-right corner. kpts2d lists {m} keypoints on the {category}, spread "
    "over its visible parts. {coords_text}"
)


def grounding_prompt(category: str, num_keypoints: int, coords: str) -> str:
    """The zero-shot instruction for one test image (Table 1) in convention ``coords``."""
    if coords not in COORDS:
        raise ValueError(f"coords={coords!r}: expected one of {COORDS}")
    name = str(category).replace("_", " ")
    return PROMPT.format(category=name, m=int(num_keypoints), coords_text=_COORDS_TEXT[coords])


# ----------------------------------------------------------------------------- parsing
@dataclass
class Reply2D:
    """The 2D fields recovered from one reply.

    bbox2d (4,) ``[x1, y1, x2, y2]`` and kpts2d (M', 2) float64, or None when the field failed;
    errors[f] is None (usable) or one of "no_json", "missing", "invalid", "wrong_count".
    """

    bbox2d: np.ndarray | None = None
    kpts2d: np.ndarray | None = None
    errors: dict[str, str | None] = field(
        default_factory=lambda: {"bbox2d": "no_json", "kpts2d": "no_json"}
    )

    @property
    def ok(self) -> bool:
        return all(e is None for e in self.errors.values())


_BOX_KEYS = {"bbox2d", "bbox", "box", "box2d", "boundingbox", "boundingbox2d", "bboxes"}
_KPT_KEYS = {"kpts2d", "kpts", "kpt", "kpt2d", "keypoints", "keypoints2d", "keypoint"}
_KPT_KEYS |= {"points", "points2d"}
_POINT_KEYS = ("point2d", "point", "xy", "coordinates")
_MAX_STARTS = 64
_MAX_SEGMENT = 200_000
_DECODE_PER_CHAR, _DECODE_FLOOR = 8, 65_536
"""At most 8 x len(reply) + 64 KiB characters go through the JSON decoders per reply."""
_REPAIR_CHARS = 2048
"""At most 2 KiB go through json_repair per reply: it is superlinear (2 KiB of "{" take
~0.25 s, 8 KiB ~1.2 s; results/bench/parsers.json), while a real reply is well under 2 KiB."""


def _key(k: Any) -> str:
    """'BBox_2D' -> 'bbox2d': keys compare lower-case, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", str(k).lower())


_is_num = finite_number  # a finite JSON number (huge integers and NaN are not)


def _as_box(v: Any) -> np.ndarray | None:
    """[x1, y1, x2, y2], [[x1, y1], [x2, y2]] or {x1, y1, x2, y2} -> (4,), else None."""
    if isinstance(v, dict):
        keys = {_key(k): x for k, x in v.items()}
        v = [keys.get(k) for k in ("x1", "y1", "x2", "y2")]
    if isinstance(v, list) and len(v) == 1 and isinstance(v[0], list):
        v = v[0]  # [[x1, y1, x2, y2]] (one box in a list)
    if isinstance(v, list) and len(v) == 2 and all(isinstance(p, list) for p in v):
        v = v[0] + v[1]
    if isinstance(v, list) and len(v) == 4 and all(_is_num(x) for x in v):
        return np.asarray(v, dtype=np.float64)  # (4,)
    return None


def _as_point(p: Any) -> list | None:
    if isinstance(p, dict):
        keys = {_key(k): x for k, x in p.items()}
        inner = next((keys[k] for k in _POINT_KEYS if k in keys), None)
        p = inner if inner is not None else [keys.get("x"), keys.get("y")]
    if isinstance(p, list) and len(p) == 2 and all(_is_num(x) for x in p):
        return p
    return None


def _as_points(v: Any) -> np.ndarray | None:
    """[[x, y], ...], [{"point_2d": [x, y]}, ...] or [{"x":, "y":}, ...] -> (M', 2), else None."""
    if not isinstance(v, list) or not v:
        return None
    pts = [_as_point(p) for p in v]
    if any(p is None for p in pts):
        return None
    return np.asarray(pts, dtype=np.float64)  # (M', 2)


def _find(value: Any, keys: set[str], convert) -> tuple[np.ndarray | None, bool]:
    """Depth-first: the first entry whose key is in ``keys`` -> (converted or None, found).

    A dict's own keys are checked before its values are entered (pre-order, linear time).
    """
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            for k, x in v.items():
                if _key(k) in keys:
                    return convert(x), True
            stack.extend(reversed(list(v.values())))
        elif isinstance(v, list):
            stack.extend(reversed(v))
    return None, False


def _find_point_list(value: Any) -> np.ndarray | None:
    """Qwen's native pointing reply: a list of {"point_2d": [x, y], "label": ...} objects."""
    if isinstance(value, list) and value and all(isinstance(p, dict) for p in value):
        if all(any(_key(k) in _POINT_KEYS for k in p) for p in value):
            return _as_points(value)
    return None


_FAIL = object()
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_FENCED_START = re.compile(r"```[a-zA-Z]*\s*([\[{])")
_OPEN = re.compile(r"[\[{]")


def _starts(text: str) -> list[int]:
    """Where JSON may begin: brackets inside ``` fences first, then every bracket, in order."""
    starts = [m.start(1) for _, m in zip(range(_MAX_STARTS), _FENCED_START.finditer(text))]
    seen = set(starts)
    for m in _OPEN.finditer(text):
        if len(starts) >= _MAX_STARTS:
            break
        if m.start() not in seen:
            starts.append(m.start())
    return starts


class _Budget:
    """Characters the decoders may still read in one reply (keeps ``parse_reply`` linear)."""

    def __init__(self, text: str):
        self.decode = _DECODE_PER_CHAR * len(text) + _DECODE_FLOOR
        self.repair = _REPAIR_CHARS


def _loads_lenient(segment: str, closed: bool, budget: _Budget) -> Any:
    """JSON, then JSON without trailing commas, then ``json_repair`` (single quotes, missing
    closing brackets of a truncated reply, comments, ...) within ``budget.repair``."""
    if closed:
        for attempt in (json.loads, lambda s: json.loads(_TRAILING_COMMA.sub(r"\1", s))):
            try:
                return attempt(segment)
            except (ValueError, RecursionError):
                continue
    if len(segment) > budget.repair:
        return _FAIL
    budget.repair -= len(segment)
    try:
        return json_repair.loads(segment, skip_json_loads=True)
    except Exception:  # noqa: BLE001 - any failure of the repair: not a value
        return _FAIL


def _json_values(text: str, br: Brackets) -> Iterator[tuple[Any, bool]]:
    """(value, closed) for every decodable JSON (or leniently repaired) value in the text, in
    ``_starts`` order; ``closed``: its brackets balance (else json_repair closed them)."""
    budget = _Budget(text)
    for start in _starts(text):
        end = br.close(start)
        segment = text[start:end] if end is not None else text[start:]
        if len(segment) > min(_MAX_SEGMENT, budget.decode):
            continue
        budget.decode -= len(segment)
        value = _loads_lenient(segment, end is not None, budget)
        if value is not _FAIL:
            yield value, end is not None


def _find_keypoints(value: Any) -> tuple[np.ndarray | None, bool]:
    k, found = _find(value, _KPT_KEYS, _as_points)
    k = k if k is not None else _find_point_list(value)
    return k, found or k is not None


def _guarded(find, value: Any) -> tuple[np.ndarray | None, bool]:
    """One field's search; an exception inside it fails that field only."""
    try:
        return find(value)
    except Exception:  # noqa: BLE001 - field locality: never cost the other field
        return None, True


def _parse(text: Any, num_keypoints: int | None) -> Reply2D:
    reply = Reply2D()
    if not isinstance(text, str):
        return reply
    # 1. Our own schema parser: it also keeps the fields completed before a truncation.
    br = Brackets(text)
    parsed = parse_output(text, num_keypoints=None, brackets=br)
    box = parsed.values["bbox2d"] if parsed.errors["bbox2d"] is None else None
    kpts = parsed.values["kpts2d"] if parsed.errors["kpts2d"] is None else None
    seen = {f: parsed.errors[f] not in ("missing", "no_json") for f in ("bbox2d", "kpts2d")}
    any_json = parsed.json_span is not None
    # 2. Any JSON value: key aliases, nesting, lists of objects, lenient decoding.
    for value, closed in _json_values(text, br) if box is None or kpts is None else ():
        any_json = any_json or closed  # a repaired fragment alone is not "JSON in the reply"
        if box is None:
            b, found = _guarded(lambda v: _find(v, _BOX_KEYS, _as_box), value)
            box, seen["bbox2d"] = b, seen["bbox2d"] or found
        if kpts is None:
            k, found = _guarded(_find_keypoints, value)
            kpts, seen["kpts2d"] = k, seen["kpts2d"] or found
        if box is not None and kpts is not None:
            break
    for name, v in (("bbox2d", box), ("kpts2d", kpts)):
        if v is not None:
            reply.errors[name] = None
        else:
            reply.errors[name] = "invalid" if seen[name] else "missing" if any_json else "no_json"
    reply.bbox2d = None if box is None else np.asarray(box, dtype=np.float64).reshape(4)
    reply.kpts2d = None if kpts is None else np.asarray(kpts, dtype=np.float64).reshape(-1, 2)
    if num_keypoints is not None and reply.kpts2d is not None:
        if reply.kpts2d.shape[0] != num_keypoints:
            reply.kpts2d, reply.errors["kpts2d"] = None, "wrong_count"
    return reply


def parse_reply(text: Any, num_keypoints: int | None = None) -> Reply2D:
    """Recover ``bbox2d`` (4,) and ``kpts2d`` (M', 2) from a free-form reply. Never raises.

    Tried in order, each field taken from the first reading that yields it:
    1. ``schema.parse_output`` (our own JSON object; tolerates prose, ``` fences and a
       truncated object, keeping the fields completed before the cut);
    2. every JSON value in the text (fenced first), decoded leniently (trailing commas, then
       ``json_repair`` for single quotes, a truncated reply's missing brackets, ...), searched depth-first for a key alias (``bbox_2d``, ``bbox``, ``box``,
       ``keypoints``, ``points``, ... compared lower-case without ``_``/``-``/spaces); boxes
       as ``[x1, y1, x2, y2]``, ``[[x1, y1], [x2, y2]]`` or ``{x1, y1, x2, y2}``; keypoints as
       ``[[x, y], ...]``, ``[{"point_2d": [x, y]}, ...]`` or ``[{"x":, "y":}, ...]``; also a
       bare list of ``{"point_2d": ...}`` objects (Qwen's pointing format).
    ``num_keypoints``: when given, another count is error ``wrong_count``. Values are in the
    model's coordinates; ``reply_to_pixels`` maps them to the original image.

    Linear time: bracket matching is shared by every candidate (``schema.Brackets``), and the
    decoders read at most 8 x len(text) + 64 KiB characters, json_repair at most 2 KiB
    (a 1 MB adversarial reply: ``benchmarks/bench_parsers.py``). A fault inside one field's
    value costs that field only.
    """
    try:
        return _parse(text, num_keypoints)
    except Exception:  # noqa: BLE001 - the contract is "never raises": report no JSON
        return Reply2D()


# ----------------------------------------------------------------------------- coordinates
def to_image_pixels(
    xy: Any,
    coords: str,
    image_size: tuple[float, float],
    input_size: tuple[float, float] | None = None,
) -> np.ndarray:
    """Model coordinates (..., 2) [x, y] -> pixels of the original image (..., 2).

    x_img = x · W / W_ref, y_img = y · H / H_ref with (W_ref, H_ref) = ``input_size`` (the
    resized image the model saw; the original size when None) for ``pixels``,
    (1000, 1000) for ``norm1000`` and (1, 1) for ``norm1``. ``image_size`` is (W, H).
    """
    if coords not in COORDS:
        raise ValueError(f"coords={coords!r}: expected one of {COORDS}")
    p = np.asarray(xy, dtype=np.float64)
    if p.ndim < 1 or p.shape[-1] != 2:
        raise ValueError(f"to_image_pixels: expected shape (..., 2) [x, y], got {p.shape}")
    w, h = (float(s) for s in image_size)
    if coords == "pixels":
        w_ref, h_ref = (float(s) for s in (input_size or image_size))
    else:
        w_ref = h_ref = _SCALE[coords]
    return p * np.array([w / w_ref, h / h_ref])  # (..., 2)


def reply_to_pixels(
    reply: Reply2D,
    coords: str,
    image_size: tuple[float, float],
    input_size: tuple[float, float] | None = None,
) -> Reply2D:
    """``to_image_pixels`` on both fields of a reply (errors unchanged)."""
    box = reply.bbox2d
    kpts = reply.kpts2d
    return Reply2D(
        bbox2d=None
        if box is None
        else to_image_pixels(box.reshape(2, 2), coords, image_size, input_size).reshape(4),
        kpts2d=None if kpts is None else to_image_pixels(kpts, coords, image_size, input_size),
        errors=dict(reply.errors),
    )


# ----------------------------------------------------------------------------- scoring
def score_sample(reply_px: Reply2D, gt_bbox2d: Any) -> dict[str, float]:
    """Eq. (8) on one reply in original-image pixels -> iou2d, kpa2d, parse-failure flags.

    A failed field scores 0 (Sec. 3.7), as in ``rewards.field_rewards``.
    """
    gt = np.asarray(gt_bbox2d, dtype=np.float64)
    if gt.shape != (4,):
        raise ValueError(f"gt_bbox2d: expected shape (4,) [x1, y1, x2, y2], got {gt.shape}")
    box, kpts = reply_px.bbox2d, reply_px.kpts2d
    # IoU2D = |B̂ ∩ B*| / |B̂ ∪ B*|
    iou = float(iou_2d(box, gt)) if box is not None else 0.0
    # KPA-2D = (1/M') sum_m 1[p̂_m in B*]
    kpa = float(keypoint_containment(kpts, gt)) if kpts is not None else 0.0
    return {
        "iou2d": iou,
        "kpa2d": kpa,
        "parse_fail": 0.0 if reply_px.ok else 1.0,
        "parse_fail/bbox2d": 0.0 if reply_px.errors["bbox2d"] is None else 1.0,
        "parse_fail/kpts2d": 0.0 if reply_px.errors["kpts2d"] is None else 1.0,
    }


def per_sample_scores(
    texts: Sequence[str],
    targets: Sequence[Mapping[str, Any]],
    coords: str,
    image_sizes: Sequence[tuple[float, float]],
    input_sizes: Sequence[tuple[float, float] | None] | None = None,
    strict_keypoints: bool = False,
) -> dict[str, np.ndarray]:
    """Every per-sample score -> {name: (N,) float64}; see ``score_sample``.

    Also ``kpts_count_ok``: 1 when the reply gave exactly the target's M keypoints (NaN when
    the keypoints failed). ``image_sizes``: (W, H) of each original image.
    """
    n = len(texts)
    if not (len(targets) == len(image_sizes) == n):
        raise ValueError(
            f"per_sample_scores: {n} texts, {len(targets)} targets, {len(image_sizes)} sizes"
        )
    input_sizes = list(input_sizes) if input_sizes is not None else [None] * n
    out: dict[str, np.ndarray] = {}
    for i, (text, tg) in enumerate(zip(texts, targets)):
        m = int(np.asarray(tg["kpts2d"]).shape[0])
        raw = parse_reply(text, m if strict_keypoints else None)
        reply = reply_to_pixels(raw, coords, image_sizes[i], input_sizes[i])
        row = score_sample(reply, tg["bbox2d"])
        row["kpts_count_ok"] = np.nan if raw.kpts2d is None else float(len(raw.kpts2d) == m)
        for k, v in row.items():
            out.setdefault(k, np.zeros(n))[i] = v
    return out


def summarize(
    per_sample: Mapping[str, np.ndarray], n_boot: int = DEFAULT_N_BOOT, seed: int = 0
) -> dict[str, dict[str, float]]:
    """{metric: {"mean", "lo", "hi", "n"}}: the mean with its 95% percentile-bootstrap CI."""
    result = {}
    for name, values in per_sample.items():
        ci = bootstrap_ci(values, n_boot=n_boot, seed=seed)
        result[name] = {"mean": ci.mean, "lo": ci.lo, "hi": ci.hi, "n": ci.n}
    return result


# ----------------------------------------------------------------------------- loading
def resolve_coords(coords: str, path: str | Path) -> str:
    """``auto`` -> ``AUTO_COORDS[config.json model_type]``; anything else is checked and kept."""
    if coords != "auto":
        if coords not in COORDS:
            raise ValueError(f"coords={coords!r}: expected 'auto' or one of {COORDS}")
        return coords
    cfg_file = Path(path) / "config.json"
    model_type = json.loads(cfg_file.read_text()).get("model_type") if cfg_file.is_file() else None
    if model_type not in AUTO_COORDS:
        raise ValueError(
            f"coords 'auto' cannot be resolved for model_type {model_type!r} ({cfg_file}); "
            f"set coords to one of {COORDS} (known: {sorted(AUTO_COORDS)})"
        )
    return AUTO_COORDS[model_type]


def _relaxed(processor_cls: type) -> type:
    """``processor_cls`` that accepts a missing (None) sub-processor (e.g. the video one)."""

    class Relaxed(processor_cls):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    Relaxed.__name__ = f"{processor_cls.__name__}NoVideo"
    return Relaxed


def _processor_class(path: str | Path):
    """The processor class named in the folder (processor_class), else by model_type."""
    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    for name in ("processor_config.json", "preprocessor_config.json"):
        f = Path(path) / name
        if f.is_file():
            cls_name = json.loads(f.read_text()).get("processor_class")
            if cls_name and hasattr(transformers, cls_name):
                return getattr(transformers, cls_name)
    model_type = json.loads((Path(path) / "config.json").read_text()).get("model_type")
    return getattr(transformers, PROCESSOR_MAPPING_NAMES[model_type])


def _processor_from_parts(path: str | Path, **kw):
    """Tokenizer + image processor, no video processor (which needs torchvision)."""
    from transformers import AutoImageProcessor, AutoTokenizer

    cls = _processor_class(path)
    parts = {}
    for attr in cls.get_attributes():
        if attr == "tokenizer":
            parts[attr] = AutoTokenizer.from_pretrained(path, **kw)
        elif attr == "image_processor":
            parts[attr] = AutoImageProcessor.from_pretrained(path, **kw)
        else:
            parts[attr] = None
    template = getattr(parts.get("tokenizer"), "chat_template", None)
    return _relaxed(cls)(**parts, chat_template=template)


def _load_processor(path: str | Path, **kw) -> tuple[Any, str]:
    """AutoProcessor; if an optional backend is missing (ImportError: torchvision for Qwen's
    video processor) the processor is rebuilt from its tokenizer and image processor."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(path, **kw), "AutoProcessor"
    except ImportError as err:
        reason = re.split(r"(?<=\.)\s", str(err).strip())[0][:200]  # first sentence
        return _processor_from_parts(path, **kw), f"tokenizer + image processor ({reason})"


def _load_model(path: str | Path, **kw) -> Any:
    """AutoModelForImageTextToText, else AutoModelForVision2Seq (older transformers)."""
    import transformers

    errors = []
    for name in ("AutoModelForImageTextToText", "AutoModelForVision2Seq"):
        auto = getattr(transformers, name, None)
        if auto is None:
            continue
        try:
            return auto.from_pretrained(path, **kw)
        except ValueError as err:  # "Unrecognized configuration class ..."
            errors.append(f"{name}: {err}")
    raise ValueError(f"{path}: no image-text-to-text model class: " + " | ".join(errors))


def load_vlm(
    path: str | Path, dtype: str = "bfloat16", device: str = "cpu", trust_remote_code: bool = False
) -> tuple[Any, Any, dict[str, str]]:
    """(model in eval mode, processor, how they were loaded) from a local folder only."""
    import torch

    kw = {"trust_remote_code": trust_remote_code, "local_files_only": True}
    processor, how = _load_processor(str(path), **kw)
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    model = _load_model(str(path), dtype=torch_dtype, device_map=device, **kw)
    model.eval()
    info = {"processor": how, "model_class": type(model).__name__}
    return model, processor, info


# ----------------------------------------------------------------------------- generation
def _tokenizer(processor: Any) -> Any:
    return getattr(processor, "tokenizer", processor)


def _messages(prompt: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


def _input_sizes(processor: Any, inputs: Mapping[str, Any], n: int) -> list:
    """(W_in, H_in) of each image as the model saw it, or None when it cannot be told."""
    grid = inputs.get("image_grid_thw")
    patch = getattr(getattr(processor, "image_processor", None), "patch_size", None)
    if grid is not None and patch and len(grid) == n:
        return [(int(w) * patch, int(h) * patch) for _, h, w in grid.tolist()]
    pv = inputs.get("pixel_values")
    if pv is not None and pv.ndim == 4 and pv.shape[0] == n:  # (B, C, H, W), one crop each
        return [(int(pv.shape[3]), int(pv.shape[2]))] * n
    return [None] * n


def generate_replies(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    prompts: Sequence[str],
    batch_size: int = 8,
    max_new_tokens: int = 512,
) -> tuple[list[str], list]:
    """Greedy replies to (image, prompt) pairs, batched with left padding.

    Returns (completions, input sizes (W_in, H_in) or None per sample, see ``_input_sizes``).
    Special tokens are dropped from the completions.
    """
    import torch

    tok = _tokenizer(processor)
    tok.padding_side = "left"
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    texts, sizes = [], []
    for b in range(0, len(prompts), batch_size):
        chat = [
            processor.apply_chat_template(_messages(p), add_generation_prompt=True, tokenize=False)
            for p in prompts[b : b + batch_size]
        ]
        imgs = list(images[b : b + batch_size])
        inputs = processor(text=chat, images=imgs, padding=True, return_tensors="pt")
        sizes += _input_sizes(processor, inputs, len(imgs))
        inputs = {
            k: (v.to(model.device, model.dtype) if v.is_floating_point() else v.to(model.device))
            for k, v in inputs.items()
            if isinstance(v, torch.Tensor)
        }
        with torch.inference_mode():
            out = model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id
            )  # (B, L + T)
        new_tokens = out[:, inputs["input_ids"].shape[1] :]  # (B, T)
        texts += tok.batch_decode(new_tokens, skip_special_tokens=True)
    return texts, sizes
