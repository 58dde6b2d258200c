"""The arguments of a request as the detail page lays them out: short ones first, one line each; multi-line strings
as blocks; long values folded. From the redacted arguments only, in the order `approvals.summary` gives them.

Values come from the agent: the template escapes them, and control and format characters are shown as escapes
(`approvals.summary.clean`), so a bidi override or a NUL cannot disguise what a value says.
"""

import json
from dataclasses import dataclass
from typing import Any

from approvals.summary import clean, compact, ordered_arguments, shortened

__all__ = ["Argument", "laid_out"]

BLOCK_LINES = 24  # a multi-line string up to this many lines is shown open, as a block
BLOCK_CHARS = 3000
MAX_SHOWN = 100_000  # characters of one folded value put in the page; the API has it whole
SHORT = 80


@dataclass(frozen=True, slots=True)
class Argument:
    """One top-level argument: `kind` is "short" (one line), "block" (a multi-line string, open) or "folded"
    (in a <details>, `label` saying what it is: "<200 lines>", "[3 items]")."""

    name: str
    kind: str
    text: str
    label: str = ""
    cut: int = 0  # characters left out of `text` (a huge value), 0 when whole


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)


def laid_out(arguments: Any) -> list[Argument]:
    """The arguments as the page shows them, short ones first."""
    rows = []
    for name, value, _short in ordered_arguments(arguments):
        key = clean(name, 200)
        if isinstance(value, str) and "\n" not in value and len(value) <= SHORT:
            rows.append(Argument(key, "short", clean(value, SHORT)))
            continue
        small = None if isinstance(value, str) else compact(value, SHORT)
        if small is not None:
            rows.append(Argument(key, "short", small))
            continue
        text = _text(value)
        if isinstance(value, str) and text.count("\n") < BLOCK_LINES and len(text) <= BLOCK_CHARS:
            rows.append(Argument(key, "block", clean(text, BLOCK_CHARS, lines=True)))
            continue
        cut = max(0, len(text) - MAX_SHOWN)
        rows.append(Argument(key, "folded", clean(text, MAX_SHOWN, lines=True), shortened(value), cut))
    return rows
