"""JSON values as policies see them: their type names, equality that respects JSON types, and short renderings.

Pure functions over the values `json.loads` returns (and the Mappings and tuples callers may pass instead).
"""

import json
import math
import re
from collections.abc import Mapping
from typing import Any

_KINDS: dict[type, str] = {
    type(None): "null",
    bool: "boolean",
    int: "number",
    float: "number",
    str: "string",
    list: "array",
    tuple: "array",
    dict: "object",
}


def json_kind(value: Any) -> str:
    """Name the JSON type of a value: null, boolean, number, string, array or object."""
    kind = _KINDS.get(type(value))
    if kind is not None:
        return kind
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def json_equal(a: Any, b: Any) -> bool:
    """Equality with JSON types: `1 == 1.0`, but `true != 1` and `"1" != 1`."""
    if json_kind(a) != json_kind(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return bool(a == b)


_MAX_SHOWN = 80


_PLAIN = re.compile(r"[^\"\\\x00-\x1f\x7f]*")


def quote(text: str) -> str:
    """Quote a string as JSON does, cheaply when it needs no escapes."""
    if _PLAIN.fullmatch(text):
        return f'"{text}"'
    return json.dumps(text, ensure_ascii=False)


def show(value: Any) -> str:
    """Render a value as short JSON for a sentence."""
    kind = type(value)
    if kind is int or kind is float:
        return repr(value) if math.isfinite(value) else json.dumps(value)
    if kind is str and len(value) < _MAX_SHOWN - 2 and _PLAIN.fullmatch(value):
        return f'"{value}"'
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except ValueError:
        text = repr(value)
    if len(text) > _MAX_SHOWN:
        text = text[: _MAX_SHOWN - 1] + "…"
    return text
