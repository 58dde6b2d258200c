"""Evaluating one `Condition` against a call's arguments, and saying in words what was found.

Comparisons follow JSON types: a number never equals a string and `true` is not `1`. A condition that cannot be
evaluated (its argument is missing, or has the wrong type) reports `ERROR`; the caller decides which way that fails,
always towards refusing the call.
"""

from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

from policies.model import CallerField, Condition, ToolCall
from policies.values import json_equal, json_kind, quote, show


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


def check(condition: Condition, arguments: Mapping[str, Any]) -> tuple[Outcome, Any]:
    """Test `condition` against `arguments`.

    Returns:
        The outcome and the argument's value (`MISSING` when absent), for explanations.
    """
    path = condition.path
    # Fast path for the common case: a top-level argument of a plain dict.
    simple = len(path) == 1 and type(arguments) is dict
    actual = arguments.get(path[0], MISSING) if simple else resolve(arguments, path)
    if condition.op == "exists":
        present = actual is not MISSING
        return (Outcome.HOLDS if present == bool(condition.value) else Outcome.FAILS), actual
    if actual is MISSING:
        return Outcome.ERROR, actual
    test = _TESTS.get(condition.op)
    result = None if test is None else test(condition, actual, json_kind(actual))
    if result is None:
        return Outcome.ERROR, actual
    return (Outcome.HOLDS if result else Outcome.FAILS), actual


def check_call(condition: Condition, call: ToolCall) -> tuple[Outcome, Any]:
    """Test `condition` against the call: its arguments, or, for a `caller` condition, who makes it.

    A caller's name is a string and its groups an array of strings; on groups, `in` holds when any of them is
    listed, `not_in` when none is, and `contains` when the caller has that group.

    Returns:
        The outcome and the tested value (`MISSING` when an argument is absent), for explanations.
    """
    if not condition.on_caller:
        return check(condition, call.arguments)
    if condition.arg == CallerField.AGENT:
        test = _TESTS.get(condition.op)
        result = None if test is None else test(condition, call.identity, "string")
        return (Outcome.ERROR if result is None else Outcome.HOLDS if result else Outcome.FAILS), call.identity
    groups = list(call.groups)
    expected = condition.value
    if condition.op == "contains" and isinstance(expected, str):
        return (Outcome.HOLDS if expected in groups else Outcome.FAILS), groups
    if condition.op in ("in", "not_in") and isinstance(expected, list | tuple):
        found = any(g in expected for g in groups)
        return (Outcome.HOLDS if found == (condition.op == "in") else Outcome.FAILS), groups
    return Outcome.ERROR, groups


# Each test returns True/False, or None when the value cannot be tested (wrong type): the caller fails closed.
_Test = Callable[[Condition, Any, str], bool | None]
_SCALAR_KINDS = frozenset({"null", "boolean", "number", "string"})


def _equal(condition: Condition, actual: Any, kind: str) -> bool | None:
    expected = condition.value
    if expected is not None and kind != json_kind(expected):
        return None
    return json_equal(actual, expected) == (condition.op == "eq")


def _order(condition: Condition, actual: Any, kind: str) -> bool | None:
    expected = condition.value
    if kind not in ("number", "string") or kind != json_kind(expected):
        return None
    op = condition.op
    if op == "lt":
        return bool(actual < expected)
    if op == "le":
        return bool(actual <= expected)
    if op == "gt":
        return bool(actual > expected)
    return bool(actual >= expected)


def _member(condition: Condition, actual: Any, kind: str) -> bool | None:
    expected = condition.value
    if not isinstance(expected, list | tuple):
        return None
    if expected and kind not in condition.member_kinds:
        return None
    if condition.members is not None and kind in _SCALAR_KINDS:
        found = (kind, actual) in condition.members
    else:
        found = any(json_equal(actual, e) for e in expected)
    return found == (condition.op == "in")


def _regex(condition: Condition, actual: Any, kind: str) -> bool | None:
    if kind != "string" or condition.pattern is None:
        return None
    return (condition.pattern.search(actual) is not None) == (condition.op == "regex")


def _contains(condition: Condition, actual: Any, kind: str) -> bool | None:
    expected = condition.value
    if kind == "array":
        return any(json_equal(item, expected) for item in actual)
    if kind in ("string", "object") and isinstance(expected, str):
        return expected in actual
    return None


def _affix(condition: Condition, actual: Any, kind: str) -> bool | None:
    expected = condition.value
    if kind != "string" or not isinstance(expected, str):
        return None
    text = str(actual)
    return text.startswith(expected) if condition.op == "starts_with" else text.endswith(expected)


_TESTS: dict[str, _Test] = {
    "eq": _equal,
    "ne": _equal,
    "lt": _order,
    "le": _order,
    "gt": _order,
    "ge": _order,
    "in": _member,
    "not_in": _member,
    "regex": _regex,
    "not_regex": _regex,
    "contains": _contains,
    "starts_with": _affix,
    "ends_with": _affix,
}


_REDACTED = "[redacted]"


def is_redacted(arg: str, redact: tuple[str, ...]) -> bool:
    """Return whether `arg` is, or lies inside, or contains a redacted path."""
    return any(arg == r or arg.startswith(r + ".") or r.startswith(arg + ".") for r in redact)


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
    if condition.on_caller:
        return _explain_caller(condition, outcome, actual, locator, required=required)
    name = quote(condition.arg)
    if actual is MISSING:
        if required:
            return f"argument {name} is missing (required by {locator})"
        if condition.op == "exists":
            return f"argument {name} is absent, which {locator} forbids"
        return f"argument {name} is missing, so {locator} ({condition.described}) counts as met"
    value = _REDACTED if is_redacted(condition.arg, redact) else show(actual)
    if condition.op == "exists":
        if required:
            return f"argument {name} is present, but {locator} requires it to be absent"
        return f"argument {name} is present, which {locator} forbids"
    if outcome is Outcome.ERROR:
        tail = f"(required by {locator})" if required else f"so {locator} counts as met"
        return f"argument {name} is {value}, which cannot be tested with {condition.described} {tail}"
    if required:
        return f"argument {name} is {value}, but {locator} requires that it {_verb(condition)}"
    return f"argument {name} is {value}, which {condition.described}"


_VERBS = {
    "in": "be in",
    "not_in": "not be in",
    "regex": "match regex",
    "not_regex": "not match regex",
    "contains": "contain",
    "starts_with": "start with",
    "ends_with": "end with",
}


def _verb(condition: Condition) -> str:
    return f"{_VERBS.get(condition.op, 'be ' + condition.op)} {show(condition.value)}"


def caller_found(condition: Condition, actual: Any) -> str:
    """What a `caller` condition found, e.g. `the caller is "ci-bot"` or `the caller's groups are ["ops"]`."""
    if condition.arg == CallerField.GROUPS:
        return f"the caller's groups are {show(actual)}" if actual else "the caller is in no group"
    return f"the caller is {show(actual)}"


def _explain_caller(condition: Condition, outcome: Outcome, actual: Any, locator: str, *, required: bool) -> str:
    found = caller_found(condition, actual)
    if outcome is Outcome.ERROR:
        tail = f"(required by {locator})" if required else f"so {locator} counts as met"
        return f"{found}, which cannot be tested with {condition.described} {tail}"
    if required:
        verb = condition.described if condition.arg == CallerField.GROUPS else _verb(condition)
        who = "they" if condition.arg == CallerField.GROUPS else "it"
        return f"{found}, but {locator} requires that {who} {verb}"
    return f"{found}, which {condition.described}"
