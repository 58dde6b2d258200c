"""The approval lifecycle: request, decide, expire, execute once. Every transition is a compare-and-set.

Each function takes an open `Session` and commits its own transaction, together with the audit rows that
record it, so a state change and its audit row land together or not at all. `UPDATE ... WHERE status = ?`
is the only way a status changes: of two clicks, retries, replicas or a click racing the deadline, the one
whose update touches the row wins and every other loses cleanly.
"""

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import select as select_columns
from sqlalchemy import text, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from approvals.audit import AuditRecord, append, canonical_json, digest_arguments, displayable, redacted
from approvals.edits import arguments_diff, restore_redacted
from approvals.errors import AlreadyDecided, ApprovalNotFound, EditRefused, GrantNotAllowed, InvalidReason, NotAllowed
from approvals.grants import create_grant, grant_refusal
from approvals.models import ApprovalDecision, ApprovalRequest, ApprovalStatus, AuditKind, Grant, Verdict
from approvals.reasons import reason_problem
from approvals.summary import arguments_summary, one_line
from approvals.thresholds import (
    due_escalations,
    encode_escalations,
    encode_thresholds,
    escalations,
    next_notice,
    progress,
    who_may_decide,
)
from policies import ApprovalSpec, ToolCall
from policies.model import DEFAULT_USE_WITHIN

FINAL_REFUSALS = (ApprovalStatus.REJECTED, ApprovalStatus.EXPIRED, ApprovalStatus.CANCELLED)
GATEWAY_STOPPED = "gateway_stopped"  # the outcome of a call whose gateway stopped while it ran
POLICY_CHANGED = "policy_changed"  # the outcome of a request withdrawn because the policy changed (approvals.binding)
APPROVAL_UNUSED = "approval_unused"  # the outcome of an approval nobody used within the rule's `use_within`
UNKNOWN_RESULT = "signoff stopped while the approved call ran upstream; whether it took effect is unknown"

SWEEP_LOCK = 7305925  # the PostgreSQL advisory lock one expiry sweep holds at a time (the audit chain has 7305924)


@dataclass(frozen=True, slots=True)
class Approver:
    """A person who may decide requests, as the configuration names them."""

    name: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CallForApproval:
    """A tool call that a policy sent for approval, with the rule that did."""

    call: ToolCall
    rule: str
    policy_version: str
    reason: str
    spec: ApprovalSpec
    redact: tuple[str, ...] = ()
    grant_max: float | None = None
    description: str = ""  # the tool's own description, from the upstream's tools/list


MAX_DESCRIPTION = 2000  # characters of a tool's description kept with a request


@dataclass(frozen=True, slots=True)
class VoteResult:
    """What a decision did: the request as it now stands, whether this vote settled it, and the grant it gave."""

    request: ApprovalRequest
    settled: bool
    approvals: int
    grant: Grant | None = None
    decisions: Sequence[ApprovalDecision] = ()


@dataclass(frozen=True, slots=True)
class Notice:
    """A notice that came due for a pending request: an escalation (`escalation` is its index in the rule's
    `escalate`) or, with `escalation` None, a reminder to its current approvers."""

    request_id: UUID
    escalation: int | None = None


@dataclass(frozen=True, slots=True)
class Standing:
    """Where a request stands, as a held call needs it each time it wakes; `claimed`: this call runs it now.

    A claimed request approved with edits carries what the call runs with instead: `edited_arguments` (canonical
    JSON), who approved them, and the request's redacted paths (to say what changed without showing them).
    """

    status: str
    deadline: datetime
    claimed: bool = False
    edited_arguments: str | None = None
    approved_by: str | None = None
    redact: str = "[]"
    expired_now: bool = False  # this look found the approval unused past its `use_within` and expired it


