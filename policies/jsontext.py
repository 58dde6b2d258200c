"""JSON text to Python values, for policy documents and case files, with unreadable text reported as a `Fault` at `$`.

Policy documents are read strictly: NaN and Infinity are refused, and objects remember keys written twice, which
`json.loads` would otherwise drop without a word. Pure: callers hand in text or bytes, never a file.
"""

import json
from typing import Any

from policies.errors import Fault

__all__ = ["JSONObject", "read_json"]


class JSONObject(dict[str, Any]):
    """A parsed JSON object that remembers keys it saw more than once."""

    duplicates: tuple[str, ...] = ()


def _object_pairs(pairs: list[tuple[str, Any]]) -> JSONObject:
    obj = JSONObject()
    duplicates = []
    for key, value in pairs:
        if key in obj:
            duplicates.append(key)
        obj[key] = value
    if duplicates:
        obj.duplicates = tuple(duplicates)
    return obj


class _NotANumber(ValueError):
    """NaN or Infinity, which Python's json reads but JSON does not have."""


def _reject_constant(name: str) -> Any:
    raise _NotANumber(f"{name} is not valid JSON")


def read_json(text: str | bytes, what: str, *, strict: bool = False) -> tuple[Any, Fault | None]:
    """Parse JSON text; bytes must be UTF-8, and may start with a byte-order mark.

    Args:
        text: The JSON text.
        what: How messages name the text, e.g. `the policy`.
        strict: Refuse NaN and Infinity, and read objects as `JSONObject`s that record duplicate keys.

    Returns:
        The value and None, or None and the fault that stopped the reading.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return None, Fault("$", f"{what} is not UTF-8 text (bad byte at offset {exc.start})")
    try:
        if strict:
            return json.loads(text, object_pairs_hook=_object_pairs, parse_constant=_reject_constant), None
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, Fault("$", f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")
    except RecursionError:
        return None, Fault("$", f"{what} is nested too deeply to read")
    except _NotANumber as exc:
        return None, Fault("$", f"invalid JSON: {exc}", "NaN and Infinity are not JSON numbers")
    except ValueError as exc:  # a number longer than int() reads (CPython's limit: 4,300 digits)
        return None, Fault("$", f"invalid JSON: {exc}", "write very long numbers as strings")
