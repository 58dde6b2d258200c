"""Tool pins: each upstream tool's definition as first seen, and the drift since, until the policy is re-checked.

The gateway keeps the live state in memory and calls these to make it durable, each with its audit row in the same
transaction. Re-checked means: the server's policy changed (a new version), or an approver accepted the change.
"""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from approvals.audit import AuditRecord, append
from approvals.models import AuditKind, ToolPin

__all__ = ["accept_drift", "load_pins", "recheck_pins", "record_drift", "record_pin", "short"]


def short(digest: str) -> str:
    """The first 16 hex characters of a digest, as audit rows and messages show it."""
    return digest[:16]


def load_pins(session: Session) -> Sequence[ToolPin]:
    """Every pin, for the gateway to hold in memory."""
    return session.exec(select(ToolPin)).all()


def list_pins(session: Session, server: str | None = None, drifted_only: bool = True) -> list[ToolPin]:
    """Pinned tools (of `server`, or every server's), by server and tool; only the drifted ones unless told."""
    query = select(ToolPin)
    if server:
        query = query.where(col(ToolPin.server) == server)
    if drifted_only:
        query = query.where(col(ToolPin.drift_digest).is_not(None))
    return list(session.exec(query.order_by(col(ToolPin.server), col(ToolPin.tool))).all())


def _get(session: Session, server: str, tool: str) -> ToolPin | None:
    return session.get(ToolPin, (server, tool))


def record_pin(
    session: Session, server: str, tool: str, digest: str, definition: str, policy_version: str, now: datetime
) -> bool:
    """Pin a tool seen for the first time; a tool already pinned (by another replica, say) keeps its pin.

    Not audited: a first sighting is not an event worth a row per tool; the pin's `pinned_at` records it.

    Returns:
        Whether this call pinned it.
    """
    if _get(session, server, tool) is not None:
        return False
    session.add(
        ToolPin(
            server=server,
            tool=tool,
            digest=digest,
            definition=definition,
            policy_version=policy_version,
            pinned_at=now,
        )
    )
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        return False
    session.commit()
    return True


def record_drift(
    session: Session,
    server: str,
    tool: str,
    pinned: str,
    digest: str,
    definition: str,
    policy_version: str,
    action: str,
    now: datetime,
) -> None:
    """Record that `tool` now has definition `digest` instead of its pinned one, with a `tool_drift` audit row.

    `pinned` is the pinned digest the gateway compared against; a pin that is missing (its first write has not
    landed) is created with it.
    """
    pin = _get(session, server, tool)
    if pin is None:
        pin = ToolPin(server=server, tool=tool, digest=pinned, definition="", policy_version=policy_version)
        session.add(pin)
    pin.drift_digest = digest
    pin.drift_definition = definition
    pin.drifted_at = now
    append(
        session,
        [
            AuditRecord(
                kind=AuditKind.TOOL_DRIFT,
                server=server,
                tool=tool,
                policy_version=policy_version,
                actor="signoff",
                outcome=action,
                detail=f"definition changed from {short(pinned)} to {short(digest)}; on_drift {action}",
            )
        ],
    )
    session.commit()


def _accept(session: Session, pins: Sequence[ToolPin], actor: str, channel: str, why: str, version: str) -> list[str]:
    accepted = []
    records = []
    for pin in pins:
        if pin.drift_digest is None:
            continue
        records.append(
            AuditRecord(
                kind=AuditKind.DRIFT_ACCEPTED,
                server=pin.server,
                tool=pin.tool,
                policy_version=version,
                actor=actor,
                channel=channel,
                outcome="accepted",
                detail=f"definition {short(pin.drift_digest)} replaces {short(pin.digest)}: {why}",
            )
        )
        pin.digest = pin.drift_digest
        pin.definition = pin.drift_definition or ""
        pin.drift_digest = pin.drift_definition = pin.drifted_at = None
        accepted.append(pin.tool)
    if records:
        append(session, records)
    return accepted


def accept_drift(
    session: Session, server: str, tool: str | None, actor: str, channel: str, policy_version: str, now: datetime
) -> list[str]:
    """An approver accepts the drift of one tool (or of every drifted tool of `server`): pin what is seen now.

    Returns:
        The tools whose drift was accepted (empty when none had drifted).
    """
    query = select(ToolPin).where(col(ToolPin.server) == server, col(ToolPin.drift_digest).is_not(None))
    if tool is not None:
        query = query.where(col(ToolPin.tool) == tool)
    pins = session.exec(query).all()
    accepted = _accept(session, pins, actor, channel, "accepted by an approver", policy_version)
    for pin in pins:
        pin.policy_version = policy_version
        pin.pinned_at = now
    session.commit()
    return accepted


def recheck_pins(session: Session, server: str, policy_version: str, now: datetime) -> list[str]:
    """`server`'s policy is now `policy_version`: every pin is re-checked under it, and drifted tools are re-pinned.

    Returns:
        The tools whose drift this accepted.
    """
    pins = session.exec(
        select(ToolPin).where(col(ToolPin.server) == server, col(ToolPin.policy_version) != policy_version)
    ).all()
    accepted = _accept(session, pins, "signoff", "policy", f"the policy changed to {policy_version}", policy_version)
    for pin in pins:
        pin.policy_version = policy_version
        if pin.tool in accepted:
            pin.pinned_at = now
    session.commit()
    return accepted