def as_utc(moment: datetime) -> datetime:
    """SQLite hands datetimes back naive; every one signoff stores is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _audit(session: Session, request: ApprovalRequest, kind: AuditKind, **fields: Any) -> None:
    append(
        session,
        [
            AuditRecord(
                kind=kind,
                server=request.server,
                tool=request.tool,
                identity=request.identity,
                rule=request.rule,
                policy_version=request.policy_version,
                args_digest=request.args_digest,
                detail=f"approval {request.id}" + (f": {fields.pop('detail')}" if "detail" in fields else ""),
                **fields,
            )
        ],
    )


def _cas(session: Session, request_id: UUID, expected: Sequence[str], **values: Any) -> bool:
    result = session.execute(
        update(ApprovalRequest)
        .where(col(ApprovalRequest.id) == request_id, col(ApprovalRequest.status).in_(list(expected)))
        .values(**values)
    )
    return isinstance(result, CursorResult) and result.rowcount == 1


def get_request(session: Session, request_id: UUID) -> ApprovalRequest:
    """The request with `request_id`.

    Raises:
        ApprovalNotFound: no such request.
    """
    request = session.get(ApprovalRequest, request_id)
    if request is None:
        raise ApprovalNotFound(request_id)
    return request


def find_reusable(
    session: Session, call: ToolCall, digest: str, now: datetime, remember: timedelta
) -> ApprovalRequest | None:
    """The request a repeat of `call` joins: pending or approved-not-yet-run, or refused within `remember`."""
    query = (
        select(ApprovalRequest)
        .where(
            col(ApprovalRequest.identity) == call.identity,
            col(ApprovalRequest.server) == call.server,
            col(ApprovalRequest.tool) == call.tool,
            col(ApprovalRequest.args_digest) == digest,
        )
        .order_by(col(ApprovalRequest.requested_at).desc())
        .limit(1)
    )
    latest = session.exec(query).first()
    if latest is None:
        return None
    if latest.status in (ApprovalStatus.PENDING, ApprovalStatus.APPROVED, ApprovalStatus.EXECUTING):
        return latest
    if latest.status == ApprovalStatus.CANCELLED and latest.outcome != POLICY_CHANGED:
        return None  # the agent's cancellation was its choice, not a decision: its repeat asks anew
    # A call the gateway stopped during is told its result is unknown, like a refusal, not asked to approve it again.
    stopped = latest.status == ApprovalStatus.FAILED and latest.outcome == GATEWAY_STOPPED
    finished = latest.finished_at if stopped else latest.responded_at or latest.finished_at
    if (stopped or latest.status in FINAL_REFUSALS) and finished is not None and as_utc(finished) >= now - remember:
        return latest
    return None


def last_run(session: Session, request: ApprovalRequest, now: datetime, remember: timedelta) -> ApprovalRequest | None:
    """The latest earlier request for the same call as `request` that was let through and run, within `remember`.

    A repeat of a call that ran is a new call and asks anew; when its agent never read the result (signoff was
    killed after the outcome was committed, or the client gave up), it must hear that the call already ran, or a
    second approval runs it twice with nobody knowing.
    """
    query = (
        select(ApprovalRequest)
        .where(
            col(ApprovalRequest.identity) == request.identity,
            col(ApprovalRequest.server) == request.server,
            col(ApprovalRequest.tool) == request.tool,
            col(ApprovalRequest.args_digest) == request.args_digest,
            col(ApprovalRequest.id) != request.id,
            col(ApprovalRequest.status).in_([ApprovalStatus.EXECUTED, ApprovalStatus.FAILED]),
            col(ApprovalRequest.finished_at) >= now - remember,
        )
        .order_by(col(ApprovalRequest.finished_at).desc())
        .limit(1)
    )
    return session.exec(query).first()


def request_approval(
    session: Session, pending: CallForApproval, now: datetime, remember: timedelta
) -> tuple[ApprovalRequest, bool]:
    """Record a request for `pending`, or join the one this exact call already has.

    Args:
        session: an open session; committed.
        pending: the call and the rule that wants approval for it.
        now: the current time (UTC).
        remember: how long after a rejection or expiry a repeat is told that outcome instead of asking anew.

    Returns:
        The request and whether it was created by this call.
    """
    call = pending.call
    digest = digest_arguments(call.arguments)
    existing = find_reusable(session, call, digest, now, remember)
    if existing is not None:
        return existing, False
    request = ApprovalRequest(
        server=call.server,
        tool=call.tool,
        identity=call.identity,
        arguments=canonical_json(call.arguments),
        args_digest=digest,
        redact=json.dumps(list(pending.redact)),
        rule=pending.rule,
        policy_version=pending.policy_version,
        reason=pending.reason,
        approvers=json.dumps(list(pending.spec.approvers)),
        quorum=pending.spec.quorum,
        allow_self_approval=pending.spec.allow_self_approval,
        allow_edits=pending.spec.allow_edits,
        channel=pending.spec.channel,
        requested_at=now,
        deadline=now + timedelta(seconds=pending.spec.timeout_seconds),
        grant_max=pending.grant_max,
        thresholds=encode_thresholds(pending.spec),
        escalate=encode_escalations(pending.spec),
        remind_seconds=pending.spec.remind_seconds,
        groups=json.dumps(list(call.groups)),
        use_within=pending.spec.use_within,
        tool_description=one_line(pending.description, MAX_DESCRIPTION) or None,  # an upstream says it: no NUL
    )
    request.notice_at = next_notice(request, now)
    session.add(request)
    try:
        session.flush()
    except IntegrityError:
        # Another caller or replica created the pending request for this exact call first: join it.
        session.rollback()
        winner = find_reusable(session, call, digest, now, remember)
        if winner is None:
            raise
        return winner, False
    _audit(session, request, AuditKind.REQUESTED, arguments=canonical_json(redacted(call.arguments, pending.redact)))
    session.commit()
    session.refresh(request)
    return request, True


def may_decide(request: ApprovalRequest, approver: Approver, now: datetime | None = None) -> str | None:
    """Why `approver` may not decide `request` at `now` (default: the clock), or None when they may.

    The rule's approvers may decide from the start, and each escalation's from its `after` on.
    """
    if approver.name == request.identity and not request.allow_self_approval:
        return "the agent identity that made a call can never approve it"
    allowed = who_may_decide(request, now or datetime.now(UTC))
    if not allowed:
        return None
    if approver.name in allowed or any(f"group:{g}" in allowed for g in approver.groups):
        return None
    later = [e for e in escalations(request) if e not in due_escalations(request, now or datetime.now(UTC))]
    named = f"the rule {request.rule} names {', '.join(allowed)} as approvers"
    if any(approver.name in e.approvers or any(f"group:{g}" in e.approvers for g in approver.groups) for e in later):
        return named + "; you may decide once the request escalates to you"
    return named


def decide(
    session: Session,
    request_id: UUID,
    approver: Approver,
    verdict: Verdict,
    comment: str,
    channel: str,
    now: datetime,
    grant_seconds: float | None = None,
    arguments: Mapping[str, Any] | None = None,
) -> VoteResult:
    """Record `approver`'s verdict; settle the request when a rejection or the quorum's last approval arrives.

    Refused attempts are audited too. A repeated vote by the same person changes nothing. With `grant_seconds`,
    the approval that settles the request also grants its agent the tool for that long, in the same transaction.
    With `arguments`, the approval settles the request with those arguments instead (the call runs with them):
    the edge has checked the edited call against the policy first (`integrations.editing`); the audit row says
    both digests and what changed. Arguments equal to the original are an approval as requested.

    Raises:
        ApprovalNotFound: no such request.
        NotAllowed: this approver may not decide it (not named by the rule, or the requester themselves).
        AlreadyDecided: the request is no longer pending (including: its deadline has passed).
        GrantNotAllowed: a grant was asked for with a rejection, or beyond what the request's rule allows.
        InvalidReason: `comment` breaks the rule of `approvals.reasons` (a rejection without one, say).
        EditRefused: `arguments` came with a rejection, or with a request that needs more than one approval.
    """
    request = _open_for(session, request_id, approver, verdict, channel, now)
    bad_reason = reason_problem(comment, rejecting=verdict == Verdict.REJECT)  # after who may: the first word
    if bad_reason is not None:
        raise InvalidReason(bad_reason)
    edited = _edited(session, request, approver, verdict, channel, arguments) if arguments is not None else None
    if grant_seconds is not None:
        no_grant = (
            "a grant comes with an approval" if verdict == Verdict.REJECT else grant_refusal(request, grant_seconds)
        )
        if no_grant is not None:
            raise GrantNotAllowed(request_id, no_grant)
    vote = ApprovalDecision(
        request_id=request_id,
        approver=approver.name,
        verdict=verdict,
        comment=comment,
        channel=channel,
        at=now,
        groups=json.dumps(list(approver.groups)),
    )
    repeat = _cast(session, vote)
    if repeat is None:  # the same person's other click got there first: that vote stands, this one is a repeat
        return decide(session, request_id, approver, verdict, comment, channel, now, grant_seconds, arguments)
    votes = decisions_for(session, request_id)
    approvals = sum(1 for d in votes if d.verdict == Verdict.APPROVE)
    standing_now = progress(request, votes, now)
    kind = (
        AuditKind.REJECTED
        if verdict == Verdict.REJECT and not repeat
        else AuditKind.APPROVED
        if any(p.met for p in standing_now)
        else AuditKind.VOTED
    )
    edit = {"edited_arguments": edited} if edited is not None and kind == AuditKind.APPROVED else {}
    settled = kind != AuditKind.VOTED and _settle(session, request_id, kind, approver.name, comment, now, **edit)
    if kind != AuditKind.VOTED and not settled and not repeat:
        # Another decision settled the request between our read and our update: this one lost the race.
        session.rollback()
        current = get_request(session, request_id)
        _refuse(session, current, approver, verdict, channel, f"the request is already {current.status}")
        raise AlreadyDecided(request_id, current.status)
    if not repeat or settled:
        so_far = "; ".join(f"{len(p.approved_by)} of {p.count} approvals" for p in standing_now)
        detail = so_far if verdict == Verdict.APPROVE else comment
        shown = _edit_record(request, edit["edited_arguments"]) if edit and settled else {}
        if shown:
            detail += f"; {shown.pop('detail')}"
        _audit(session, request, kind, actor=approver.name, channel=channel, outcome=verdict, detail=detail, **shown)
    grant = None
    if settled and kind == AuditKind.APPROVED and grant_seconds is not None:
        grant = create_grant(session, request, approver.name, grant_seconds, comment, channel, now)
    session.commit()
    session.refresh(request)
    if grant is not None:
        session.refresh(grant)
    return VoteResult(
        request=request, settled=settled, approvals=approvals, grant=grant, decisions=decisions_for(session, request_id)
    )


def _edited(
    session: Session,
    request: ApprovalRequest,
    approver: Approver,
    verdict: Verdict,
    channel: str,
    arguments: Mapping[str, Any],
) -> str | None:
    """The canonical JSON of the arguments an approval edits the call to (None: unchanged), or the refusal."""
    why = (
        "edited arguments come with an approval"
        if verdict != Verdict.APPROVE
        else f"edits need a quorum of 1, and this request needs {needs} approvals"
        if (needs := max([request.quorum, *(t["count"] for t in json.loads(request.thresholds))])) > 1
        else None
    )
    if why is not None:
        _refuse(session, request, approver, verdict, channel, f"edited arguments refused: {why}")
        raise EditRefused(request.id, why)
    original = json.loads(request.arguments)
    edited = restore_redacted(original, arguments, json.loads(request.redact))
    return None if digest_arguments(edited) == request.args_digest else canonical_json(edited)


def _edit_record(request: ApprovalRequest, edited: str) -> dict[str, Any]:
    """What the audit row of an approval with edits says: both digests and the diff, in `detail`, and the edited
    arguments (redacted as the rule says) as the row's arguments."""
    redact = json.loads(request.redact)
    after = json.loads(edited)
    diff = arguments_diff(json.loads(request.arguments), after, redact)
    detail = f"arguments edited from {request.args_digest} to {digest_arguments(after)}: " + canonical_json(diff)
    return {"detail": detail, "arguments": canonical_json(redacted(after, redact))}


