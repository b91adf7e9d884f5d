"""The structured output the policy writes: one JSON object with six fields.

    {"answer": "chair", "description": "a wooden chair ...",
     "bbox2d": [x1, y1, x2, y2],                      # pixels (ints)
     "bbox3d": [xmin, ymin, zmin, xmax, ymax, zmax],  # bins in [0, Q) of the unit cube
     "kpts2d": [[u, v], ... M],                       # pixels
     "kpts3d": [[x, y, z], ... M]}                    # bins in [0, Q)

Eq. (1): the geometric fields are ``GEOMETRIC_FIELDS``; ``answer`` and ``description`` are
semantic and, in the routing of Eqs. (6-7), belong to the background.

Coordinates are written as integers (Sec. 3.2, "we quantize coordinates"): 2D values are
rounded pixels; 3D values live in the object's normalized frame (ShapeNet convention: unit
bounding-box diagonal, centred, so inside the cube [-0.5, 0.5]^3) and are quantized into
``Q`` bins. ``quantize_3d`` / ``dequantize_3d`` round-trip within half a bin.

``parse_output`` never raises and runs in linear time (``Brackets``). It finds the JSON object in arbitrary model text (prose and
```` ``` ```` fences around it are tolerated, a truncated object keeps the fields completed
before the cut), and reports for each field its decoded value, the character span of the
*value* (brackets / quotes included; the key, colon and comma belong to the background), and
an error code. Section 3.7: a missing, duplicated, malformed or wrongly shaped field has no
value and no span (its tokens fall to the background) and earns reward 0.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SEMANTIC_FIELDS: tuple[str, ...] = ("answer", "description")
GEOMETRIC_FIELDS: tuple[str, ...] = ("bbox2d", "bbox3d", "kpts2d", "kpts3d")
FIELDS: tuple[str, ...] = SEMANTIC_FIELDS + GEOMETRIC_FIELDS
NUM_KEYPOINTS = 16
DEFAULT_QUANT_BINS = 100
UNIT_CUBE = (-0.5, 0.5)

# Expected shape of each geometric value as written; "M" is the keypoint count.
FIELD_SHAPES: dict[str, tuple] = {
    "bbox2d": (4,),
    "bbox3d": (6,),
    "kpts2d": ("M", 2),
    "kpts3d": ("M", 3),
}

# Error codes reported in ParsedOutput.errors (None means the field parsed cleanly).
ERROR_CODES = (
    "no_json",  # no JSON object found in the text at all
    "missing",  # the object has no such key
    "duplicate",  # the key appears more than once (Sec. 3.7: no value, no span)
    "malformed",  # the value is not valid JSON (e.g. truncated, stray characters)
    "wrong_type",  # e.g. a number where a string is expected, or booleans as coordinates
    "wrong_shape",  # e.g. a 3-number bbox2d or 15 keypoints
    "non_finite",  # NaN / Infinity
)


# ----------------------------------------------------------------------------- quantization
def quantize_3d(x: Any, quant_bins: int = DEFAULT_QUANT_BINS) -> np.ndarray:
    """Continuous object-frame coordinates in [-0.5, 0.5] -> integer bins in [0, Q).

    b = clip(floor((x + 0.5) * Q), 0, Q - 1). Values outside the cube are clipped.
    """
    lo, hi = UNIT_CUBE
    x = np.asarray(x, dtype=np.float64)
    b = np.floor((x - lo) / (hi - lo) * quant_bins)
    return np.clip(b, 0, quant_bins - 1).astype(np.int64)


def dequantize_3d(bins: Any, quant_bins: int = DEFAULT_QUANT_BINS) -> np.ndarray:
    """Integer bins -> bin centres in the object frame: x = -0.5 + (b + 0.5) / Q.

    |dequantize_3d(quantize_3d(x)) - x| <= 0.5 / Q for every x inside the cube.
    """
    lo, hi = UNIT_CUBE
    b = np.asarray(bins, dtype=np.float64)
    return lo + (b + 0.5) / quant_bins * (hi - lo)


def quantize_2d(x: Any) -> np.ndarray:
    """Pixel coordinates -> integers (round half to even, as numpy does)."""
    return np.rint(np.asarray(x, dtype=np.float64)).astype(np.int64)


def to_continuous(values: Mapping[str, Any], quant_bins: int = DEFAULT_QUANT_BINS) -> dict:
    """Geometric values as written (pixels, bins) -> continuous (pixels, object frame)."""
    out = dict(values)
    for name in ("bbox3d", "kpts3d"):
        if out.get(name) is not None:
            out[name] = dequantize_3d(out[name], quant_bins)
    return out


# ----------------------------------------------------------------------------- writing
def format_target(
    sample: Mapping[str, Any],
    quant_bins: int = DEFAULT_QUANT_BINS,
    num_keypoints: int | None = None,
) -> str:
    """Write the canonical target JSON for a sample (the text SFT trains on, Eq. 5).

    ``sample`` holds continuous ground truth: ``answer`` and ``description`` (str),
    ``bbox2d`` (4,) and ``kpts2d`` (M, 2) in pixels, ``bbox3d`` (6,) and ``kpts3d`` (M, 3) in
    the normalized object frame. Keys are written in ``FIELDS`` order, separators ``", "`` and
    ``": "``, no newlines, non-ASCII kept as is.
    """
    missing = [f for f in FIELDS if f not in sample]
    if missing:
        raise KeyError(f"format_target: sample lacks field(s) {missing}; expected all of {FIELDS}")
    out: dict[str, Any] = {}
    for name in SEMANTIC_FIELDS:
        if not isinstance(sample[name], str):
            raise TypeError(
                f"format_target: {name} must be a str, got {type(sample[name]).__name__}"
            )
        out[name] = sample[name]
    for name in GEOMETRIC_FIELDS:
        arr = np.asarray(sample[name], dtype=np.float64)
        shape = _expected_shape(name, num_keypoints if num_keypoints is not None else None, arr)
        if arr.shape != shape:
            raise ValueError(f"format_target: {name} has shape {arr.shape}, expected {shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"format_target: {name} contains non-finite values")
        q = quantize_3d(arr, quant_bins) if name.endswith("3d") else quantize_2d(arr)
        out[name] = q.tolist()
    return json.dumps(out, ensure_ascii=False, separators=(", ", ": "))


def _expected_shape(name: str, num_keypoints: int | None, arr: np.ndarray | None = None) -> tuple:
    shape = FIELD_SHAPES[name]
    if shape[0] == "M":
        m = num_keypoints
        if m is None:
            m = arr.shape[0] if arr is not None and arr.ndim >= 1 else NUM_KEYPOINTS
        return (m, shape[1])
    return shape


# ----------------------------------------------------------------------------- parsing
@dataclass
class ParsedOutput:
    """What ``parse_output`` recovered from one completion.

    values[f]     decoded value (str for semantic fields, float64 ndarray as written for
                  geometric ones: pixels for 2D, bins for 3D) or None
    char_spans[f] (start, end) of the field's value in the text (end exclusive) or None
    errors[f]     None if the field is usable, else one of ``ERROR_CODES``
    json_span     (start, end) of the JSON object (end = len(text) if it was truncated) or None
    """

    values: dict[str, Any] = field(default_factory=dict)
    char_spans: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    errors: dict[str, str | None] = field(default_factory=dict)
    json_span: tuple[int, int] | None = None

    @property
    def ok(self) -> bool:
        """True when all six fields parsed cleanly."""
        return all(e is None for e in self.errors.values())

    def valid_fields(self) -> list[str]:
        return [f for f in FIELDS if self.errors.get(f) is None]


_DECODER = json.JSONDecoder()
_WS = " \t\n\r"
_MAX_OBJECT_TRIES = 32
_STRING_BODY = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
# a whole string (to its closing quote, if any) or one bracket: the tokens of ``Brackets``
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)
_OPEN_RUN = re.compile(r"[\[{]+")
_VALUE_STOP = re.compile(r'["\[\]{},]')
# a comma followed by one of our keys: where a malformed value is taken to end (resync)
_RESYNC = re.compile(r',\s*"(?:' + "|".join(FIELDS) + r')"\s*:')


def _skip_ws(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in _WS:
        i += 1
    return i


def skip_string(text: str, i: int) -> int:
    """``text[i]`` opens a JSON string: the index of its closing quote (``len(text)`` if none).

    Escapes are honoured, so ``\\"`` does not close it. One regex match (linear, in C).
    """
    end = _STRING_BODY.match(text, i + 1).end()
    return end if end < len(text) and text[end] == '"' else len(text)


def finite_number(v: Any) -> bool:
    """A JSON number (not a bool) that is finite as a float64; False for huge integers."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer beyond float64 (310+ digits)
        return False


