"""The `Checker` that validators share: it collects every fault at its JSON path, and checks generic shapes.

It knows JSON shapes (objects with a fixed set of keys, arrays, strings, choices, globs) and how to hint at the
value meant, but nothing of what a policy means. A check that fails records a fault and returns None, so the walk
goes on and one pass reports every fault.
"""

import difflib
import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from policies.errors import Fault
from policies.globs import GlobSyntaxError, glob_to_regex
from policies.values import json_kind, show

__all__ = ["Checker", "choices", "key_path", "suggest"]

T = TypeVar("T")

# Spellings from other policy languages, so the hint names the op meant rather than the nearest string.
_OP_ALIASES = {
    "==": "eq",
    "=": "eq",
    "equals": "eq",
    "!=": "ne",
    "neq": "ne",
    "not_equals": "ne",
    "<": "lt",
    "<=": "le",
    "lte": "le",
    ">": "gt",
    ">=": "ge",
    "gte": "ge",
    "matches": "regex",
    "nin": "not_in",
    "startswith": "starts_with",
    "endswith": "ends_with",
}


def key_path(path: str, key: str) -> str:
    """Return the JSON path of `key` inside the object at `path`: `$.a.b`, or `$.a["b c"]` when it needs quoting."""
    if key.isidentifier():
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def choices(values: Iterable[str]) -> str:
    """List values for a message: `"a", "b", "c"`."""
    return ", ".join(f'"{v}"' for v in values)


def suggest(word: str, valid: Iterable[str], what: str) -> str:
    """Hint at the valid word meant by `word` (an alias, or the closest spelling) and list every valid `what`."""
    valid = tuple(valid)
    alias = _OP_ALIASES.get(word.lower())
    close = [alias] if alias in valid else difflib.get_close_matches(word, valid, n=1, cutoff=0.6)
    listing = f"valid {what}: {choices(valid)}"
    return f'did you mean "{close[0]}"? {listing}' if close else listing


class Checker:
    """Collects faults while a document is walked; each check returns the value it checked, or None on a fault."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []

    def error(self, path: str, message: str, hint: str | None = None) -> None:
        self.faults.append(Fault(path, message, hint, "error"))

    def warn(self, path: str, message: str, hint: str | None = None) -> None:
        self.faults.append(Fault(path, message, hint, "warning"))

    @property
    def failed(self) -> bool:
        return any(f.severity == "error" for f in self.faults)

    def wrong_type(self, path: str, expected: str, value: Any) -> None:
        self.error(path, f"expected {expected}, got {json_kind(value)} {show(value)}")

    def obj(self, value: Any, path: str, valid: tuple[str, ...]) -> dict[str, Any] | None:
        """Check an object; with `valid`, any other key is a fault. Keys written twice are faults too."""
        if not isinstance(value, dict):
            self.wrong_type(path, "an object", value)
            return None
        for key in getattr(value, "duplicates", ()):
            self.error(key_path(path, key), f'key "{key}" appears more than once', "keep one; JSON keeps the last")
        if valid:
            for key in value:
                if key not in valid:
                    self.error(key_path(path, key), f'unknown key "{key}"', suggest(key, valid, "keys"))
        return value

    def array(self, value: Any, path: str) -> list[Any] | None:
        if not isinstance(value, list):
            self.wrong_type(path, "an array", value)
            return None
        return value

    def string(self, value: Any, path: str) -> str | None:
        """Check a non-empty string."""
        if not isinstance(value, str):
            self.wrong_type(path, "a string", value)
            return None
        if not value:
            self.error(path, "must not be empty")
            return None
        return value

    def boolean(self, value: Any, path: str) -> bool | None:
        if not isinstance(value, bool):
            self.wrong_type(path, "true or false", value)
            return None
        return value

    def strings(self, value: Any, path: str) -> tuple[str, ...] | None:
        """Check an array of non-empty strings; every bad item is a fault."""
        items = self.array(value, path)
        if items is None:
            return None
        out = [self.string(item, f"{path}[{i}]") for i, item in enumerate(items)]
        return tuple(s for s in out if s is not None) if all(s is not None for s in out) else None

    def items(
        self, parent: dict[str, Any], key: str, path: str, parse: Callable[["Checker", Any, str], T | None]
    ) -> tuple[T, ...] | None:
        """Check the optional array `parent[key]` with `parse` on each item; () when absent, None on any fault."""
        if key not in parent:
            return ()
        items = self.array(parent[key], f"{path}.{key}")
        if items is None:
            return None
        out = [parse(self, item, f"{path}.{key}[{i}]") for i, item in enumerate(items)]
        return None if any(o is None for o in out) else tuple(o for o in out if o is not None)

    def choice(self, value: Any, path: str, valid: tuple[str, ...], what: str) -> str | None:
        """Check a string that must be one of `valid`, hinting at the one meant."""
        if not isinstance(value, str):
            self.wrong_type(path, f"one of {choices(valid)}", value)
            return None
        if value not in valid:
            self.error(path, f'invalid {what} "{value}"', suggest(value, valid, f"{what}s"))
            return None
        return value

    def glob(self, pattern: str, path: str) -> bool:
        try:
            glob_to_regex(pattern)
        except GlobSyntaxError as exc:
            self.error(path, f'invalid glob "{pattern}": {exc}', "globs use *, ? and [...] with a closing ]")
            return False
        return True