def _open_for(
    session: Session, request_id: UUID, approver: Approver, verdict: Verdict, channel: str, now: datetime
) -> ApprovalRequest:
    """The pending request `approver` may decide, locked; or the refusal, audited and raised (`decide` says which).

    Locked on PostgreSQL, so concurrent votes towards a quorum count each other; SQLite serialises writers. A
    request past its deadline is expired here, by the vote that found it so.
    """
    request = session.exec(
        select(ApprovalRequest).where(col(ApprovalRequest.id) == request_id).with_for_update()
    ).first()
    if request is None:
        raise ApprovalNotFound(request_id)
    refusal = may_decide(request, approver, now)
    expired_now = False
    if refusal is None and request.status == ApprovalStatus.PENDING and as_utc(request.deadline) <= now:
        expired_now = _expire(session, request, now)
        session.commit()
        session.refresh(request)
    if refusal is None and request.status == ApprovalStatus.PENDING:
        return request
    _refuse(session, request, approver, verdict, channel, refusal or f"the request is already {request.status}")
    if refusal is not None:
        raise NotAllowed(request_id, approver.name, refusal)
    raise AlreadyDecided(request_id, request.status, expired_now=expired_now)


def _refuse(
    session: Session, request: ApprovalRequest, approver: Approver, verdict: Verdict, channel: str, why: str
) -> None:
    """Audit a decision that was not taken, and why."""
    _audit(
        session, request, AuditKind.DECISION_REFUSED, actor=approver.name, channel=channel, outcome=verdict, detail=why
    )
    session.commit()