class Brackets:
    """The bracket structure of one text, computed lazily and once (linear in all).

    ``close(j)``: index after the bracket that closes ``text[j]`` (any of ``[{`` / ``]}``,
    types not matched, strings skipped), or None when it never closes. The answer depends on
    ``j`` only (the scan from ``j`` starts outside any string), so every scan that meets the
    bracket ``j`` shares it: trying many candidate objects in one text stays linear.
    ``resync(i)``: the first ``, "<field>":`` at or after ``i`` (``len(text)`` if none).
    """

    def __init__(self, text: str):
        self.text = text
        self._close: dict[int, int | None] = {}
        self._resync: list[int] | None = None
        self._starts: list[int] = []  # where scans began (sorted): the only memoized brackets
        # inside a run of opening brackets that the run's first bracket does not cover

    def close(self, j: int) -> int | None:
        text, memo, search = self.text, self._close, _TOKEN.search
        if j in memo:
            return memo[j]
        bisect.insort(self._starts, j)
        stack, i = [j], j + 1
        while stack:
            m = search(text, i)
            if m is None:
                break
            k, i = m.start(), m.end()
            c = text[k]
            if c == '"':
                continue  # a string token (up to its closing quote, or to the end)
            if c == "[" or c == "{":
                if k in memo:  # a bracket met before: jump over it
                    if memo[k] is None:
                        break
                    i = memo[k]
                else:  # a run of opening brackets up to the next scan start: pushed at once
                    run_end = _OPEN_RUN.match(text, k).end()
                    nxt = bisect.bisect_right(self._starts, k)
                    if nxt < len(self._starts):
                        run_end = min(run_end, self._starts[nxt])
                    stack.extend(range(k, run_end))
                    i = run_end
            else:
                memo[stack.pop()] = i
        for k in stack:  # never closed
            memo[k] = None
        return memo[j]

    def resync(self, i: int) -> int:
        if self._resync is None:
            self._resync = [m.start() for m in _RESYNC.finditer(self.text)]
        pos = bisect.bisect_left(self._resync, i)
        return self._resync[pos] if pos < len(self._resync) else len(self.text)


