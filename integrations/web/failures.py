"""Where failed sign-ins are counted, for every replica at once: Redis when `[gateway] redis_url` is set (one Lua
script: atomic), else the database (one transaction; on PostgreSQL under an advisory lock, so replicas take turns).

An attempt is recorded as a failure *before* its token is checked and taken back if the token was right: two
guesses that arrive together cannot both slip under the limit. `throttle.py` does the arithmetic; this module only
keeps the timestamps. A store that cannot be reached raises `SignInStoreDown` and sign-in is refused (fail closed).
"""

from dataclasses import dataclass
from typing import Protocol
from uuid import uuid4

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import delete, text
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from approvals.models import SignInFailure, SignInKnown
from approvals.store import Store
from integrations.errors import IntegrationError

__all__ = ["DatabaseFailures", "Limits", "RedisFailures", "Seen", "SignInStoreDown"]

_LOCK_KEY = 0x5160FF + 2  # any constant: replicas take turns counting sign-ins


class SignInStoreDown(IntegrationError, ConnectionError):
    """Raised when the shared store that counts failed sign-ins cannot be reached."""

    def __init__(self, store: str) -> None:
        super().__init__(f"the sign-in throttle's store ({store}) cannot be reached")
        self.store = store


@dataclass(frozen=True, slots=True)
class Limits:
    per_client: int
    per_page: int
    window: float
    known_for: float


@dataclass(frozen=True, slots=True)
class Seen:
    """What the store held when an attempt came: this client's and everyone's failures in the window (newest first,
    at most the limit), whether the client signed in lately, and the id of the failure recorded for this attempt
    (None: it is blocked, and nothing was recorded)."""

    mine: tuple[float, ...]
    page: tuple[float, ...]
    known: bool
    recorded: str | None


def admits(limits: Limits, mine: int, page: int, known: bool) -> bool:
    return mine < limits.per_client and (page < limits.per_page or known)


class FailureStore(Protocol):
    async def attempt(self, client: str, now: float, limits: Limits) -> Seen: ...

    async def settle(self, client: str, recorded: str, known_at: float | None) -> None:
        """Take back the failure recorded for an attempt; `known_at`: it signed in then (exempt from the pause)."""
        ...


class DatabaseFailures:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def attempt(self, client: str, now: float, limits: Limits) -> Seen:
        def run(session: Session) -> Seen:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            cutoff = now - limits.window
            session.execute(delete(SignInFailure).where(col(SignInFailure.at) <= cutoff))
            session.execute(delete(SignInKnown).where(col(SignInKnown.at) <= now - limits.known_for))
            newest = (
                select(SignInFailure.at).where(col(SignInFailure.at) > cutoff).order_by(col(SignInFailure.at).desc())
            )
            mine = tuple(session.exec(newest.where(SignInFailure.client == client).limit(limits.per_client)).all())
            page = tuple(session.exec(newest.limit(limits.per_page)).all())
            known = session.get(SignInKnown, client) is not None
            recorded = None
            if admits(limits, len(mine), len(page), known):
                recorded = uuid4().hex
                session.add(SignInFailure(id=recorded, client=client, at=now))
            session.commit()
            return Seen(mine, page, known, recorded)

        try:
            return await self._store.run(run)
        except SQLAlchemyError as exc:
            raise SignInStoreDown("the database") from exc

    async def settle(self, client: str, recorded: str, known_at: float | None) -> None:
        def run(session: Session) -> None:
            session.execute(delete(SignInFailure).where(col(SignInFailure.id) == recorded))
            if known_at is not None:
                session.merge(SignInKnown(client=client, at=known_at))
            session.commit()

        try:
            await self._store.run(run)
        except SQLAlchemyError as exc:
            raise SignInStoreDown("the database") from exc


# KEYS: this client's failures, everyone's, the known clients (sorted sets scored by time).
# ARGV: now, window, per_client, per_page, known_for, client, id. Returns {mine, page, known, recorded or ""}.
_ATTEMPT = """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local per_client, per_page, known_for = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - known_for)
local mine = redis.call('ZREVRANGE', KEYS[1], 0, per_client - 1, 'WITHSCORES')
local page = redis.call('ZREVRANGE', KEYS[2], 0, per_page - 1, 'WITHSCORES')
local known = redis.call('ZSCORE', KEYS[3], ARGV[6]) and 1 or 0
local recorded = ''
if #mine / 2 < per_client and (#page / 2 < per_page or known == 1) then
  redis.call('ZADD', KEYS[1], now, ARGV[7])
  redis.call('ZADD', KEYS[2], now, ARGV[7])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
  redis.call('PEXPIRE', KEYS[2], math.ceil(window * 1000))
  recorded = ARGV[7]
end
return {mine, page, known, recorded}
"""


def _scores(pairs: list[bytes]) -> tuple[float, ...]:
    return tuple(float(score) for score in pairs[1::2])


class RedisFailures:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._attempt = redis.register_script(_ATTEMPT)

    @staticmethod
    def _keys(client: str) -> list[str]:
        return [f"signoff:signin:client:{client}", "signoff:signin:page", "signoff:signin:known"]

    async def attempt(self, client: str, now: float, limits: Limits) -> Seen:
        args: list[str | float] = [
            now,
            limits.window,
            limits.per_client,
            limits.per_page,
            limits.known_for,
            client,
            uuid4().hex,
        ]
        try:
            mine, page, known, recorded = await self._attempt(keys=self._keys(client), args=args)
        except RedisError as exc:
            raise SignInStoreDown("Redis") from exc
        return Seen(_scores(mine), _scores(page), bool(known), recorded.decode() or None)

    async def settle(self, client: str, recorded: str, known_at: float | None) -> None:
        mine, page, known = self._keys(client)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrem(mine, recorded)
                pipe.zrem(page, recorded)
                if known_at is not None:
                    pipe.zadd(known, {client: known_at})
                await pipe.execute()
        except RedisError as exc:
            raise SignInStoreDown("Redis") from exc
