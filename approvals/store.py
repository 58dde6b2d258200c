"""The approval database as the domain uses it: each domain function runs in a session of its own, on a worker thread.

Domain functions take a `Session` first (`service.decide(session, ...)`); `Store.run(fn, *args)` runs one in a fresh
session, off the event loop, and is typed by the function it runs. A few worker threads are reused, because each
thread that touches the database grows memory of its own. `Store.insist` is for the writes that must land (the
outcome of an approved call): it retries with backoff instead of raising.
"""

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Concatenate, ParamSpec, TypeVar

import anyio
from sqlalchemy.engine import Engine
from sqlmodel import Session

__all__ = ["Store", "serialised"]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

_SQLITE_WRITERS = threading.Lock()


def serialised(engine: Engine) -> AbstractContextManager[object]:
    """A lock to hold around a transaction: SQLite has one writer at a time, so threads of this process take turns
    here instead of timing out on the database lock; PostgreSQL's own row locks need no such help."""
    return _SQLITE_WRITERS if engine.dialect.name == "sqlite" else nullcontext()


class Store:
    """Runs domain functions on `engine`, at most `slots` at once (one on SQLite, whose writers take turns)."""

    def __init__(self, engine: Engine, *, slots: int) -> None:
        self.engine = engine
        self._slots = anyio.CapacityLimiter(slots)

    async def run(self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(session, *args, **kwargs)` in a worker thread, with a session of its own."""

        def call() -> T:
            with serialised(self.engine), Session(self.engine, expire_on_commit=False) as session:
                return fn(session, *args, **kwargs)

        return await anyio.to_thread.run_sync(call, limiter=self._slots)

    async def insist(
        self,
        what: str,
        fn: Callable[Concatenate[Session, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T | None:
        """`run`, retried with a backoff that doubles up to 10 s, 10 attempts in all; None if every one failed.

        For a write whose loss would leave a row stuck (an approved call left `executing` could never run again):
        a database that is down for a while delays it instead of dropping it. `what` names it in the log.
        """
        for attempt in range(1, 11):
            try:
                return await self.run(fn, *args, **kwargs)
            except Exception:  # the top-level handler of a write that must land: log, wait, try again
                logger.exception("%s failed (attempt %d of 10)", what, attempt)
                await anyio.sleep(min(0.1 * 2**attempt, 10.0))
        return None