def _skip_value(br: Brackets, i: int) -> int:
    """Skip a (possibly malformed) value: stop at ',' or a closing bracket at depth 0, at the
    end, or at the next ``, "<field>":`` (so one broken value does not swallow the fields
    after it, e.g. an opening bracket that never closes).

    Strings are skipped as units (escapes honoured) so commas inside them do not count; the
    resync point is found without regard to strings (a malformed value followed by a string
    that itself contains ``, "bbox3d":`` may end early: the fields are still checked one by one).
    """
    text, n = br.text, len(br.text)
    start, stop = i, n
    while i < n:
        m = _VALUE_STOP.search(text, i)
        if m is None:
            break
        k = m.start()
        c = text[k]
        if c == '"':
            i = skip_string(text, k) + 1
        elif c in "[{":
            end = br.close(k)
            if end is None:
                break
            i = end
        else:
            stop = k
            break
    return min(stop, br.resync(start))


def _scan_object(br: Brackets, start: int) -> tuple[list[tuple], int]:
    """Scan the object opening at text[start] == '{' entry by entry.

    Returns ([(key, value_start, value_end, value, ok)], end). Tolerant: a bad entry is
    recorded as not ok and scanning resumes after it; a truncated object ends at len(text).
    """
    text = br.text
    entries: list[tuple] = []
    n = len(text)
    i = start + 1
    while True:
        i = _skip_ws(text, i)
        if i >= n:
            return entries, n
        c = text[i]
        if c == "}":
            return entries, i + 1
        if c == ",":
            i += 1
            continue
        if c != '"':
            # Garbage where a key should be: skip to the next entry boundary.
            j = _skip_value(br, i)
            i = j if j > i else i + 1
            continue
        try:
            key, i = _DECODER.raw_decode(text, i)
        except ValueError:
            return entries, n  # an unterminated key: nothing after it is usable
        i = _skip_ws(text, i)
        if i >= n or text[i] != ":":
            entries.append((key, None, None, None, False))
            continue
        i = _skip_ws(text, i + 1)
        v_start = i
        try:
            value, v_end = _DECODER.raw_decode(text, i)
            nxt = _skip_ws(text, v_end)
            ok = nxt >= n or text[nxt] in ",}"
            if not ok:  # trailing junk after the value (e.g. "[1, 2]x"): malformed
                v_end = _skip_value(br, v_end)
        except (ValueError, RecursionError):
            value, ok = None, False
            v_end = _skip_value(br, i)
        entries.append((key, v_start, v_end, value, ok))
        i = v_end


