"""What a held call does, at a glance: a one-line summary of its arguments, its age, a tool's description on one line.

Every place that lists requests (the web cards, `signoff approvals list`, Slack, webhooks) shows the same line, so it
is computed here, once, from the *redacted* arguments only: a value the policy hides is "[redacted]" here too. The
arguments come from the agent, so nothing here trusts them: control and format characters (a newline, NUL, a bidi
override) and lone surrogates are shown as escapes, every value is shortened, the work done on a huge value is
bounded, and the line never exceeds the length asked for.
"""

import re
import unicodedata
from collections.abc import Mapping
from datetime import datetime
from typing import Any

__all__ = ["MAX_SUMMARY", "ago", "arguments_summary", "clean", "compact", "one_line", "ordered_arguments", "shortened"]

MAX_SUMMARY = 200  # characters of the whole line
MAX_VALUE = 48  # characters of one value before it is shortened
MAX_KEY = 32
REDACTED = "[redacted]"  # what `approvals.audit.redacted` puts where a hidden value was
_BARE = re.compile(r"[\w./:@+,~#%-]+")  # shown without quotes: paths, ids, host names, emails
_UNSAFE = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def clean(text: str, most: int = 10_000, *, lines: bool = False) -> str:
    """`text` (its first `most` characters) with every control, format, private-use, unassigned or surrogate
    character written as its escape (`\\n`, `\\x00`, `\\u202e`): one line (`lines`: newlines and tabs kept),
    nothing a terminal or a page acts on."""
    out = []
    for char in text[:most]:
        if lines and char in "\n\t":
            out.append(char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif unicodedata.category(char) in _UNSAFE:
            out.append(_escape(char))
        else:
            out.append(char)
    return "".join(out)


def _clip(text: str, most: int) -> str:
    return text if len(text) <= most else text[: max(0, most - 1)] + "…"


def one_line(text: str | None, most: int = 300) -> str:
    """`text` (a tool's description, a reason) on one line: runs of whitespace become one space, unsafe characters
    escapes, and at most `most` characters, with "…" where it was cut."""
    if not text:
        return ""
    squeezed = " ".join(text[: most * 4].split())
    return _clip(clean(squeezed, most + 1), most)


def compact(value: Any, budget: int, depth: int = 0) -> str | None:
    """A small value as compact JSON-like text within `budget` characters, or None if it does not fit (the walk
    stops as soon as it is over, so a huge list costs no more than a small one)."""
    if depth > 3:
        return None
    if isinstance(value, str):
        if "\n" in value[: budget + 1] or len(value) > budget:
            return None
        shown = clean(value, budget + 1)
        if shown == REDACTED:
            return shown
        text = shown if _BARE.fullmatch(shown) and depth == 0 else '"' + shown.replace('"', '\\"') + '"'
        return text if len(text) <= budget else None
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int | float):
        text = repr(value)
        return text if len(text) <= budget else None
    if isinstance(value, list | tuple):
        parts, used = [], 2
        for item in value:
            part = compact(item, budget - used, depth + 1)
            if part is None:
                return None
            parts.append(part)
            used += len(part) + 2
            if used > budget:
                return None
        return "[" + ", ".join(parts) + "]"
    if isinstance(value, Mapping):
        parts, used = [], 2
        for key, item in value.items():
            name = clean(str(key), MAX_KEY + 1)
            part = compact(item, budget - used - len(name) - 1, depth + 1)
            if part is None or len(name) > MAX_KEY:
                return None
            parts.append(f"{name}={part}")
            used += len(parts[-1]) + 2
            if used > budget:
                return None
        return "{" + ", ".join(parts) + "}"
    return None


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def shortened(value: Any) -> str:
    """A value too long to show whole, as what it is: `<200 lines>`, `"SELECT * FROM…" (4,096 chars)`, `[3 items]`."""
    if isinstance(value, str):
        lines = value.count("\n") + (0 if value.endswith("\n") else 1)
        if lines > 1:
            return f"<{_count(lines, 'line')}>"
        head = clean(value[:MAX_VALUE], MAX_VALUE)
        return f'"{_clip(head, 30)}" ({_count(len(value), "char")})'
    if isinstance(value, list | tuple):
        return f"[{_count(len(value), 'item')}]"
    if isinstance(value, Mapping):
        return f"{{{_count(len(value), 'key')}}}"
    return _clip(clean(str(value), MAX_VALUE), MAX_VALUE)


def ordered_arguments(arguments: Any) -> list[tuple[str, Any, bool]]:
    """The top-level arguments as (name, value, short), short scalar ones first, each group by name: the order
    every view lists them in. `short`: the value fits on one line of a summary as it is."""
    if not isinstance(arguments, Mapping):
        return [("", arguments, compact(arguments, MAX_VALUE) is not None)]
    items = [(str(key), value, compact(value, MAX_VALUE) is not None) for key, value in arguments.items()]
    return sorted(items, key=lambda item: (not item[2], isinstance(item[1], Mapping | list), item[0]))


def arguments_summary(arguments: Any, most: int = MAX_SUMMARY) -> str:
    """One line that says what a call's (redacted) arguments are, at most `most` characters: short scalar
    arguments first and whole (`path=/srv/config.yaml`), long ones as what they are (`content=<200 lines>`).

    Args:
        arguments: the call's arguments with the policy's redactions applied (never the raw ones).
        most: the longest the line may be.

    Returns:
        The line; "(no arguments)" for none.
    """
    if most < 12:
        raise ValueError(f"a summary needs at least 12 characters, not {most}")
    if isinstance(arguments, Mapping) and not arguments:
        return "(no arguments)"
    parts = []
    for name, value, short in ordered_arguments(arguments):
        shown = compact(value, MAX_VALUE) if short else shortened(value)
        key = _clip(clean(name, MAX_KEY + 1), MAX_KEY)
        parts.append(f"{key}={shown}" if key else str(shown))
    line = ""
    for index, part in enumerate(parts):
        joined = f"{line} {part}" if line else part
        left = len(parts) - index - 1
        tail = f" (+{left} more)" if left else ""
        if len(joined) + len(tail) > most:
            rest = f"(+{len(parts) - index} more)"
            if not line:  # even the first does not fit: cut it
                return _clip(part, most)
            return line + " " + rest if len(line) + 1 + len(rest) <= most else _clip(line, most)
        line = joined
    return line


def ago(moment: datetime, now: datetime) -> str:
    """How long ago `moment` was, as people say it: "just now", "3 min ago", "2 h 5 min ago", "3 days ago"."""
    seconds = int((now - moment).total_seconds())
    if seconds < 10:
        return "just now"
    if seconds < 60:
        return f"{seconds} s ago"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min ago"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min ago" if minutes else f"{hours} h ago"
    return f"{hours // 24} days ago"