def _cast(session: Session, vote: ApprovalDecision) -> bool | None:
    """Record `vote` unless its approver voted on the request before: whether they had (a repeat changes nothing),
    or None when their other vote landed just now, between the look and the insert (the caller starts again)."""
    voted = session.exec(
        select(ApprovalDecision).where(
            col(ApprovalDecision.request_id) == vote.request_id, col(ApprovalDecision.approver) == vote.approver
        )
    ).first()
    if voted is not None:
        return True
    session.add(vote)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        return None
    return False


def _settle(
    session: Session, request_id: UUID, kind: AuditKind, by: str, comment: str, now: datetime, **edit: Any
) -> bool:
    """Move a pending request to approved or rejected (`kind`); False when another decision moved it first."""
    status = ApprovalStatus.REJECTED if kind == AuditKind.REJECTED else ApprovalStatus.APPROVED
    values: dict[str, Any] = {"status": status, "responded_at": now, "responded_by": by, "comment": comment, **edit}
    if status == ApprovalStatus.APPROVED:
        use_within = session.execute(
            select(ApprovalRequest.use_within).where(col(ApprovalRequest.id) == request_id)
        ).scalar()
        values["use_by"] = now + timedelta(seconds=use_within if use_within is not None else DEFAULT_USE_WITHIN)
    return _cas(session, request_id, [ApprovalStatus.PENDING], **values)


