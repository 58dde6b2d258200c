"""Replaying recorded calls against a candidate policy: what it would decide differently, per tool.

Pure: the caller reads the audit log and hands over `RecordedCall`s, oldest first. Rate limits are replayed on
fresh counters at the recorded instants, so a limit sees the same traffic the recording saw from its first call.
"""

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from policies.evaluate import evaluate
from policies.explain import DecisionKind, kind_of
from policies.limits import RateLimiter
from policies.model import Policy, ToolCall
from policies.values import show

__all__ = ["RecordedCall", "ReplayReport", "ToolReplay", "format_replay", "replay"]

EXAMPLES = 3


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One call as the audit log recorded it, with the decision it got then.

    `redacted` says some argument values were stored as "[redacted]": conditions on them see that text, not the
    value the agent sent, so their replayed decision may differ from what the real call would get.
    """

    at: float
    server: str
    tool: str
    identity: str
    arguments: Mapping[str, Any]
    decision: DecisionKind
    rule: str
    redacted: bool = False
    label: str = ""


@dataclass(frozen=True, slots=True)
class Example:
    """One recorded call whose decision changes: the call, and the rules that decided it then and now."""

    call: RecordedCall
    old_rule: str
    new_rule: str


@dataclass(slots=True)
class ToolReplay:
    """One tool's replay: counts of (old decision, new decision), and a few examples of each change."""

    tool: str
    transitions: Counter[tuple[DecisionKind, DecisionKind]] = field(default_factory=Counter)
    examples: dict[tuple[DecisionKind, DecisionKind], list[Example]] = field(default_factory=dict)
    redacted: int = 0

    @property
    def calls(self) -> int:
        return sum(self.transitions.values())

    @property
    def changed(self) -> int:
        return sum(n for (old, new), n in self.transitions.items() if old is not new)


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """Every tool's replay, by name, and how many calls had redacted arguments."""

    tools: dict[str, ToolReplay]
    policy_version: str

    @property
    def calls(self) -> int:
        return sum(t.calls for t in self.tools.values())

    @property
    def changed(self) -> int:
        return sum(t.changed for t in self.tools.values())

    @property
    def redacted(self) -> int:
        return sum(t.redacted for t in self.tools.values())


def replay(policy: Policy, calls: Iterable[RecordedCall]) -> ReplayReport:
    """Decide every recorded call again under `policy`, in order, and compare with what it got then.

    Args:
        policy: The candidate policy.
        calls: Recorded calls, oldest first.

    Returns:
        Per tool, how many calls kept or changed their decision, with examples of each change.
    """
    limiter = RateLimiter()
    tools: dict[str, ToolReplay] = {}
    for recorded in calls:
        call = ToolCall(recorded.server, recorded.tool, recorded.arguments, recorded.identity)
        decision = evaluate(policy, call, limiter, recorded.at)
        new = kind_of(decision)
        entry = tools.setdefault(recorded.tool, ToolReplay(recorded.tool))
        key = (recorded.decision, new)
        entry.transitions[key] += 1
        if recorded.redacted:
            entry.redacted += 1
        if recorded.decision is not new:
            examples = entry.examples.setdefault(key, [])
            if len(examples) < EXAMPLES:
                examples.append(Example(recorded, recorded.rule, decision.rule))
    return ReplayReport(dict(sorted(tools.items())), policy.digest)


def format_replay(report: ReplayReport, *, all_tools: bool = False) -> list[str]:
    """Render a report as lines: per tool its decisions old -> new with counts, then examples of each change.

    Tools whose decisions all stay the same get one line, or none unless `all_tools`.
    """
    lines = [f"replayed {report.calls} call(s) against policy {report.policy_version}: {report.changed} would change"]
    for entry in report.tools.values():
        if not entry.changed and not all_tools:
            continue
        redacted = f" ({entry.redacted} with redacted arguments)" if entry.redacted else ""
        lines.append(f"{entry.tool}: {entry.calls} call(s){redacted}, {entry.changed} would change")
        for (old, new), count in sorted(entry.transitions.items(), key=lambda item: (-item[1], item[0])):
            lines.append(f"  {old} -> {new}: {count}" + ("" if old is not new else " (unchanged)"))
        for (old, new), examples in entry.examples.items():
            for example in examples:
                call = example.call
                lines.append(
                    f"    e.g. {call.label or call.at} {call.identity} {show(dict(call.arguments))}: "
                    f"{old} by {example.old_rule or '?'} -> {new} by {example.new_rule}"
                )
    if report.redacted:
        lines.append(
            f'note: {report.redacted} call(s) had redacted arguments, stored as "[redacted]": they were replayed with '
            "that text in place of the values, so conditions on those arguments may not decide as they would for the "
            "real calls"
        )
    return lines
