"""Who may decide a request at a given moment, how far each of its thresholds is, and when it next needs a notice.

Pure reading of one request row and its votes: no session, no commits. The row's times are the truth: an
escalation counts from `requested_at + after` whether or not it has been announced yet, so a restart or another
replica can never change who may decide.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from approvals.models import ApprovalDecision, ApprovalRequest, Verdict
from policies import ApprovalSpec, Escalation, Threshold

__all__ = [
    "Progress",
    "due_escalations",
    "encode_escalations",
    "encode_thresholds",
    "escalations",
    "matches",
    "next_notice",
    "progress",
    "settled_by",
    "who_may_decide",
]


@dataclass(frozen=True, slots=True)
class Progress:
    """One threshold as it stands: `count` of `approvers` needed, and who of them has approved."""

    count: int
    approvers: tuple[str, ...]
    approved_by: tuple[str, ...]

    @property
    def met(self) -> bool:
        return len(self.approved_by) >= self.count


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def encode_thresholds(spec: ApprovalSpec) -> str:
    """The rule's `quorum.any_of` as the request row keeps it ("[]": the plain quorum)."""
    return json.dumps([{"count": t.count, "approvers": list(t.approvers)} for t in spec.thresholds])


def encode_escalations(spec: ApprovalSpec) -> str:
    return json.dumps(
        [{"after": e.after_seconds, "approvers": list(e.approvers), "channel": e.channel} for e in spec.escalate]
    )


def thresholds(request: ApprovalRequest) -> tuple[Threshold, ...]:
    """The request's entries, of which any one met settles it: its any_of, or `quorum` of `approvers`."""
    stored: list[dict[str, Any]] = json.loads(request.thresholds or "[]")
    if stored:
        return tuple(Threshold(int(t["count"]), tuple(t["approvers"])) for t in stored)
    return (Threshold(request.quorum, tuple(json.loads(request.approvers))),)


def escalations(request: ApprovalRequest) -> tuple[Escalation, ...]:
    stored: list[dict[str, Any]] = json.loads(request.escalate or "[]")
    return tuple(Escalation(float(e["after"]), tuple(e["approvers"]), e.get("channel")) for e in stored)


def escalation_at(request: ApprovalRequest, escalation: Escalation) -> datetime:
    return _utc(request.requested_at) + timedelta(seconds=escalation.after_seconds)


def due_escalations(request: ApprovalRequest, now: datetime) -> tuple[Escalation, ...]:
    """The escalations whose time has come at `now`, in order."""
    return tuple(e for e in escalations(request) if escalation_at(request, e) <= now)


def matches(listed: Sequence[str], name: str, groups: Sequence[str]) -> bool:
    """Whether the person `name` in `groups` is one of `listed` (names and `group:NAME`s)."""
    return name in listed or any(f"group:{g}" in listed for g in groups)


def _widened(request: ApprovalRequest, now: datetime) -> tuple[tuple[str, ...], ...]:
    """Each threshold's approvers at `now`: an escalation that came due joins every entry that names anyone."""
    extra = tuple(a for e in due_escalations(request, now) for a in e.approvers)
    return tuple(
        t.approvers + tuple(a for a in extra if a not in t.approvers) if t.approvers else ()
        for t in thresholds(request)
    )


def who_may_decide(request: ApprovalRequest, now: datetime) -> tuple[str, ...]:
    """Everyone who may decide at `now` (names and `group:NAME`s); empty: any configured approver."""
    widened = _widened(request, now)
    if any(not listed for listed in widened):
        return ()
    return tuple(dict.fromkeys(a for listed in widened for a in listed))


def progress(request: ApprovalRequest, decisions: Sequence[ApprovalDecision], now: datetime) -> tuple[Progress, ...]:
    """Each threshold against the approvals so far. The agent that made the call counts only where the rule lets
    it decide at all (`allow_self_approval`); a vote counts with the groups its approver had when voting."""
    voters = [
        (d.approver, tuple(json.loads(d.groups or "[]")))
        for d in decisions
        if d.verdict == Verdict.APPROVE and (d.approver != request.identity or request.allow_self_approval)
    ]
    return tuple(
        Progress(
            t.count,
            listed,
            tuple(name for name, groups in voters if not listed or matches(listed, name, groups)),
        )
        for t, listed in zip(thresholds(request), _widened(request, now), strict=True)
    )


def settled_by(request: ApprovalRequest, decisions: Sequence[ApprovalDecision], now: datetime) -> bool:
    """Whether the approvals so far meet any threshold."""
    return any(p.met for p in progress(request, decisions, now))


def next_notice(request: ApprovalRequest, after: datetime) -> datetime | None:
    """When the request next needs a notice after `after` (the next unannounced escalation, or the next reminder),
    or None when nothing more comes before its deadline."""
    due: list[datetime] = [escalation_at(request, e) for e in escalations(request)[request.escalated :]]
    if request.remind_seconds:
        since = _utc(request.reminded_at or request.requested_at)
        reminder = since + timedelta(seconds=request.remind_seconds)
        while reminder <= after:  # a reminder missed while signoff was down is not sent late, once per interval
            reminder += timedelta(seconds=request.remind_seconds)
        due.append(reminder)
    upcoming = [at for at in due if at < _utc(request.deadline)]
    return min(upcoming) if upcoming else None