def _expire(session: Session, request: ApprovalRequest, now: datetime) -> bool:
    won = _cas(session, request.id, [ApprovalStatus.PENDING], status=ApprovalStatus.EXPIRED, finished_at=now)
    if won:
        _audit(session, request, AuditKind.EXPIRED, actor="signoff", outcome="expired", detail="nobody decided in time")
    return won


def _expire_unused(session: Session, request: ApprovalRequest, now: datetime) -> bool:
    """Expire an approval nobody used by its `use_by`: an approval is for a call made now, not whenever."""
    won = _cas(
        session,
        request.id,
        [ApprovalStatus.APPROVED],
        status=ApprovalStatus.EXPIRED,
        finished_at=now,
        outcome=APPROVAL_UNUSED,
    )
    if won:
        use_by = as_utc(request.use_by).isoformat() if request.use_by is not None else "its deadline"
        why = f"approved by {request.responded_by}, but no call used the approval by {use_by}"
        _audit(session, request, AuditKind.EXPIRED, actor="signoff", outcome=APPROVAL_UNUSED, detail=why)
    return won


def expire_overdue(session: Session, now: datetime) -> list[UUID]:
    """Expire every pending request whose deadline has passed, and every approval unused by its `use_by`; timeouts
    fail closed.

    One sweep at a time across replicas: on PostgreSQL a sweep that finds another's in progress (a transaction
    advisory lock) expires nothing and returns at once; the next sweep, a second later, finds what is left. Each
    request is expired by a compare-and-set in any case, so its expiry is recorded and announced once.

    Returns:
        The ids this call expired (another replica's sweep may win some; those are not listed).
    """
    on_postgres = session.get_bind().dialect.name == "postgresql"
    if on_postgres and not session.execute(text(f"SELECT pg_try_advisory_xact_lock({SWEEP_LOCK})")).scalar_one():
        return []
    overdue = session.exec(
        select(ApprovalRequest).where(
            col(ApprovalRequest.status) == ApprovalStatus.PENDING, col(ApprovalRequest.deadline) <= now
        )
    ).all()
    expired = [request.id for request in overdue if _expire(session, request, now)]
    unused = session.exec(
        select(ApprovalRequest).where(
            col(ApprovalRequest.status) == ApprovalStatus.APPROVED, col(ApprovalRequest.use_by) <= now
        )
    ).all()
    expired += [request.id for request in unused if _expire_unused(session, request, now)]
    session.commit()
    return expired


def cancel(session: Session, request_id: UUID, now: datetime, why: str, approved_too: bool = False) -> bool:
    """Withdraw a pending request (the agent cancelled its call) or, `approved_too`, one approved and not yet run (an
    agent that cancels its task will not have it run later). Returns whether this call withdrew it."""
    request = get_request(session, request_id)
    states = [ApprovalStatus.PENDING, ApprovalStatus.APPROVED] if approved_too else [ApprovalStatus.PENDING]
    won = _cas(session, request_id, states, status=ApprovalStatus.CANCELLED, finished_at=now, comment=why)
    if won:
        _audit(session, request, AuditKind.CANCELLED, actor=request.identity, outcome="cancelled", detail=why)
    session.commit()
    return won


