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


def literal_prefix(pattern: str) -> str:
    """Return the characters before the first glob character: every name the glob matches starts with them."""
    for i, c in enumerate(pattern):
        if c in _GLOB_CHARS:
            return pattern[:i]
    return pattern


@dataclass(frozen=True, slots=True)
class _Glob(Generic[T]):
    rank: int  # position in specificity order: lower wins
    pattern: str
    value: T
    regex: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class NameMatcher(Generic[T]):
    """Finds the entry for a tool name among exact names and globs.

    An exact name wins over any glob; among globs a longer pattern wins over a shorter one, and ties go to the
    earlier entry. Globs are indexed by their literal prefix (`service1_delete_` for `service1_delete_*`), so a
    lookup tests only the few globs whose prefix the name starts with, not all of them.
    """

    exact: dict[str, T]
    by_prefix: dict[str, tuple[_Glob[T], ...]]
    prefix_lengths: tuple[int, ...]

    @classmethod
    def build(cls, entries: Sequence[tuple[str, T]]) -> "NameMatcher[T]":
        """Build a matcher from `(pattern, value)` pairs in document order; invalid globs are skipped."""
        exact: dict[str, T] = {}
        globs: list[tuple[int, str, T, re.Pattern[str]]] = []
        for index, (pattern, value) in enumerate(entries):
            if not is_glob(pattern):
                exact.setdefault(pattern, value)
                continue
            try:
                regex = compile_glob(pattern)
            except GlobSyntaxError:
                continue
            globs.append((index, pattern, value, regex))
        globs.sort(key=lambda g: (-len(g[1]), g[0]))
        buckets: dict[str, list[_Glob[T]]] = {}
        for rank, (_, pattern, value, regex) in enumerate(globs):
            buckets.setdefault(literal_prefix(pattern), []).append(_Glob(rank, pattern, value, regex))
        by_prefix = {prefix: tuple(bucket) for prefix, bucket in buckets.items()}
        return cls(exact, by_prefix, tuple(sorted({len(p) for p in by_prefix})))

    def find(self, name: str) -> tuple[str, T] | None:
        """Return the winning `(pattern, value)` for `name`, or None when nothing matches."""
        if name in self.exact:
            return name, self.exact[name]
        best: _Glob[T] | None = None
        for length in self.prefix_lengths:
            if length > len(name):
                break
            for glob in self.by_prefix.get(name[:length], ()):
                if best is not None and glob.rank >= best.rank:
                    break  # buckets are in rank order: nothing later in this one can win
                if glob.regex.fullmatch(name):
                    best = glob
                    break
        return None if best is None else (best.pattern, best.value)
