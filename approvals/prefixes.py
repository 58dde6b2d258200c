"""Ids as people type them: a unique prefix of a request's or grant's UUID (at least MIN_PREFIX hex digits).

A prefix is turned into the range of UUIDs that start with it, so the lookup is an indexed range query that
means the same on SQLite (ids stored as 32 lowercase hex digits) and PostgreSQL (native uuid, ordered bytewise).
"""

import re
import uuid
from typing import Any

from sqlmodel import Session, col, select

from approvals.errors import AmbiguousId, ApprovalNotFound, GrantNotFound, IdTooShort
from approvals.models import ApprovalRequest, Grant

__all__ = ["MIN_PREFIX", "grant_id", "request_id"]

MIN_PREFIX = 8  # 32 bits: unique among a few thousand ids, short enough to type from a Slack message
_HEX = re.compile(r"^[0-9a-f]+$")
_SHOWN = 5  # matches listed when a prefix is ambiguous


def _range(text: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """The lowest and highest UUID starting with `text` (dashes ignored), or None when it is no hex prefix.

    Raises:
        IdTooShort: fewer than MIN_PREFIX hex digits.
    """
    digits = text.strip().lower().replace("-", "")
    if not digits or len(digits) > 32 or not _HEX.match(digits):
        return None
    if len(digits) < MIN_PREFIX:
        raise IdTooShort(text, MIN_PREFIX)
    return uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f"))


def _resolve(session: Session, table: Any, text: str, missing: Exception, what: str) -> uuid.UUID:
    bounds = _range(text)
    if bounds is None:
        raise missing
    low, high = bounds
    query = select(table.id).where(col(table.id) >= low, col(table.id) <= high).order_by(col(table.id))
    found = list(session.exec(query.limit(_SHOWN + 1)).all())
    if not found:
        raise missing
    if len(found) > 1:
        shown = [str(i) for i in found[:_SHOWN]] + (["..."] if len(found) > _SHOWN else [])
        raise AmbiguousId(text, shown, what)
    matched: uuid.UUID = found[0]
    return matched


def request_id(session: Session, text: str) -> uuid.UUID:
    """The id of the one approval request whose id is, or starts with, `text`.

    Raises:
        IdTooShort: fewer than MIN_PREFIX hex digits.
        AmbiguousId: more than one request starts with it (the error lists them).
        ApprovalNotFound: none does, or `text` is no id at all.
    """
    return _resolve(session, ApprovalRequest, text, ApprovalNotFound(text), "approval request")


def grant_id(session: Session, text: str) -> uuid.UUID:
    """The id of the one grant whose id is, or starts with, `text` (raises as `request_id`, GrantNotFound)."""
    return _resolve(session, Grant, text, GrantNotFound(text), "grant")