def standing(session: Session, request_id: UUID, claimant: str = "", now: datetime | None = None) -> Standing:
    """Where the request stands, without loading the row; if it is approved, claim its execution for this caller.

    Reading and claiming in one transaction is one trip to the database per wake-up of a held call. Of many
    callers, exactly one sees `claimed`; the others then see `executing` (or what followed).

    Raises:
        ApprovalNotFound: no such request.
    """
    row = session.execute(
        select_columns(
            col(ApprovalRequest.status),
            col(ApprovalRequest.deadline),
            col(ApprovalRequest.edited_arguments),
            col(ApprovalRequest.responded_by),
            col(ApprovalRequest.redact),
            col(ApprovalRequest.use_by),
        ).where(col(ApprovalRequest.id) == request_id)
    ).first()
    if row is None:
        raise ApprovalNotFound(request_id)
    status, deadline, edited, by, redact, use_by = row
    if status == ApprovalStatus.APPROVED and use_by is not None and as_utc(use_by) <= (now or datetime.now(UTC)):
        # Unused past its time: it expires here rather than run, whether or not the sweep got to it yet.
        expired = _expire_unused(session, get_request(session, request_id), now or datetime.now(UTC))
        session.commit()
        if expired:
            return Standing(ApprovalStatus.EXPIRED, as_utc(deadline), expired_now=True)
        return standing(session, request_id, claimant, now)
    if status == ApprovalStatus.APPROVED:
        if claim_execution(session, request_id, claimant, now):
            return Standing(ApprovalStatus.EXECUTING, as_utc(deadline), True, edited, by, redact)
        return standing(session, request_id, claimant, now)
    return Standing(status, as_utc(deadline))


def next_deadline(session: Session) -> datetime | None:
    """When a request next needs the scheduler: the earliest deadline, escalation or reminder of any pending
    request, or `use_by` of any approved one; None if nothing waits."""
    pending = col(ApprovalRequest.status) == ApprovalStatus.PENDING
    row = session.execute(
        select(func.min(ApprovalRequest.deadline), func.min(ApprovalRequest.notice_at)).where(pending)
    ).one()
    approved = session.execute(
        select(func.min(ApprovalRequest.use_by)).where(col(ApprovalRequest.status) == ApprovalStatus.APPROVED)
    ).scalar()
    due = [as_utc(moment) for moment in (*row, approved) if moment is not None]
    return min(due) if due else None


def notify_due(session: Session, now: datetime) -> list[Notice]:
    """Take the escalations and reminders that have come due on pending requests, each once across replicas and
    restarts: the row's `escalated` count and `notice_at` move by a compare-and-set, audited in the same
    transaction. Escalations that came due while signoff was down are each announced now; a reminder missed then
    is sent once, not once per interval missed, and none goes with an escalation (that notice reaches people).

    Returns:
        The notices this call took, to announce (another replica may take some; those are not listed).
    """
    due_rows = session.exec(
        select(ApprovalRequest).where(
            col(ApprovalRequest.status) == ApprovalStatus.PENDING,
            col(ApprovalRequest.notice_at) <= now,
            col(ApprovalRequest.deadline) > now,
        )
    ).all()
    notices: list[Notice] = []
    for request in due_rows:
        session.expunge(request)  # a detached copy to work out the new values on; the row moves by CAS only
        came = len(due_escalations(request, now))
        new = list(range(request.escalated, came))
        since = as_utc(request.reminded_at or request.requested_at)
        remind = (
            not new and request.remind_seconds is not None and since + timedelta(seconds=request.remind_seconds) <= now
        )
        before = (request.escalated, request.notice_at)
        request.escalated = max(request.escalated, came)
        if remind or new:
            request.reminded_at = now  # the next reminder counts from the last notice people had
        later = next_notice(request, now)
        won = _cas_notice(
            session, request.id, before, escalated=request.escalated, reminded_at=request.reminded_at, notice_at=later
        )
        if not won:
            continue
        for index in new:
            who = ", ".join(escalations(request)[index].approvers)
            _audit(session, request, AuditKind.ESCALATED, actor="signoff", outcome="escalated", detail=f"to {who}")
            notices.append(Notice(request.id, index))
        if remind:
            _audit(session, request, AuditKind.REMINDED, actor="signoff", outcome="reminded", detail="still waiting")
            notices.append(Notice(request.id))
    session.commit()
    return notices


def _cas_notice(session: Session, request_id: UUID, before: tuple[int, datetime | None], **values: Any) -> bool:
    escalated, notice_at = before
    result = session.execute(
        update(ApprovalRequest)
        .where(
            col(ApprovalRequest.id) == request_id,
            col(ApprovalRequest.status) == ApprovalStatus.PENDING,
            col(ApprovalRequest.escalated) == escalated,
            col(ApprovalRequest.notice_at) == notice_at,
        )
        .values(**values)
    )
    return isinstance(result, CursorResult) and result.rowcount == 1


