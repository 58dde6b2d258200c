"""Evaluating one `Condition` against a call's arguments, and saying in words what was found.

Comparisons follow JSON types: a number never equals a string and `true` is not `1`. A condition that cannot be
evaluated (its argument is missing, or has the wrong type) reports `ERROR`; the caller decides which way that fails,
always towards refusing the call.
"""

import json
import re
from collections.abc import Mapping
from enum import Enum
from typing import Any

from policies.model import Condition


class Outcome(Enum):
    """Result of testing a condition."""

    HOLDS = "holds"
    FAILS = "fails"
    ERROR = "error"


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def resolve(arguments: Any, path: tuple[str, ...]) -> Any:
    """Follow a dotted path into the arguments; return `MISSING` when any step is absent."""
    value = arguments
    for part in path:
        if isinstance(value, Mapping):
            value = value.get(part, MISSING)
            if value is MISSING:
                return MISSING
        elif isinstance(value, list | tuple):
            if not part.isdigit() or int(part) >= len(value):
                return MISSING
            value = value[int(part)]
        else:
            return MISSING
    return value


def json_kind(value: Any) -> str:
    """Name the JSON type of a value: null, boolean, number, string, array or object."""
    if value is None:
        return "null"
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


def check(condition: Condition, arguments: Mapping[str, Any]) -> tuple[Outcome, Any]:
    """Test `condition` against `arguments`.

    Returns:
        The outcome and the argument's value (`MISSING` when absent), for explanations.
    """
    actual = resolve(arguments, condition.path)
    op, expected = condition.op, condition.value
    if op == "exists":
        present = actual is not MISSING
        return (Outcome.HOLDS if present == bool(expected) else Outcome.FAILS), actual
    if actual is MISSING:
        return Outcome.ERROR, actual
    result = _compare(op, actual, expected, condition.pattern)
    if result is None:
        return Outcome.ERROR, actual
    return (Outcome.HOLDS if result else Outcome.FAILS), actual


def _compare(op: str, actual: Any, expected: Any, pattern: re.Pattern[str] | None) -> bool | None:
    kind = json_kind(actual)
    if op in ("eq", "ne"):
        if expected is not None and kind != json_kind(expected):
            return None
        return json_equal(actual, expected) == (op == "eq")
    if op in ("lt", "le", "gt", "ge"):
        if kind not in ("number", "string") or kind != json_kind(expected):
            return None
        if op == "lt":
            return bool(actual < expected)
        if op == "le":
            return bool(actual <= expected)
        if op == "gt":
            return bool(actual > expected)
        return bool(actual >= expected)
    if op in ("in", "not_in"):
        if not isinstance(expected, list | tuple):
            return None
        if expected and kind not in {json_kind(e) for e in expected}:
            return None
        found = any(json_equal(actual, e) for e in expected)
        return found == (op == "in")
    if op in ("regex", "not_regex"):
        if kind != "string" or pattern is None:
            return None
        return (pattern.search(actual) is not None) == (op == "regex")
    if op == "contains":
        if kind == "string" and isinstance(expected, str):
            return expected in actual
        if kind == "array":
            return any(json_equal(item, expected) for item in actual)
        if kind == "object" and isinstance(expected, str):
            return expected in actual
        return None
    if op in ("starts_with", "ends_with"):
        if kind != "string" or not isinstance(expected, str):
            return None
        text = str(actual)
        return text.startswith(expected) if op == "starts_with" else text.endswith(expected)
    return None


_REDACTED = "[redacted]"
_MAX_SHOWN = 80


def show(value: Any) -> str:
    """Render a value as short JSON for a sentence."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except ValueError:
        text = repr(value)
    if len(text) > _MAX_SHOWN:
        text = text[: _MAX_SHOWN - 1] + "…"
    return text


def is_redacted(arg: str, redact: tuple[str, ...]) -> bool:
    """Return whether `arg` is, or lies inside, or contains a redacted path."""
    return any(arg == r or arg.startswith(r + ".") or r.startswith(arg + ".") for r in redact)


_PHRASES = {
    "in": "is in",
    "not_in": "is not in",
    "regex": "matches regex",
    "not_regex": "does not match regex",
    "contains": "contains",
    "starts_with": "starts with",
    "ends_with": "ends with",
}


def describe_test(condition: Condition) -> str:
    """Say what the condition tests, e.g. `lt 100` or `matches regex "(?i)drop"`."""
    if condition.op == "exists":
        return "present" if condition.value else "absent"
    phrase = _PHRASES.get(condition.op, f"is {condition.op}")
    return f"{phrase} {show(condition.value)}"


def _which(condition: Condition) -> str:
    """The clause after "which", e.g. `is lt 100`."""
    return describe_test(condition)


def explain(
    condition: Condition, outcome: Outcome, actual: Any, locator: str, redact: tuple[str, ...], *, required: bool
) -> str:
    """Explain why a condition decided the call.

    Args:
        condition: The condition that decided.
        outcome: Its outcome (`FAILS` or `ERROR` for `require`; `HOLDS` or `ERROR` for `deny_if`/`approve_if`).
        actual: The argument's value, or `MISSING`.
        locator: The condition's short locator, e.g. `require[0]`.
        redact: Argument paths whose values must not be shown.
        required: Whether the condition comes from `require`.
    """
    name = json.dumps(condition.arg, ensure_ascii=False)
    if actual is MISSING:
        if required:
            return f"argument {name} is missing (required by {locator})"
        if condition.op == "exists":
            return f"argument {name} is absent, which {locator} forbids"
        return f"argument {name} is missing, so {locator} ({_which(condition)}) counts as met"
    value = _REDACTED if is_redacted(condition.arg, redact) else show(actual)
    if condition.op == "exists":
        if required:
            return f"argument {name} is present, but {locator} requires it to be absent"
        return f"argument {name} is present, which {locator} forbids"
    if outcome is Outcome.ERROR:
        tail = f"(required by {locator})" if required else f"so {locator} counts as met"
        return f"argument {name} is {value}, which cannot be tested with {_which(condition)} {tail}"
    if required:
        return f"argument {name} is {value}, but {locator} requires that it {_verb(condition)}"
    return f"argument {name} is {value}, which {_which(condition)}"


def _verb(condition: Condition) -> str:
    phrase = _PHRASES.get(condition.op)
    if phrase is None:
        return f"be {condition.op} {show(condition.value)}"
    return {
        "is in": "be in",
        "is not in": "not be in",
        "matches regex": "match regex",
        "does not match regex": "not match regex",
        "contains": "contain",
        "starts with": "start with",
        "ends with": "end with",
    }[phrase] + f" {show(condition.value)}"
