"""Errors raised by the policies package, and the `Fault` that describes one problem in a policy document.

Nothing here does I/O: a fault carries the JSON path of the problem so callers can print it next to their file name.
"""

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Fault:
    """One problem found in a policy document.

    Attributes:
        path: JSON path of the offending value, e.g. `$.tools["execute_sql"].approve_if[0].op`.
        message: What is wrong, in one sentence.
        hint: How to fix it, when there is something useful to say.
        severity: `error` stops the policy from loading; `warning` does not.
    """

    path: str
    message: str
    hint: str | None = None
    severity: Severity = "error"


def format_fault(fault: Fault, source: str) -> str:
    """Render a fault as `source: $.path: error: message (hint: ...)`.

    Args:
        fault: The fault to render.
        source: Where the document came from (a file name), shown first.

    Returns:
        One line of text.
    """
    text = f"{source}: {fault.path}: {fault.severity}: {fault.message}"
    if fault.hint:
        text += f" (hint: {fault.hint})"
    return text


class PolicyError(Exception):
    """Root of every error raised by the policies package."""


def _invalid(source: str, what: str, listed: list[Fault]) -> str:
    lines = "\n".join(format_fault(f, source) for f in listed)
    noun = "error" if len(listed) == 1 else "errors"
    return f"{source}: {what} ({len(listed)} {noun}):\n{lines}"


class PolicyInvalid(PolicyError, ValueError):
    """Raised when a policy document has at least one error-severity fault; `.faults` holds warnings too."""

    def __init__(self, source: str, faults: list[Fault]) -> None:
        super().__init__(_invalid(source, "policy is invalid", [f for f in faults if f.severity == "error"]))
        self.source = source
        self.faults = faults


class CasesInvalid(PolicyError, ValueError):
    """Raised when a case file has at least one fault; `.faults` lists them all, each with its JSON path."""

    def __init__(self, source: str, faults: list[Fault]) -> None:
        super().__init__(_invalid(source, "test cases are invalid", faults))
        self.source = source
        self.faults = faults