def decided_since(session: Session, after: int | None) -> tuple[int, list[UUID]]:
    """The requests voted on since decision row `after`, and the newest decision row's id (`after` None: only that).

    Decisions taken by another replica reach this process only through the database; reading the decision rows
    added since the last look costs the same whether ten or ten thousand calls are held.
    """
    if after is None:
        return session.execute(select(func.max(ApprovalDecision.id))).scalar() or 0, []
    rows = session.execute(
        select(ApprovalDecision.id, ApprovalDecision.request_id).where(col(ApprovalDecision.id) > after)
    ).all()
    newest = max((row[0] for row in rows), default=after)
    return newest, list({row[1] for row in rows})


def claim_execution(session: Session, request_id: UUID, claimant: str = "", now: datetime | None = None) -> bool:
    """Take the approved request's single execution; exactly one caller ever gets True.

    `claimant` names the process that runs it (host:pid:boot) and `now` is when: if that process dies before the
    outcome is recorded, `resolve_abandoned` can tell the request was left behind.
    """
    won = _cas(
        session,
        request_id,
        [ApprovalStatus.APPROVED],
        status=ApprovalStatus.EXECUTING,
        claimed_by=claimant or None,
        claimed_at=now or datetime.now(UTC),
    )
    session.commit()
    return won


def resolve_abandoned(
    session: Session, now: datetime, lease: timedelta, abandoned: Callable[[str | None], bool]
) -> list[UUID]:
    """Fail every request left `executing` by a process that stopped while its call ran: the result is unknown.

    A request counts as left behind when `abandoned(claimed_by)` says its process is gone (the caller knows which
    processes it can see), or when it has been executing longer than `lease`, longer than any call may run. It then
    becomes `failed` with outcome `gateway_stopped`, audited; it never runs again, and a repeat is told why.

    Returns:
        The ids this call resolved.
    """
    executing = session.exec(
        select(ApprovalRequest).where(col(ApprovalRequest.status) == ApprovalStatus.EXECUTING)
    ).all()
    resolved = []
    for request in executing:
        claimed = as_utc(request.claimed_at) if request.claimed_at is not None else None
        if not (abandoned(request.claimed_by) or claimed is None or claimed <= now - lease):
            continue
        won = _cas(
            session,
            request.id,
            [ApprovalStatus.EXECUTING],
            status=ApprovalStatus.FAILED,
            finished_at=now,
            outcome=GATEWAY_STOPPED,
        )
        if won:
            _audit(session, request, AuditKind.FAILED, actor="signoff", outcome=GATEWAY_STOPPED, detail=UNKNOWN_RESULT)
            resolved.append(request.id)
    session.commit()
    return resolved


def finish_execution(
    session: Session,
    request_id: UUID,
    ok: bool,
    outcome: str,
    latency_ms: float,
    now: datetime,
    detail: str = "",
    task_result: str | None = None,
) -> ApprovalRequest:
    """Record what the approved call did upstream (`detail`: what went wrong; `task_result`: its result, kept for a
    task's later polls, in the same transaction); returns the request as it now stands."""
    status = ApprovalStatus.EXECUTED if ok else ApprovalStatus.FAILED
    request = get_request(session, request_id)
    done = {"status": status, "finished_at": now, "outcome": outcome, "task_result": task_result}
    if _cas(session, request_id, [ApprovalStatus.EXECUTING], **done):
        kind = AuditKind.EXECUTED if ok else AuditKind.FAILED
        fields: dict[str, Any] = {"detail": detail[:2000]} if detail else {}
        _audit(
            session, request, kind, actor=request.responded_by or "", outcome=outcome, latency_ms=latency_ms, **fields
        )
    session.commit()
    session.refresh(request)
    return request


def list_requests(
    session: Session,
    *,
    status: str | None = None,
    server: str | None = None,
    tool: str | None = None,
    identity: str | None = None,
    limit: int = 100,
) -> Sequence[ApprovalRequest]:
    """Requests, newest first, filtered by whichever of the fields are given."""
    query = select(ApprovalRequest)
    for column, value in (
        (ApprovalRequest.status, status),
        (ApprovalRequest.server, server),
        (ApprovalRequest.tool, tool),
        (ApprovalRequest.identity, identity),
    ):
        if value:
            query = query.where(col(column) == value)
    return session.exec(query.order_by(col(ApprovalRequest.requested_at).desc()).limit(limit)).all()


def decisions_for(session: Session, request_id: UUID) -> Sequence[ApprovalDecision]:
    """The votes on one request, oldest first."""
    query = select(ApprovalDecision).where(col(ApprovalDecision.request_id) == request_id)
    return session.exec(query.order_by(col(ApprovalDecision.at))).all()


