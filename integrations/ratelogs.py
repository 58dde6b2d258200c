"""Where the gateway's rate-limit logs live: a Redis sorted set per key, or rows of the database's `rate_hits`.

Both keep the sliding log of `policies.limits`: one entry per admitted call, counted while `now < at + window`, and
both admit a call only if every key it reached has room, counting it in all of them at once, atomically across
every replica (Redis runs one script at a time; the database takes a lock per key). They raise
`LimitStoreUnavailable` when the store cannot be reached; what that means for the call is `integrations.limiting`'s.
Times are the gateway's clock (`now`), so replicas must keep their clocks in step (NTP), as they do for deadlines.
"""

import hashlib
import logging
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol

import anyio
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, text
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, delete, select

from approvals.models import RateHit
from approvals.store import Store
from integrations.errors import LimitStoreUnavailable

__all__ = ["DatabaseRateLog", "Entry", "RateLog", "RedisRateLog", "Refused", "error_text"]

logger = logging.getLogger(__name__)

Entry = tuple[str, float, int]  # a key's name, its window in seconds, and its max
Refused = tuple[int, float]  # the index of the first key without room, and the seconds until it has room
STATEMENT_TIMEOUT_MS = 2000  # the longest one statement of a count may take on PostgreSQL (a lock wait included)
PRUNE_INTERVAL = 60.0  # seconds between deletions of database entries that have left their window
_CREDENTIALS = re.compile(r"://[^/@\s]*@")


def error_text(exc: BaseException) -> str:
    """An error's first line, with no SQL statement, parameters or credentials in a URL: safe for /healthz."""
    cause = getattr(exc, "orig", None) or exc  # SQLAlchemy's wrapper adds the statement and its parameters
    first = (str(cause).strip().splitlines() or [""])[0]
    return _CREDENTIALS.sub("://***@", f"{type(cause).__name__}: {first}")[:300]


class RateLog(Protocol):
    """A shared sliding log: `acquire` counts one call in every entry's key if all have room."""

    backend: str  # "redis" or "database", as /healthz and refusals name it

    async def acquire(self, entries: Sequence[Entry], now: float) -> Refused | None:
        """None when the call was counted in every key; otherwise the first key without room, and when it will
        have room. Raises `LimitStoreUnavailable`."""
        ...


# KEYS: the call's keys. ARGV: now, a member unique to this call, then each key's window and max.
# Scores are call times; a reply is 0 (counted) or {index of the full key (1-based), seconds to wait, as a string:
# Redis turns a Lua number into an integer}.
_ACQUIRE = """
local now = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[1 + 2 * i])
  local most = tonumber(ARGV[2 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  if count >= most then
    local oldest = redis.call('ZRANGE', key, count - most, count - most, 'WITHSCORES')
    return {i, tostring(tonumber(oldest[2]) + window - now)}
  end
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[2])
  redis.call('PEXPIRE', key, math.ceil(tonumber(ARGV[1 + 2 * i]) * 1000))
end
return 0
"""


class RedisRateLog:
    """Each key a sorted set of call times, counted by one Lua script over all of a call's keys: Redis runs a script
    atomically, so no replica sees a half-counted call. A key expires one window after its newest entry.

    The script goes by `EVALSHA`, loaded again when Redis answers NOSCRIPT (after a restart). A Redis Cluster would
    need a call's keys in one slot, which these are not; signoff expects one Redis (with replicas for failover).
    """

    backend = "redis"

    def __init__(self, client: Redis, *, prefix: str = "signoff:limits:") -> None:
        self._script = client.register_script(_ACQUIRE)
        self._prefix = prefix

    async def acquire(self, entries: Sequence[Entry], now: float) -> Refused | None:
        args: list[str | float | int] = [repr(now), f"{now!r}:{uuid.uuid4().hex}"]
        for _, window, most in entries:
            args += [repr(float(window)), most]
        try:
            reply = await self._script(keys=[self._prefix + key for key, _, _ in entries], args=args)
        except (RedisError, OSError) as exc:
            raise LimitStoreUnavailable(self.backend, error_text(exc)) from exc
        if reply == 0:
            return None
        index, wait = reply
        return int(index) - 1, max(float(wait), 0.0)


def lock_id(key: str) -> int:
    """A PostgreSQL advisory lock id for `key`: 64 bits of its SHA-256 (a collision only makes two keys take turns)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


def _acquire(session: Session, entries: Sequence[Entry], now: float) -> Refused | None:
    if session.get_bind().dialect.name == "postgresql":
        # A database that hangs rather than refuses must become a refusal in seconds, not hold the call for TCP's
        # timeout: this transaction's statements and lock waits are bounded.
        session.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
        # Held to the end of the transaction; taken in one order by every replica, so two never wait on each other.
        for lock in sorted({lock_id(key) for key, _, _ in entries}):
            session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock})
    # Trim each key first. On SQLite this write also begins the transaction with the database's write lock (held to
    # the end), so the counts below cannot go stale; in this process `Store.run` already serialises writers.
    for key, window, _ in entries:
        session.execute(delete(RateHit).where(col(RateHit.key) == key, col(RateHit.at) <= now - window))
    for index, (key, window, most) in enumerate(entries):
        within = (col(RateHit.key) == key, col(RateHit.at) > now - window)
        count = session.exec(select(func.count()).select_from(RateHit).where(*within)).one()
        if count >= most:
            oldest = session.exec(
                select(RateHit.at).where(*within).order_by(col(RateHit.at)).offset(count - most).limit(1)
            ).one()
            session.commit()
            return index, max(oldest + window - now, 0.0)
    session.add_all(RateHit(key=key, at=now, expires=now + window) for key, window, _ in entries)
    session.commit()
    return None


def _prune(session: Session, now: float) -> int:
    result = session.execute(delete(RateHit).where(col(RateHit.expires) <= now))
    session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


class DatabaseRateLog:
    """Each entry a `rate_hits` row, counted in one transaction per call under a lock per key: PostgreSQL's
    `pg_advisory_xact_lock` on a hash of the key (replicas), SQLite's one writer (one process).

    Rows a call's keys no longer need are trimmed as it is counted; `prune` deletes every row past its window, for
    keys no call comes back to.
    """

    backend = "database"

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock

    async def acquire(self, entries: Sequence[Entry], now: float) -> Refused | None:
        try:
            return await self._store.run(_acquire, entries, now)
        except (SQLAlchemyError, OSError) as exc:
            raise LimitStoreUnavailable(self.backend, error_text(exc)) from exc

    async def prune_once(self) -> int:
        """Delete every row that has left its window; return how many."""
        return await self._store.run(_prune, self._clock())

    async def prune(self, interval: float = PRUNE_INTERVAL) -> None:
        """`prune_once` every `interval` seconds, for ever; a supervised part (`Parts`)."""
        while True:
            await anyio.sleep(interval)
            try:
                removed = await self.prune_once()
            except (SQLAlchemyError, OSError) as exc:  # the next round tries again; counting trims its own keys
                logger.warning("Pruning rate_hits failed: %s", error_text(exc))
            else:
                logger.debug("Pruned %d rate_hits rows", removed)
