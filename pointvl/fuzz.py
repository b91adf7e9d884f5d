"""Seeded generators of model outputs for the parsers' property tests and reliability report.

Three kinds of text, each drawn from a ``random.Random`` (hypothesis drives it through
``st.randoms()`` in the tests; ``scripts/reliability.py`` seeds it):

- ``completion(rnd, ...)``: a well-formed completion in our schema (any key order, any JSON
  whitespace, prose and a ``` fence around it) with the exact value and character span of
  every field, optionally with **one field broken** by a ``FAULTS`` fault. The other fields
  must then parse exactly as written ("field locality").
- ``garbage(rnd, size)``: JSON-ish token soup (brackets, quotes, escapes, numbers, NaN, keys
  of the schema): what "never raises" is checked on.
- ``worst_cases(size)``: fixed adversarial texts of about ``size`` characters (deep or unclosed
  nesting, repeated fences and braces, long lists of lists, huge numbers) for timing.

A field-level fault changes only the text of one value. Faults that change the structure of
the enclosing object (a stray ``}``, an unterminated string) are not field-level: after them
no parser can know where the object goes on, and they are not generated here.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

from pointvl.schema import FIELD_SHAPES, FIELDS, GEOMETRIC_FIELDS, SEMANTIC_FIELDS

FAULTS = (
    "huge_int",  # an integer beyond float64 (310+ digits)
    "huge_float",  # 1e400: overflows to inf
    "nan",  # NaN literal
    "infinity",  # Infinity / -Infinity literal
    "deep_balanced",  # the value wrapped in up to 5,000 balanced brackets
    "deep_unbalanced",  # up to 5,000 opening brackets that never close
    "wrong_type",  # true / false / null / a string / a number / an object
    "wrong_shape",  # one number too many or too few
    "junk_after",  # the value followed by stray characters
    "empty_value",  # nothing between the colon and the comma
    "object",  # the value inside an object
)
_WS = ("", " ", "  ", "\n", "\n  ", "\t")
_PROSE = "abcdefghijklmnopqrstuvwxyz ABCXYZ 0123456789 .,:;!?-'()\n"


@dataclass
class Case:
    """One generated completion: its text and, per field, the value and span written."""

    text: str
    values: dict[str, Any] = field(default_factory=dict)
    """Field -> the value as written (str, or nested lists of ints)."""
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Field -> (start, end) of its value text in ``text`` (end exclusive)."""
    broken: str | None = None
    """The field a fault was applied to (its entry in values/spans is the clean one)."""
    fault: str | None = None


def clean_value(rnd: random.Random, name: str, num_keypoints: int) -> Any:
    """A valid value of field ``name`` (ints as the schema writes them; M = num_keypoints)."""
    if name in SEMANTIC_FIELDS:
        return "".join(rnd.choice(_PROSE + 'é中"\\/{}[]') for _ in range(rnd.randint(0, 24)))
    shape = FIELD_SHAPES[name]
    if shape[0] == "M":
        return [[rnd.randint(0, 999) for _ in range(shape[1])] for _ in range(num_keypoints)]
    return [rnd.randint(0, 999) for _ in range(shape[0])]