def public_view(
    request: ApprovalRequest, decisions: Sequence[ApprovalDecision] = (), now: datetime | None = None
) -> dict[str, Any]:
    """The request as the API, webhooks and CLI show it at `now` (default: the clock); redacted arguments stay
    hidden. `approvers` is who may decide now, with escalations that came due; `quorum.any_of` is the progress
    against each threshold, and `escalate` when each escalation comes (or came) and to whom."""
    redact: list[str] = json.loads(request.redact)
    moment = now or datetime.now(UTC)
    started = as_utc(request.requested_at)
    arguments = redacted(displayable(request.arguments), redact)
    held_until = as_utc(request.held_until) if request.held_until else None
    return {
        "id": str(request.id),
        "status": request.status,
        "server": request.server,
        "tool": request.tool,
        "agent": request.identity,
        "arguments": arguments,
        "summary": arguments_summary(arguments),
        "tool_description": one_line(request.tool_description, MAX_DESCRIPTION),
        "args_digest": request.args_digest,
        "edited_arguments": redacted(displayable(edited), redact) if (edited := request.edited_arguments) else None,
        "rule": request.rule,
        "policy_version": request.policy_version,
        "reason": request.reason,
        "approvers": list(who_may_decide(request, moment)),
        "quorum": request.quorum,
        "thresholds": {
            "any_of": [
                {"count": p.count, "approvers": list(p.approvers), "approved_by": list(p.approved_by), "met": p.met}
                for p in progress(request, decisions, moment)
            ]
        },
        "escalate": [
            {
                "at": (started + timedelta(seconds=e.after_seconds)).isoformat(),
                "approvers": list(e.approvers),
                "channel": e.channel,
                "announced": i < request.escalated,
            }
            for i, e in enumerate(escalations(request))
        ],
        "remind_seconds": request.remind_seconds,
        "allow_edits": request.allow_edits,
        "channel": request.channel,
        "requested_at": as_utc(request.requested_at).isoformat(),
        "deadline": as_utc(request.deadline).isoformat(),
        "responded_at": as_utc(request.responded_at).isoformat() if request.responded_at else None,
        "responded_by": request.responded_by,
        "comment": request.comment,
        "finished_at": as_utc(request.finished_at).isoformat() if request.finished_at else None,
        "outcome": request.outcome,
        "grant_max": request.grant_max,
        "use_by": as_utc(request.use_by).isoformat() if request.use_by else None,
        "held_until": held_until.isoformat() if held_until else None,
        "agent_waiting": held_until is not None and held_until > moment,
        "decisions": [
            {
                "approver": d.approver,
                "verdict": d.verdict,
                "comment": d.comment,
                "channel": d.channel,
                "at": as_utc(d.at).isoformat(),
            }
            for d in decisions
        ],
    }


def hold(session: Session, request_id: UUID, until: datetime) -> None:
    """Record that a call is held open waiting on the request until `until` (a later hold extends it)."""
    session.execute(
        update(ApprovalRequest)
        .where(
            col(ApprovalRequest.id) == request_id,
            col(ApprovalRequest.status) == ApprovalStatus.PENDING,
            (col(ApprovalRequest.held_until).is_(None)) | (col(ApprovalRequest.held_until) < until),
        )
        .values(held_until=until)
    )
    session.commit()


def let_go(session: Session, request_id: UUID, until: datetime, now: datetime) -> None:
    """The hold that lasted until `until` ended at `now` (answered "pending", or its client left); unless a later
    hold extended it, no call waits on the request any more."""
    session.execute(
        update(ApprovalRequest)
        .where(col(ApprovalRequest.id) == request_id, col(ApprovalRequest.held_until) == until)
        .values(held_until=now)
    )
    session.commit()


def record_message(session: Session, request_id: UUID, system: str, message: dict[str, str]) -> None:
    """Remember where the request was announced in `system` (e.g. "slack": its channel and ts), to update it later.

    Raises:
        ApprovalNotFound: no such request.
    """
    request = get_request(session, request_id)
    messages: dict[str, Any] = json.loads(request.messages or "{}")
    messages[system] = message
    session.execute(
        update(ApprovalRequest)
        .where(col(ApprovalRequest.id) == request_id)
        .values(messages=json.dumps(messages, sort_keys=True))
    )
    session.commit()


def refuse_unknown(session: Session, request_id: UUID, who: str, verdict: Verdict, channel: str, why: str) -> None:
    """Audit a decision attempt by someone who is not a configured approver; nothing else changes.

    Args:
        who: how the channel names them (e.g. "slack:U0123ABCD").

    Raises:
        ApprovalNotFound: no such request.
    """
    request = get_request(session, request_id)
    _audit(session, request, AuditKind.DECISION_REFUSED, actor=who, channel=channel, outcome=verdict, detail=why)
    session.commit()
