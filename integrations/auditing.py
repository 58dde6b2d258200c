"""Writes audit records from one task, in batches: the gateway queues a call's row, and awaits its commit.

Durable before answered: an agent reads a call's answer only after the call's row is committed (`committed`).
The writer takes whatever is queued as one batch, one transaction, as soon as there is any, and what arrives
while it commits is the next: many concurrent calls share a commit (a group commit), and the busier signoff
is, the larger the batches. Each call waits for its own row, which is the back-pressure: the queue holds at
most about one row per call in flight, and the policy-reload rows queued from other threads. Nothing is
dropped and nothing blocks the rest: a batch the database refuses is split, and a record it refuses on its
own (or that cannot even be built) is quarantined: written to the log as an `audit_quarantined` row that keeps
it, in ASCII JSON, with why.
Only when the database refuses everything, a check that changes nothing included, is it taken to be down: the
batch waits and is retried with a growing pause, and `health()` says so. Shutdown drains the queue for at most
`close_timeout` seconds, so SIGTERM always ends.

Each batch is one transaction on a connection the writer keeps (`approvals.audit.append_rows`: one
`executemany`, no ORM), in a worker thread; on SQLite, first on the event loop's own thread, straight on
the driver's connection, if the write lock is free at once (`append_rows_sqlite`), and for a call alone in
the gateway on that call's own task (`committed(..., alone=True)`). After a database error the connection
is dropped and a new one is taken for the retry. A record may be queued as a function that builds it: the
gateway defers the canonical JSON, digest and redaction of a call's arguments to the writer that way.
"""

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import anyio
from sqlalchemy import Connection
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import PoolProxiedConnection

from approvals.audit import AuditRecord, append_rows, append_rows_sqlite, probe_chain
from approvals.models import AuditKind
from integrations.background import WriteBehind
from integrations.supervision import Spawner

logger = logging.getLogger(__name__)

Recordable = AuditRecord | Callable[[], AuditRecord]
RETRY_FIRST, RETRY_MOST = 0.5, 10.0  # seconds between tries while the database is down


class _Unbuildable(Exception):
    """Raised when a queued function that builds a record fails: the record is quarantined, never retried."""