def _candidate_starts(text: str) -> list[int]:
    """Where to look for the object: inside ``` fences first, then anywhere, in order."""
    starts: list[int] = []
    pos = text.find("```")
    while pos != -1 and len(starts) < _MAX_OBJECT_TRIES:
        end = text.find("```", pos + 3)
        seg_end = end if end != -1 else len(text)
        brace = text.find("{", pos + 3, seg_end)
        if brace != -1:
            starts.append(brace)
        if end == -1:
            break
        pos = text.find("```", end + 3)
    seen = set(starts)
    i = text.find("{")
    while i != -1 and len(starts) < _MAX_OBJECT_TRIES:
        if i not in seen:
            starts.append(i)
        i = text.find("{", i + 1)
    return starts


def _validate(name: str, value: Any, num_keypoints: int | None) -> tuple[Any, str | None]:
    """Check one decoded value against the schema -> (value or None, error or None)."""
    if name in SEMANTIC_FIELDS:
        return (value, None) if isinstance(value, str) else (None, "wrong_type")

    expected = FIELD_SHAPES[name]
    if expected[0] == "M":
        if not isinstance(value, list) or not value:
            return None, "wrong_shape" if isinstance(value, list) else "wrong_type"
        if not all(isinstance(row, list) for row in value):
            return None, "wrong_shape"
        if any(len(row) != expected[1] for row in value):
            return None, "wrong_shape"
        if num_keypoints is not None and len(value) != num_keypoints:
            return None, "wrong_shape"
        flat = [v for row in value for v in row]
    else:
        if not isinstance(value, list):
            return None, "wrong_type"
        if len(value) != expected[0] or any(isinstance(v, list) for v in value):
            return None, "wrong_shape"
        flat = value
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in flat):
        return None, "wrong_type"
    if not all(finite_number(v) for v in flat):  # NaN, Infinity, 1e400, 310-digit integers
        return None, "non_finite"
    return np.asarray(value, dtype=np.float64), None


def parse_output(
    text: Any, num_keypoints: int | None = NUM_KEYPOINTS, *, brackets: Brackets | None = None
) -> ParsedOutput:
    """Parse a completion into per-field values, value spans and errors. Never raises.

    Object choice: the first '{' inside a ``` fence, else the first '{' in the text, whose
    scan yields at least one schema key (at most 32 candidates are tried). Inside it:
    - a key seen twice -> error ``duplicate`` for that field, no value, no span (Sec. 3.7);
    - a value that is not valid JSON, or is followed by junk -> ``malformed``;
    - a valid value of the wrong type / shape / with NaN or Infinity -> ``wrong_type`` /
      ``wrong_shape`` / ``non_finite``; no value, no span;
    - keys outside the schema are ignored.
    ``num_keypoints=None`` accepts any keypoint count >= 1. A fault inside one value (a
    310-digit integer, NaN, 5,000 nested or unclosed brackets, ...) costs that field only.
    ``brackets``: a ``Brackets(text)`` to share with another parse of the same text.
    """
    try:
        return parse_output_unguarded(text, num_keypoints, brackets=brackets)
    except Exception:  # noqa: BLE001 - the contract is "never raises"; report no JSON
        return _no_json()


def _no_json() -> ParsedOutput:
    return ParsedOutput(
        values={f: None for f in FIELDS},
        char_spans={f: None for f in FIELDS},
        errors={f: "no_json" for f in FIELDS},
    )


def parse_output_unguarded(
    text: Any, num_keypoints: int | None = NUM_KEYPOINTS, *, brackets: Brackets | None = None
) -> ParsedOutput:
    """``parse_output`` without its last-resort guard: an exception here is a parser bug
    (``scripts/reliability.py`` counts them on fuzzed text; there should be none)."""
    result = _no_json()
    if not isinstance(text, str):
        return result
    chosen = None
    br = brackets if brackets is not None and brackets.text is text else Brackets(text)
    for start in _candidate_starts(text):
        entries, end = _scan_object(br, start)
        if any(e[0] in FIELDS for e in entries):
            chosen = (start, end, entries)
            break
    if chosen is None:
        return result
    start, end, entries = chosen
    result.json_span = (start, end)
    counts: dict[str, int] = {}
    for e in entries:
        counts[e[0]] = counts.get(e[0], 0) + 1
    for name in FIELDS:
        if counts.get(name, 0) == 0:
            result.errors[name] = "missing"
            continue
        if counts[name] > 1:
            result.errors[name] = "duplicate"
            continue
        _, v_start, v_end, value, ok = next(e for e in entries if e[0] == name)
        if not ok:
            result.errors[name] = "malformed"
            continue
        try:  # a fault inside one value never costs the other fields
            decoded, err = _validate(name, value, num_keypoints)
        except Exception:  # noqa: BLE001
            decoded, err = None, "malformed"
        result.errors[name] = err
        if err is None:
            result.values[name] = decoded
            result.char_spans[name] = (v_start, v_end)
    return result
