"""Slack's replay cache, shared: a signed request handled on any replica is a replay on every other.

Redis when `[gateway] redis_url` is set (`SET key NX PX`: one round trip), else the database (an insert whose
primary key is the signature: one transaction, with old rows pruned now and then). A signature is kept for twice
Slack's 5-minute window, past which the timestamp check refuses the request anyway. When the store cannot be
reached the request is refused (503, which Slack retries) rather than risk doing a replayed action twice:
deciding is idempotent, but a replayed note or a second rejection reason is not, and a replay is exactly what a
captured request would be.
"""

import time
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session, col

from approvals.models import SlackReplay
from approvals.store import Store
from integrations.errors import IntegrationError

__all__ = ["DatabaseReplays", "RedisReplays", "ReplayCache", "ReplayStoreDown"]

KEEP = 600.0  # seconds: twice Slack's tolerance for a request's timestamp
PRUNE_EVERY = 60.0


class ReplayStoreDown(IntegrationError, ConnectionError):
    """Raised when the shared store that remembers Slack requests cannot be reached."""

    def __init__(self, store: str) -> None:
        super().__init__(f"the replay cache ({store}) cannot be reached")
        self.store = store


class ReplayCache(Protocol):
    async def first(self, signature: str) -> bool:
        """Remember `signature`; True if no replica had seen it. Raises ReplayStoreDown."""
        ...


class RedisReplays:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def first(self, signature: str) -> bool:
        try:
            fresh = await self._redis.set(f"signoff:slack:seen:{signature}", b"1", nx=True, px=int(KEEP * 1000))
        except RedisError as exc:
            raise ReplayStoreDown("Redis") from exc
        return bool(fresh)


class DatabaseReplays:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._pruned = 0.0

    async def first(self, signature: str) -> bool:
        now = self._clock()
        prune = now - self._pruned > PRUNE_EVERY
        if prune:
            self._pruned = now

        def remember(session: Session) -> bool:
            if prune:
                session.execute(delete(SlackReplay).where(col(SlackReplay.seen_at) < now - KEEP))
            session.add(SlackReplay(signature=signature, seen_at=now))
            try:
                session.commit()
            except IntegrityError:
                return False
            return True

        try:
            return await self._store.run(remember)
        except SQLAlchemyError as exc:
            raise ReplayStoreDown("the database") from exc
