"""Which agent each MCP session belongs to: kept in the database, so it holds across restarts and replicas.

An upstream gives a session id to whoever sent `initialize`; any agent that learns the id could otherwise send
requests in that session. The gateway records the owner before the `initialize` answer leaves, and checks every
request that carries `Mcp-Session-Id` against it. The table keeps only the id's SHA-256. Each process keeps what
it has read in a bounded cache, so the hot path reads the database only for a session it has not seen (one opened
on another replica, or before a restart). Rows go when the agent ends its session (DELETE) and once older than
LIFETIME, after which the session is unknown: the agent gets 404 and opens a new one, as the MCP spec says.
"""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from approvals.models import McpSession, utcnow
from approvals.service import as_utc
from integrations.database import serialised

__all__ = ["LIFETIME", "Owner", "SessionOwners"]

# Long enough for a desktop client that stays open for days; a session past it is refused, and its client opens
# a new one.
LIFETIME = timedelta(days=7)
MAX_CACHED = 100_000


@dataclass(frozen=True, slots=True)
class Owner:
    """Who opened a session, on which server, when."""

    agent: str
    server: str
    created_at: datetime


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionOwners:
    """Records, finds and forgets session owners; each database call is one short transaction in a worker thread."""

    def __init__(self, engine: Engine, now: Callable[[], datetime] = utcnow, lifetime: timedelta = LIFETIME) -> None:
        self._engine = engine
        self._now = now
        self._lifetime = lifetime
        self._cache: dict[str, Owner] = {}  # digest -> owner, oldest first

    async def claim(self, session_id: str, agent: str, server: str) -> None:
        """Record that `agent` opened `session_id` on `server` (and clear away rows past their lifetime)."""
        digest, now = _digest(session_id), self._now()
        owner = Owner(agent, server, now)

        def write() -> None:
            with serialised(self._engine), Session(self._engine) as db:
                db.execute(delete(McpSession).where(col(McpSession.created_at) <= now - self._lifetime))
                db.merge(McpSession(id=digest, agent=agent, server=server, created_at=now))
                db.commit()

        await anyio.to_thread.run_sync(write)
        self._remember(digest, owner)

    async def owner(self, session_id: str) -> Owner | None:
        """Who `session_id` belongs to; None when no live session has that id (never opened here, ended, too old)."""
        digest = _digest(session_id)
        owner = self._cache.get(digest)
        if owner is None:

            def read() -> McpSession | None:
                with Session(self._engine) as db:
                    return db.get(McpSession, digest)

            row = await anyio.to_thread.run_sync(read)
            if row is None:
                return None
            owner = Owner(row.agent, row.server, as_utc(row.created_at))
            self._remember(digest, owner)
        if owner.created_at <= self._now() - self._lifetime:
            self._cache.pop(digest, None)
            return None
        return owner

    async def release(self, session_id: str) -> None:
        """Forget `session_id`: its agent ended it."""
        digest = _digest(session_id)
        self._cache.pop(digest, None)

        def write() -> None:
            with serialised(self._engine), Session(self._engine) as db:
                db.execute(delete(McpSession).where(col(McpSession.id) == digest))
                db.commit()

        await anyio.to_thread.run_sync(write)

    def _remember(self, digest: str, owner: Owner) -> None:
        if digest not in self._cache and len(self._cache) >= MAX_CACHED:
            self._cache.pop(next(iter(self._cache)))
        self._cache[digest] = owner