def dump(rnd: random.Random, value: Any) -> str:
    """JSON text of ``value`` with random (valid) whitespace after separators."""
    if isinstance(value, list):
        sep = "," + rnd.choice(_WS)
        return "[" + sep.join(dump(rnd, v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=rnd.random() < 0.5)


def _first_number(text: str) -> tuple[int, int]:
    """(start, end) of the first run of digits in ``text``."""
    start = next(i for i, c in enumerate(text) if c.isdigit())
    end = start
    while end < len(text) and text[end].isdigit():
        end += 1
    return start, end


def break_value(rnd: random.Random, name: str, text: str, fault: str) -> str:
    """The value text ``text`` of field ``name`` with fault ``fault`` applied (see FAULTS)."""
    geometric = name in GEOMETRIC_FIELDS

    def replace_number(new: str) -> str:
        if not geometric:
            return new
        s, e = _first_number(text)
        return text[:s] + new + text[e:]

    if fault == "huge_int":
        return replace_number("9" * rnd.randint(310, 400))
    if fault == "huge_float":
        return replace_number(rnd.choice(["1e400", "-1e400", "1.5E+999"]))
    if fault == "nan":
        return replace_number("NaN")
    if fault == "infinity":
        return replace_number(rnd.choice(["Infinity", "-Infinity"]))
    depth = rnd.choice([1, 2, 3, 50, 999, 1001, 5000])
    if fault == "deep_balanced":
        return "[" * depth + text + "]" * depth
    if fault == "deep_unbalanced":
        return "[" * depth + text
    if fault == "wrong_type":
        options = ["true", "false", "null", '"1, 2, 3"', "12", "{}"]
        return rnd.choice([o for o in options if not (o.startswith('"') and not geometric)])
    if fault == "wrong_shape":
        if not geometric:
            return "[" + text + "]"
        if rnd.random() < 0.5:  # one number more in the first row
            s, e = _first_number(text)
            return text[:e] + ", 7" + text[e:]
        s, e = _first_number(text)  # one number less
        rest = text[e:].lstrip()
        return text[:s] + (rest[1:].lstrip() if rest.startswith(",") else rest)
    if fault == "junk_after":
        return text + rnd.choice(["x", " 1", " true", "]", ")", "...", " ## "])
    if fault == "empty_value":
        return ""
    if fault == "object":
        return '{"value": ' + text + "}"
    raise ValueError(f"fault={fault!r}: expected one of {FAULTS}")


def completion(
    rnd: random.Random,
    fields: tuple[str, ...] = FIELDS,
    num_keypoints: int | None = None,
    broken: str | None = None,
    fault: str | None = None,
    extra_keys: bool = False,
) -> Case:
    """A completion holding ``fields`` in random order; ``broken`` gets ``fault``.

    Prose (no braces or quotes) and an optional ```json fence surround the object;
    ``extra_keys`` adds keys outside the schema (they must be ignored).
    """
    m = num_keypoints if num_keypoints is not None else rnd.randint(1, 4)
    names = list(fields)
    rnd.shuffle(names)
    entries = [(n, clean_value(rnd, n, m)) for n in names]
    if extra_keys and rnd.random() < 0.5:
        entries.insert(rnd.randint(0, len(entries)), ("note", "extra"))
    fence = rnd.random() < 0.3
    prefix = "".join(rnd.choice(_PROSE) for _ in range(rnd.randint(0, 30)))
    text = prefix + ("```json\n" if fence else "") + "{" + rnd.choice(_WS)
    case = Case(text="", broken=broken, fault=fault)
    for k, (name, value) in enumerate(entries):
        if k:
            text += "," + rnd.choice(_WS)
        text += json.dumps(name) + rnd.choice(["", " "]) + ":" + rnd.choice(_WS)
        written = dump(rnd, value)
        if name == broken:
            written = break_value(rnd, name, written, fault)
        if name in FIELDS:
            case.values[name] = value
            case.spans[name] = (len(text), len(text) + len(written))
        text += written
    text += rnd.choice(_WS) + "}" + ("\n```" if fence else "")
    text += "".join(rnd.choice(_PROSE) for _ in range(rnd.randint(0, 30)))
    case.text = text
    return case


_TOKENS = (
    list('{}[],:"\\ \n0123456789.-+eE')
    + ["```", "```json", "NaN", "Infinity", "-Infinity", "true", "null", "'", "1e400"]
    + [json.dumps(f) for f in FIELDS]
    + ['"bbox"', '"keypoints"', '"point_2d"', "\\u0022", "\\ud800", "9" * 320, "é", "\x00"]
)


def garbage(rnd: random.Random, size: int = 200) -> str:
    """JSON-ish token soup of about ``size`` tokens, sometimes spliced into a completion."""
    soup = "".join(rnd.choice(_TOKENS) for _ in range(rnd.randint(0, size)))
    if rnd.random() < 0.5:
        base = completion(rnd).text
        pos = rnd.randint(0, len(base))
        return base[:pos] + soup + base[pos + rnd.randint(0, 20) :]
    return soup


def worst_cases(size: int = 1_000_000) -> dict[str, str]:
    """Adversarial texts of about ``size`` characters: name -> text (see the module docstring)."""

    def rep(unit: str) -> str:
        return (unit * (size // len(unit) + 1))[:size]

    return {
        "open_braces": rep("{"),
        "open_brackets": rep("["),
        "fence_brace": rep("```{"),
        "fence_json_brace": rep("```json\n{"),
        "brace_key_colon": rep('{"a":'),
        "brace_quote": rep('{"'),
        "brace_comma": rep("{,"),
        "brace_key": rep('{"x"'),
        "schema_key_unclosed": rep('{"bbox2d": ['),
        "list_of_lists": "[" + rep("[1, 2], ")[: size - 2] + "]",
        "list_of_lists_unclosed": rep("[[1, 2], "),
        "balanced_nesting": "[" * (size // 2) + "]" * (size // 2),
        "huge_number": '{"bbox2d": [' + "9" * (size - 13) + "]}",
        "repeated_objects": rep('{"bbox2d": [1, 2, 3, 4], "kpts2d": [[1, 2]]} '),
        "single_quotes": rep("{'bbox_2d': ["),
        "escapes": rep('{"\\'),
        "prose": rep("The chair is at the left of the image. "),
    }