class AuditWriter:
    """Batches `AuditRecord`s into the chained log from one background task (a `WriteBehind`)."""

    def __init__(
        self, engine: Engine, *, max_batch: int = 1000, gather: float = 0.0, close_timeout: float = 10.0
    ) -> None:
        self._engine = engine
        # No gather: agents wait for their rows (`committed`), so a batch is written as soon as there is one, and
        # what arrives while it commits is the next batch: a group commit, larger the busier signoff is.
        self._queue: WriteBehind[Recordable] = WriteBehind(
            "audit writer", self._handle, max_batch=max_batch, gather=gather, close_timeout=close_timeout
        )
        self._pause = RETRY_FIRST
        self._connection: Connection | None = None  # the worker threads' connection, which waits for the lock
        self._quick: PoolProxiedConnection | None = None  # the event loop's (see `_write_quick`)
        self._inline = engine.dialect.name == "sqlite"
        self.quarantined = 0
        self.down_since: float | None = None  # monotonic time the database was first found down, while it is
        self.last_error: str | None = None
        self.unstored: list[dict[str, Any]] = []  # quarantined records the database would not take even so
        self.unwritten: list[Recordable] = []  # what shutdown left, the database being down: logged, still counted

    def record(self, item: Recordable) -> int:
        """Queue `item` (from the event loop or a worker thread); returns its place, for `committed`."""
        self._queue.put(item)
        return self._queue.accepted

    async def committed(self, place: int, *, alone: bool = False) -> bool:
        """Wait until the record at `place` (and every one before it) is committed: what the gateway awaits before
        an agent reads its answer. Concurrent calls share one commit. False: signoff stopped before it was.

        `alone`: no other POST is in the gateway, so no other row would share the commit: on SQLite it is made
        at once on the caller's task, if the write lock is free, instead of by the writer's task.
        """
        if alone and self._inline:
            self._queue.handle_now(self._write_now)
        return await self._queue.reached(place)

    @property
    def queued(self) -> int:
        return self._queue.queued + len(self.unwritten)

    @property
    def written(self) -> int:
        return self._queue.handled

    def health(self) -> dict[str, Any]:
        """What /healthz shows of the writer; `ok` is False while the database is down or a record is unstored."""
        down = None if self.down_since is None else round(time.monotonic() - self.down_since, 1)
        return {
            "ok": down is None and not self.unstored,
            "queued": self.queued,
            "written": self.written,
            "quarantined": self.quarantined,
            "database_down_for": down,
            "last_error": self.last_error,
            "unstored": len(self.unstored),
        }

    async def _handle(self, batch: Sequence[Recordable]) -> int:
        """Write `batch`; how many of its records were dealt with (0 while the database is down: it waits)."""
        done: int | None = len(batch)
        if not (self._inline and self._write_now(batch)):
            try:
                await anyio.to_thread.run_sync(self._write, batch)
            except Exception:
                done = await anyio.to_thread.run_sync(self._isolate, batch)
        if done is None:
            if self.down_since is None:
                self.down_since = time.monotonic()
                logger.error("The audit log's database is down (%s); records wait", self.last_error)
            await anyio.sleep(self._pause)
            self._pause = min(self._pause * 2, RETRY_MOST)
            return 0
        if self.down_since is not None:
            logger.warning("The audit log's database is back; writing %d queued records", self.queued)
            self.down_since = None
        self._pause = RETRY_FIRST
        return done

    def _write_now(self, batch: Sequence[Recordable]) -> int:
        """On SQLite, write `batch` on the event loop's own thread if the write lock is free at once: a local
        commit costs ~50 µs, and handing it to a worker thread and back cost three times that (measured). A
        lock held elsewhere (another process, the approvals' thread) or any failure: 0 (nothing written), and
        the batch goes to a worker thread, which waits for the lock, or splits the batch, as always. Returns how
        many records were written, for `WriteBehind.handle_now`."""
        try:
            self._write(batch, wait=False)
        except Exception:
            return 0
        return len(batch)

    def _write(self, batch: Sequence[Recordable], *, wait: bool = True) -> None:
        records = [_built(r) for r in batch]
        if self._inline and not wait:
            self._write_quick(records)
            return
        connection = self._connection
        if connection is None:
            connection = self._connection = self._engine.connect()
        try:
            append_rows(connection, records)
            connection.commit()
        except BaseException:
            self._drop_connection()
            raise

    def _write_quick(self, records: list[AuditRecord]) -> None:
        """Commit `records` on the event loop's thread, on a SQLite connection of the writer's own that takes the
        write lock only if it is free at once (busy_timeout 0, set once, so a commit runs no PRAGMA)."""
        quick = self._quick
        if quick is None:
            quick = self._quick = self._engine.raw_connection()
            quick.driver_connection.execute("PRAGMA busy_timeout=0")  # type: ignore[union-attr]
        try:
            append_rows_sqlite(quick.driver_connection, self._engine.dialect, records)
        except DBAPIError as exc:
            if not _busy(exc):  # the lock was busy: keep the connection, the batch goes to a worker thread
                self._drop_quick()
            raise
        except BaseException:
            self._drop_quick()
            raise

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.rollback()
            connection.close()
        except SQLAlchemyError:
            logger.debug("Closing the audit writer's connection failed", exc_info=True)

    def _drop_quick(self) -> None:
        quick, self._quick = self._quick, None
        if quick is None:
            return
        try:  # never back to the pool with busy_timeout 0: every other user of the pool would fail on a busy lock
            quick.invalidate()
        except Exception:
            logger.debug("Closing the audit writer's quick connection failed", exc_info=True)

    def _store_is_up(self) -> bool:
        try:
            with self._engine.connect() as connection:
                probe_chain(connection)
        except SQLAlchemyError as exc:
            self.last_error = _why(exc)
            return False
        return True

    def _isolate(self, batch: Sequence[Recordable]) -> int | None:
        """After `batch` failed: write its records one by one and quarantine each that fails on its own.

        Returns how many records were dealt with, or None when the database is down (nothing was written).
        """
        for done, item in enumerate(batch):
            try:
                self._write([item])
            except _Unbuildable as exc:
                self._quarantine(item, str(exc))
            except Exception as exc:  # the database refused this record, or it is down: the probe tells which
                if not self._store_is_up():
                    return done or None
                self._quarantine(item, _why(exc))
        return len(batch)

    def _quarantine(self, item: Recordable, why: str) -> None:
        kept = _kept(item)
        logger.error("An audit record could not be stored and is quarantined in the log: %s", why)
        record = AuditRecord(
            kind=AuditKind.QUARANTINED,  # its own columns stay empty: one of the record's values was what failed
            actor="signoff",
            outcome="quarantined",
            detail=f"an audit record could not be stored as it was: {why}"[:2000],
            arguments=json.dumps(kept, ensure_ascii=True, default=str),  # ASCII: every database stores it
        )
        try:
            self._write([record])
        except Exception as exc:  # kept in memory and shown by /healthz: never dropped without a word
            logger.error("The quarantine record could not be stored either: %s", _why(exc))
            self.unstored.append(kept)
            return
        self.quarantined += 1

    def _disconnect(self) -> None:
        self._drop_connection()
        self._drop_quick()

    async def flush(self) -> None:
        """Write everything queued so far (the CLI and tests call this to read their own writes).

        While the database is down this waits for it, retrying with a growing pause.
        """
        await self._queue.flush()

    def start(self, task_group: Spawner) -> None:
        self._queue.start(task_group)

    async def close(self) -> None:
        """Write what is queued, for at most `close_timeout` seconds; what the database did not take is logged."""
        self.unwritten = await self._queue.close()
        if self.unwritten:
            count = len(self.unwritten)
            logger.error("Stopping with %d audit records unwritten: the database is down (%s)", count, self.last_error)
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._queue.close_timeout):
            await anyio.to_thread.run_sync(self._disconnect)


def _built(item: Recordable) -> AuditRecord:
    if isinstance(item, AuditRecord):
        return item
    try:
        return item()
    except Exception as exc:
        raise _Unbuildable(f"building it failed: {_why(exc)}") from exc


def _kept(item: Recordable) -> dict[str, Any]:
    """What a quarantined record keeps: its fields, or what its builder was given when it could not be built."""
    try:
        return asdict(_built(item))
    except _Unbuildable:
        args = getattr(item, "args", ())
        return {"unbuilt": repr(item)[:200], "args": [repr(a)[:2000] for a in args]}


def _busy(exc: DBAPIError) -> bool:
    """Whether SQLite refused for its write lock being held elsewhere (SQLITE_BUSY or SQLITE_LOCKED, extended
    codes included), which a worker thread waits out."""
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _why(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]
