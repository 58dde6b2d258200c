"""The web page's sessions on the server: a signed cookie proves which session it is, this record whether it still is.

A cookie alone would stay valid until it expires, sign-out or not, wherever a copy of it went. So each sign-in
gets a random session id, the database keeps that id's SHA-256, and a session ends for every replica at once
when its row does (sign-out, approver removed from the config, or SESSION_HOURS after sign-in).
This module knows nothing of requests or cookies; `identity.py` does.
"""

import hashlib
import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import anyio
from sqlalchemy import delete, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from approvals.models import WebSession
from approvals.service import as_utc
from approvals.store import serialised

SESSION_HOURS = 12
LIFETIME = timedelta(hours=SESSION_HOURS)


class EndReason(StrEnum):
    """Why a session ended before its time, as its row records it."""

    SIGNED_OUT = "signed_out"
    APPROVER_REMOVED = "approver_removed"


@dataclass(frozen=True, slots=True)
class OpenSession:
    """A session that still counts: who signed in, how, and when."""

    approver: str
    method: str
    signed_in_at: datetime


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionBook:
    """Starts, finds and ends web sessions, each call one short transaction in a worker thread.

    `clock` gives seconds since the epoch (tests pass their own, so a session's lifetime can pass in a test).
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def start(self, engine: Engine, approver: str, method: str) -> str:
        """A new session for `approver`; returns its id, for the cookie only (the database keeps its digest)."""
        session_id = secrets.token_urlsafe(32)
        now = self.now()

        def write(db: Session) -> None:
            # Rows past their lifetime count for nothing, so each sign-in clears them away.
            db.execute(delete(WebSession).where(col(WebSession.signed_in_at) <= now - LIFETIME))
            db.add(WebSession(id=_digest(session_id), approver=approver, method=method, signed_in_at=now))

        await _write(engine, write)
        return session_id

    async def find(self, engine: Engine, session_id: str) -> OpenSession | None:
        """The session `session_id` names, unless it has ended or outlived SESSION_HOURS."""
        digest = _digest(session_id)

        def read() -> WebSession | None:
            with Session(engine) as db:
                return db.get(WebSession, digest)

        row = await anyio.to_thread.run_sync(read)
        if row is None or row.ended_at is not None or as_utc(row.signed_in_at) <= self.now() - LIFETIME:
            return None
        return OpenSession(row.approver, row.method, as_utc(row.signed_in_at))

    async def end(self, engine: Engine, session_id: str, reason: EndReason) -> None:
        """End one session; ending it again changes nothing."""
        digest = _digest(session_id)
        now = self.now()

        def write(db: Session) -> None:
            query = update(WebSession).where(col(WebSession.id) == digest, col(WebSession.ended_at).is_(None))
            db.execute(query.values(ended_at=now, end_reason=reason))

        await _write(engine, write)

    async def end_all_but(self, engine: Engine, approvers: Collection[str]) -> None:
        """End every open session of an approver not in `approvers`: removed from the config, never back."""
        now = self.now()

        def write(db: Session) -> None:
            query = update(WebSession).where(
                col(WebSession.ended_at).is_(None), col(WebSession.approver).not_in(approvers)
            )
            db.execute(query.values(ended_at=now, end_reason=EndReason.APPROVER_REMOVED))

        await _write(engine, write)


async def _write(engine: Engine, fn: Callable[[Session], None]) -> None:
    def run() -> None:
        with serialised(engine), Session(engine) as db:
            fn(db)
            db.commit()

    await anyio.to_thread.run_sync(run)
