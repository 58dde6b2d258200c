"""Time-boxed grants: "this tool, for this agent, for the next N minutes", given with an approval.

A grant replaces only the approval step of later calls: they are still subject to the policy's deny rules and
limits. It is created in the transaction that approves its request (see `service.decide`), bounded by the rule's
`grant_max`, and ends when it expires or is revoked, each a compare-and-set with its audit row.
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import update
from sqlalchemy.engine import CursorResult
from sqlmodel import Session, col, select

from approvals.audit import AuditRecord, append
from approvals.errors import GrantEnded, GrantNotFound, InvalidReason
from approvals.models import ApprovalRequest, AuditKind, Grant, GrantStatus
from approvals.reasons import reason_problem

__all__ = [
    "active_grants",
    "create_grant",
    "expire_grant",
    "expire_overdue_grants",
    "format_duration",
    "get_grant",
    "grant_refusal",
    "grant_view",
    "list_grants",
    "revoke_grant",
]


def _utc(moment: datetime) -> datetime:
    # SQLite hands datetimes back naive; every one signoff stores is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def format_duration(seconds: float) -> str:
    """Render a grant's length as `90s`, `15m`, `1h30m` or `2d`."""
    total = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            amount, total = divmod(total, size)
            parts.append(f"{amount}{unit}")
    return "".join(parts) or "0s"


def grant_refusal(request: ApprovalRequest, seconds: float) -> str | None:
    """Why approving `request` cannot come with a grant of `seconds`, or None when it can."""
    if request.grant_max is None:
        return f"the rule {request.rule} allows no grants (it has no grant_max)"
    if seconds <= 0:
        return "a grant must last a positive time"
    if seconds > request.grant_max:
        return f"{format_duration(seconds)} is longer than the rule's grant_max of {format_duration(request.grant_max)}"
    if request.quorum > 1:
        return f"the rule needs {request.quorum} approvers, and a grant would let later calls through on one's word"
    return None


def _audit(session: Session, grant: Grant, kind: AuditKind, **fields: Any) -> None:
    append(
        session,
        [
            AuditRecord(
                kind=kind,
                server=grant.server,
                tool=grant.tool,
                identity=grant.identity,
                rule=grant.rule,
                policy_version=grant.policy_version,
                **fields,
            )
        ],
    )


def create_grant(
    session: Session, request: ApprovalRequest, approver: str, seconds: float, comment: str, channel: str, now: datetime
) -> Grant:
    """Add a grant for `request`'s agent, server and tool, lasting `seconds` from `now`, in the caller's transaction.

    The caller checks `grant_refusal` first and commits.
    """
    grant = Grant(
        server=request.server,
        tool=request.tool,
        identity=request.identity,
        request_id=request.id,
        rule=request.rule,
        policy_version=request.policy_version,
        granted_by=approver,
        comment=comment,
        created_at=now,
        expires_at=now + timedelta(seconds=seconds),
    )
    session.add(grant)
    session.flush()
    _audit(
        session,
        grant,
        AuditKind.GRANT_CREATED,
        actor=approver,
        channel=channel,
        outcome="granted",
        detail=f"grant {grant.id} for {format_duration(seconds)}, until {grant.expires_at.isoformat()}, "
        f"with approval {request.id}" + (f": {comment}" if comment else ""),
    )
    return grant


def get_grant(session: Session, grant_id: UUID) -> Grant:
    """The grant with `grant_id`.

    Raises:
        GrantNotFound: no such grant.
    """
    grant = session.get(Grant, grant_id)
    if grant is None:
        raise GrantNotFound(grant_id)
    return grant


def _end(session: Session, grant_id: UUID, status: GrantStatus, now: datetime, **values: Any) -> bool:
    query = update(Grant).where(col(Grant.id) == grant_id, col(Grant.status) == GrantStatus.ACTIVE)
    if status is GrantStatus.EXPIRED:
        query = query.where(col(Grant.expires_at) <= now)
    result = session.execute(query.values(status=status, ended_at=now, **values))
    return isinstance(result, CursorResult) and result.rowcount == 1


