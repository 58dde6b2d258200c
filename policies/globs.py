"""Tool-name globs: validation, translation to regular expressions, and a compiled name matcher.

The syntax is fnmatch's (`*`, `?`, `[abc]`, `[!abc]`, `[a-z]`), always case-sensitive. Unlike fnmatch, an
unbalanced `[` is an error rather than a literal, because in a policy it is almost always a typo.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

_GLOB_CHARS = frozenset("*?[")


class GlobSyntaxError(ValueError):
    """Raised when a glob cannot be compiled; the message says where and why."""


def is_glob(pattern: str) -> bool:
    """Return whether `pattern` contains glob syntax (`*`, `?` or `[`)."""
    return not _GLOB_CHARS.isdisjoint(pattern)


def glob_to_regex(pattern: str) -> str:
    """Translate a glob into a regular expression source (without anchors).

    Raises:
        GlobSyntaxError: The pattern is empty, has an unbalanced `[`, or a reversed range such as `[z-a]`.
    """
    if not pattern:
        raise GlobSyntaxError("the pattern is empty")
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            while i < n and pattern[i] == "*":
                i += 1
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            start = i - 1
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                raise GlobSyntaxError(f"unbalanced [ at position {start}")
            out.append(_char_class(pattern[i:j], start))
            i = j + 1
        else:
            out.append(re.escape(c))
    return "".join(out)


def _char_class(body: str, start: int) -> str:
    negate = body.startswith("!")
    if negate:
        body = body[1:]
    items: list[str] = []
    k = 0
    while k < len(body):
        if k + 2 < len(body) and body[k + 1] == "-":
            lo, hi = body[k], body[k + 2]
            if lo > hi:
                raise GlobSyntaxError(f"reversed range {lo}-{hi} in the [...] at position {start}")
            items.append(f"{re.escape(lo)}-{re.escape(hi)}")
            k += 3
        else:
            items.append(re.escape(body[k]))
            k += 1
    return "[" + ("^" if negate else "") + "".join(items) + "]"


def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile one glob into a regex to use with `fullmatch`."""
    return re.compile(f"(?s:{glob_to_regex(pattern)})")


@dataclass(frozen=True, slots=True)
class NameMatcher(Generic[T]):
    """Finds the entry for a tool name among exact names and globs.

    An exact name wins over any glob; among globs a longer pattern wins over a shorter one, and ties go to the
    earlier entry. All globs are compiled into one alternation in that order, so one `fullmatch` finds the winner.
    """

    exact: dict[str, T]
    globs: tuple[tuple[str, T], ...]
    regex: re.Pattern[str] | None

    @classmethod
    def build(cls, entries: Sequence[tuple[str, T]]) -> "NameMatcher[T]":
        """Build a matcher from `(pattern, value)` pairs in document order; invalid globs are skipped."""
        exact: dict[str, T] = {}
        globs: list[tuple[int, str, T, str]] = []
        for index, (pattern, value) in enumerate(entries):
            if not is_glob(pattern):
                exact.setdefault(pattern, value)
                continue
            try:
                source = glob_to_regex(pattern)
            except GlobSyntaxError:
                continue
            globs.append((index, pattern, value, source))
        globs.sort(key=lambda g: (-len(g[1]), g[0]))
        regex = re.compile("|".join(f"(?s:({g[3]}))" for g in globs)) if globs else None
        return cls(exact, tuple((g[1], g[2]) for g in globs), regex)

    def find(self, name: str) -> tuple[str, T] | None:
        """Return the winning `(pattern, value)` for `name`, or None when nothing matches."""
        value = self.exact.get(name)
        if value is not None:
            return name, value
        if self.regex is None:
            return None
        match = self.regex.fullmatch(name)
        if match is None or match.lastindex is None:
            return None
        return self.globs[match.lastindex - 1]
