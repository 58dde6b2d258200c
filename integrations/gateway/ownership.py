"""Which agent each MCP session belongs to: kept in the database, so it holds across restarts and replicas.

An upstream gives a session id to whoever sent `initialize`; any agent that learns the id could otherwise send
requests in that session. The gateway records the owner before the `initialize` answer leaves, and checks every
request that carries `Mcp-Session-Id` against it. The table keeps only the id's SHA-256. Each process keeps what
it has read in a bounded cache, so the hot path reads the database only for a session it has not seen (one opened
on another replica, or before a restart). Rows go when the agent ends its session (DELETE) and once older than
LIFETIME, after which the session is unknown: the agent gets 404 and opens a new one, as the MCP spec says.
"""

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col

from approvals.models import McpSession, utcnow
from approvals.ports import Broadcaster, Topic
from approvals.service import as_utc
from approvals.store import serialised

__all__ = ["LIFETIME", "Owner", "SessionOwners", "session_digest"]

logger = logging.getLogger(__name__)

# Long enough for a desktop client that stays open for days; a session past it is refused, and its client opens
# a new one.
LIFETIME = timedelta(days=7)
MAX_CACHED = 100_000
INVALID_REQUEST, UNAVAILABLE = -32600, -32000


@dataclass(frozen=True, slots=True)
class Owner:
    """Who opened a session, on which server, when."""

    agent: str
    server: str
    created_at: datetime


def session_digest(session_id: str) -> str:
    """What the table and the bus know a session by: the SHA-256 of its id, which gives the id away to nobody."""
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionOwners:
    """Records, finds and forgets session owners; each database call is one short transaction in a worker thread."""

    def __init__(
        self,
        engine: Engine,
        now: Callable[[], datetime] = utcnow,
        lifetime: timedelta = LIFETIME,
        broadcast: Broadcaster | None = None,
    ) -> None:
        self._engine = engine
        self._broadcast = broadcast
        self._now = now
        self._lifetime = lifetime
        self._cache: dict[str, Owner] = {}  # digest -> owner, oldest first

    async def claim(self, session_id: str, agent: str, server: str) -> bool:
        """Record that `agent` opened `session_id` on `server` (and clear away rows past their lifetime).

        Returns:
            Whether it was recorded (False: the database failed, which is logged).
        """
        digest, now = session_digest(session_id), self._now()
        owner = Owner(agent, server, now)

        def write() -> None:
            with serialised(self._engine), Session(self._engine) as db:
                db.execute(delete(McpSession).where(col(McpSession.created_at) <= now - self._lifetime))
                db.merge(McpSession(id=digest, agent=agent, server=server, created_at=now))
                db.commit()

        try:
            await anyio.to_thread.run_sync(write)
        except SQLAlchemyError:
            logger.exception("Recording the owner of a new session on %s failed", server)
            return False
        self._remember(digest, owner)
        return True

    async def owner(self, session_id: str) -> Owner | None:
        """Who `session_id` belongs to; None when no live session has that id (never opened here, ended, too old)."""
        digest = session_digest(session_id)
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

    async def refusal(self, session_id: str, agent: str, server: str) -> tuple[int, int, str] | None:
        """Why `agent` may not send a request in `session_id` on `server`, as (HTTP status, JSON-RPC code, message):
        another agent's session (403), no live session of that id there (404), or no way to tell now (503)."""
        try:
            owner = await self.owner(session_id)
        except SQLAlchemyError:
            logger.exception("Reading the owner of a session failed")
            return 503, UNAVAILABLE, "signoff cannot check this session now; retry"
        if owner is not None and owner.agent != agent:
            return 403, INVALID_REQUEST, "This session belongs to another agent"
        if owner is None or owner.server != server:
            # As a server answers a session id it does not know (MCP Streamable HTTP): the client opens a new one.
            return 404, INVALID_REQUEST, "Session not found: it ended or expired; start a new session with initialize"
        return None

    async def release(self, session_id: str) -> None:
        """Forget `session_id`: its agent ended it."""
        digest = session_digest(session_id)
        self._cache.pop(digest, None)

        def write() -> None:
            with serialised(self._engine), Session(self._engine) as db:
                db.execute(delete(McpSession).where(col(McpSession.id) == digest))
                db.commit()

        await anyio.to_thread.run_sync(write)
        if self._broadcast is not None:  # the other replicas drop their copies of it now
            self._broadcast.send(Topic.SESSION, digest)

    def forget(self, digest: str) -> None:
        """Drop the cached owner of the session whose id hashes to `digest` (another replica ended it)."""
        self._cache.pop(digest, None)

    def _remember(self, digest: str, owner: Owner) -> None:
        if digest not in self._cache and len(self._cache) >= MAX_CACHED:
            self._cache.pop(next(iter(self._cache)))
        self._cache[digest] = owner