def revoke_grant(session: Session, grant_id: UUID, by: str, reason: str, channel: str, now: datetime) -> Grant:
    """End an active grant now; its next call needs approval again.

    Raises:
        GrantNotFound: no such grant.
        GrantEnded: it has already expired or been revoked (a grant past its time is expired first).
        InvalidReason: `reason` breaks the rule of `approvals.reasons`.
    """
    why = reason_problem(reason)
    if why is not None:
        raise InvalidReason(why)
    grant = get_grant(session, grant_id)
    if grant.status == GrantStatus.ACTIVE and _utc(grant.expires_at) <= now:
        expire_grant(session, grant_id, now)
    if not _end(session, grant_id, GrantStatus.REVOKED, now, ended_by=by, end_reason=reason):
        session.commit()
        raise GrantEnded(grant_id, get_grant(session, grant_id).status)
    _audit(
        session,
        grant,
        AuditKind.GRANT_REVOKED,
        actor=by,
        channel=channel,
        outcome="revoked",
        detail=f"grant {grant.id}" + (f": {reason}" if reason else ""),
    )
    session.commit()
    session.refresh(grant)
    return grant


def expire_grant(session: Session, grant_id: UUID, now: datetime) -> bool:
    """Mark a grant past its time expired, once, with its audit row; returns whether this call did. Commits."""
    grant = session.get(Grant, grant_id)
    won = grant is not None and _end(session, grant_id, GrantStatus.EXPIRED, now, ended_by="signoff")
    if won and grant is not None:
        _audit(session, grant, AuditKind.GRANT_EXPIRED, actor="signoff", outcome="expired", detail=f"grant {grant.id}")
    session.commit()
    return won


def expire_overdue_grants(session: Session, now: datetime) -> list[UUID]:
    """Expire every active grant past its time (the periodic sweep; use-time checks stop them at once anyway)."""
    overdue = session.exec(
        select(Grant.id).where(col(Grant.status) == GrantStatus.ACTIVE, col(Grant.expires_at) <= now)
    ).all()
    return [grant_id for grant_id in overdue if expire_grant(session, grant_id, now)]


def active_grants(session: Session, now: datetime) -> Sequence[Grant]:
    """Grants that are active and not yet past their time."""
    query = select(Grant).where(col(Grant.status) == GrantStatus.ACTIVE, col(Grant.expires_at) > now)
    return session.exec(query).all()


def list_grants(
    session: Session, *, status: str | None = None, server: str | None = None, limit: int = 100
) -> Sequence[Grant]:
    """Grants, newest first, filtered by status and server when given."""
    query = select(Grant)
    if status:
        query = query.where(col(Grant.status) == status)
    if server:
        query = query.where(col(Grant.server) == server)
    return session.exec(query.order_by(col(Grant.created_at).desc()).limit(limit)).all()


def grant_view(grant: Grant, now: datetime) -> dict[str, Any]:
    """A grant as the API and CLI show it; one past its time shows as expired even before the sweep marks it."""
    expires = _utc(grant.expires_at)
    status = grant.status
    if status == GrantStatus.ACTIVE and expires <= now:
        status = GrantStatus.EXPIRED
    return {
        "id": str(grant.id),
        "status": status,
        "server": grant.server,
        "tool": grant.tool,
        "agent": grant.identity,
        "approval_id": str(grant.request_id),
        "rule": grant.rule,
        "policy_version": grant.policy_version,
        "granted_by": grant.granted_by,
        "comment": grant.comment,
        "created_at": _utc(grant.created_at).isoformat(),
        "expires_at": expires.isoformat(),
        "remaining_seconds": max(0, round((expires - now).total_seconds())) if status == GrantStatus.ACTIVE else 0,
        "ended_at": _utc(grant.ended_at).isoformat() if grant.ended_at else None,
        "ended_by": grant.ended_by,
        "end_reason": grant.end_reason,
    }
