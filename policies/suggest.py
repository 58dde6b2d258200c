"""A first policy for a server, from its tools: each tool classified (`policies.risk`) and given a matching rule.

Pure: tools in, an editable policy document and a report out. The mapping is read -> allowed; write -> allowed
within 30 calls a minute; execute -> allowed within 10 a minute; destructive -> `require_approval` (or hidden when
asked). Anything not listed, including tools the server adds later, is denied by default.
"""

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from policies.risk import Category, Classification, ToolInfo, classify

__all__ = [
    "EXECUTE_LIMIT",
    "WRITE_LIMIT",
    "SuggestedPolicy",
    "Suggestion",
    "Treatment",
    "literal_key",
    "report_lines",
    "suggest_policy",
]

WRITE_LIMIT = 30  # calls per minute per agent: a runaway loop stops quickly, a person never notices
EXECUTE_LIMIT = 10
DEFAULT_REASON = "this tool is not in the policy: new tools are denied until someone reviews them"


class Treatment(StrEnum):
    """What the suggested policy does with a tool."""

    ALLOW = "allow"
    LIMIT = "allow, rate-limited"
    APPROVE = "require approval"
    HIDE = "hide"


@dataclass(frozen=True, slots=True)
class Suggestion:
    """One tool's classification and what the suggested policy does with it (`per_minute` for a limit)."""

    classification: Classification
    treatment: Treatment
    per_minute: int | None = None

    @property
    def summary(self) -> str:
        """The treatment in a few words, e.g. `allow, 30/minute`."""
        if self.treatment is Treatment.LIMIT:
            return f"allow, {self.per_minute}/minute"
        return str(self.treatment)


@dataclass(frozen=True, slots=True)
class SuggestedPolicy:
    """The suggestion for a whole server: per-tool suggestions, the document as JSON text, and skipped tools."""

    suggestions: tuple[Suggestion, ...]
    text: str
    skipped: tuple[tuple[str, str], ...] = ()  # (tool name, why)

    def document(self) -> dict[str, Any]:
        """The policy document as parsed JSON."""
        parsed: dict[str, Any] = json.loads(self.text)
        return parsed


_GLOB_ESCAPES = {"*": "[*]", "?": "[?]", "[": "[[]"}
_ORDER = {c: i for i, c in enumerate(Category)}


def literal_key(name: str) -> str:
    """Return a `tools`/`hide` key that matches exactly `name`, escaping glob characters (`a*b` -> `a[*]b`)."""
    return "".join(_GLOB_ESCAPES.get(c, c) for c in name)


def _treat(c: Classification, hide_destructive: bool) -> Suggestion:
    if c.category is Category.READ:
        return Suggestion(c, Treatment.ALLOW)
    if c.category is Category.WRITE:
        return Suggestion(c, Treatment.LIMIT, WRITE_LIMIT)
    if c.category is Category.EXECUTE:
        return Suggestion(c, Treatment.LIMIT, EXECUTE_LIMIT)
    return Suggestion(c, Treatment.HIDE if hide_destructive else Treatment.APPROVE)


def _rule(s: Suggestion, approvers: Sequence[str]) -> dict[str, Any]:
    c = s.classification
    rule: dict[str, Any] = {}
    if s.treatment is Treatment.APPROVE:
        rule["action"] = "require_approval"
    rule["reason"] = f"{c.category} tool, {c.risk} risk: {c.reason}"
    if s.per_minute is not None:
        rule["limits"] = [{"counter": f"{c.tool}_rate", "window": "minute", "max": s.per_minute, "scope": "grant"}]
    if s.treatment is Treatment.APPROVE and approvers:
        rule["approval"] = {"approvers": list(approvers)}
    return rule


def suggest_policy(
    tools: Iterable[ToolInfo], *, hide_destructive: bool = False, approvers: Sequence[str] = ()
) -> SuggestedPolicy:
    """Classify every tool and write a policy that treats each by its category.

    Args:
        tools: The server's tools, as it lists them.
        hide_destructive: Hide destructive tools instead of requiring approval for them.
        approvers: Names (or `group:NAME`) who may approve the destructive tools; empty means any approver.

    Returns:
        The suggestions (read, write, execute, destructive; by name within each) and the policy as JSON text,
        which `load_policy` accepts. A tool with an empty name, or listed twice, is skipped and said so.
    """
    seen: set[str] = set()
    skipped: list[tuple[str, str]] = []
    suggestions: list[Suggestion] = []
    for tool in tools:
        if not tool.name:
            skipped.append((tool.name, "the tool has no name"))
        elif tool.name in seen:
            skipped.append((tool.name, "the server lists this name more than once; the first is used"))
        else:
            seen.add(tool.name)
            suggestions.append(_treat(classify(tool), hide_destructive))
    suggestions.sort(key=lambda s: (_ORDER[s.classification.category], s.classification.tool))

    doc: dict[str, Any] = {"version": "1", "default": "deny", "default_reason": DEFAULT_REASON}
    hidden = [literal_key(s.classification.tool) for s in suggestions if s.treatment is Treatment.HIDE]
    if hidden:
        doc["hide"] = hidden
    listed = [s for s in suggestions if s.treatment is not Treatment.HIDE]
    doc["tools"] = {literal_key(s.classification.tool): _rule(s, approvers) for s in listed}
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    return SuggestedPolicy(tuple(suggestions), text, tuple(skipped))


_NAME_WIDTH = 40


def report_lines(suggested: SuggestedPolicy) -> list[str]:
    """One line per tool (name, category, risk, treatment, reason), then skipped tools and a count per category."""
    rows = suggested.suggestions
    width = min(max((len(s.classification.tool) for s in rows), default=4), _NAME_WIDTH)
    lines = [f"{'tool':<{width}}  {'category':<11}  {'risk':<8}  {'suggested':<18}  reason"]
    for s in rows:
        c = s.classification
        lines.append(f"{c.tool:<{width}}  {c.category:<11}  {c.risk:<8}  {s.summary:<18}  {c.reason}")
    for name, why in suggested.skipped:
        lines.append(f"skipped {json.dumps(name, ensure_ascii=False)}: {why}")
    counts = {c: sum(1 for s in rows if s.classification.category is c) for c in Category}
    noun = "tool" if len(rows) == 1 else "tools"
    lines.append(f"{len(rows)} {noun}: " + ", ".join(f"{n} {c}" for c, n in counts.items()))
    return lines
