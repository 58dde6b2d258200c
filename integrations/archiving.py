"""Retention: move the audit log's oldest rows to an archive file that verifies on its own, then remove them.

The archive is written first (to a `.partial` file, fsynced, then renamed), the rows going into it verified as they
are written; only then are they deleted (in steps, below), the last step storing a signed `archive` checkpoint of
the last archived row. That checkpoint ends the archive file too, so it joins the two: the first kept row's
`prev_hash` is its hash, and `verify` proves the kept log complete from there. The newest row is never archived,
so the chain always goes on from a row the database holds.

The server may go on writing meanwhile: its appends only ever add rows after the head, which is never archived,
and each delete takes the chain's lock (`approvals.audit.lock_chain`: PostgreSQL's advisory lock, SQLite's write
lock), so an append waits for it rather than reading a head the delete is changing. The rows go in steps of
`REMOVE_AT_ONCE`, oldest first, each one transaction that also stores a signed archive checkpoint of its last
row (and removes the step before's): one delete of 200,000 rows held SQLite's lock, and so every call's answer,
for 4 s, and a few million would pass the writers' 30 s busy timeout. Between steps, and after a crash in
one, the log still starts at a row an archive checkpoint joins, so `verify` passes at every moment; the archive
file holds only the last step's checkpoint, and every row. A row is never removed before
every `[telemetry] audit_to` destination has sent it: archive refuses (`ArchiveRefused`), since removing the only
other copy's share of the log would leave an auditor's copy short with nothing saying why.
"""

import gzip
import io
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, delete, func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from approvals.audit import lock_chain
from approvals.checkpoints import ARCHIVE, Checkpoint, sign, store
from approvals.models import AuditCheckpoint, AuditEvent, AuditExportCursor
from approvals.verification import Proof, prove
from integrations.audit_files import Export, checkpoint_lines, joining, read_batch, row_lines
from integrations.audit_sinks import checkpoint_cursor

REMOVE_AT_ONCE = 5000  # rows removed per transaction: SQLite took ~0.1 s for these, the chain's lock held meanwhile
CATCH_UP = 10.0  # seconds archive waits for [telemetry] audit_to destinations to send the rows it would remove


class ArchiveRefused(ValueError):
    """Raised when an archive cannot be made: nothing to archive, the file exists, or the chain does not verify."""


@dataclass(frozen=True, slots=True)
class Archived:
    rows: int
    through: int  # the last archived row's id
    kept: int
    checkpoint: Checkpoint
    unsent: tuple[str, ...] = ()  # destinations not in `exports` whose cursor had not reached `through`


def boundary(session: Session, cutoff: datetime) -> int | None:
    """The last row to archive: every row before the first one at or after `cutoff`, never the newest row."""
    first_kept = session.exec(select(func.min(AuditEvent.id)).where(col(AuditEvent.at) >= cutoff)).one()
    head = session.exec(select(func.max(AuditEvent.id))).one()
    if head is None:
        return None
    limit = head if first_kept is None else first_kept
    through = session.exec(select(func.max(AuditEvent.id)).where(col(AuditEvent.id) < limit)).one()
    return through


def archive(
    engine: Engine,
    key: Ed25519PrivateKey,
    cutoff: datetime,
    out: Path,
    now: datetime,
    exports: Sequence[str] = (),
    catch_up: float = CATCH_UP,
) -> Archived:
    """Archive every row before `cutoff` to `out` (gzipped when it ends in .gz), then remove them from the database.

    Args:
        exports: the `[telemetry] audit_to` destinations: none may be owed a row (or checkpoint) to be removed.
        catch_up: how many seconds to wait for them to send those rows before refusing.

    Raises:
        ArchiveRefused: nothing is older than `cutoff`, `out` exists, the rows to archive do not verify, or a
            destination in `exports` has not sent them yet (then nothing is removed and no file is left).
    """
    if out.exists():
        raise ArchiveRefused(f"{out} exists: an archive is never overwritten")
    with Session(engine) as session:
        through = boundary(session, cutoff)
    if through is None:
        raise ArchiveRefused(f"no row before {cutoff.isoformat()} to archive (the newest row is always kept)")
    _caught_up(engine, exports, through, catch_up)
    export = Export(newest_first=False, upto=through)
    partial = out.with_name(out.name + ".partial")
    try:
        with _Sink(partial) as sink:
            header = export.header(now)
            header["export"]["archive"] = {"before": cutoff.isoformat(), "through": through}
            sink.write(json.dumps(header) + "\n")
            proof, last, start, marks = _write_rows(engine, export, sink, key)
            if not proof.ok:
                raise ArchiveRefused(
                    "the rows to archive do not verify, so none were removed: " + "; ".join(proof.faults)
                )
            if last is None:
                raise ArchiveRefused("no row to archive")
            checkpoint = sign(key, through, last, now, ARCHIVE)
            sink.writelines(checkpoint_lines(start))
            sink.writelines(checkpoint_lines([checkpoint]))
        partial.rename(out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    marks = [*(m for m in marks if m[0] < through), (through, last)]
    unsent: tuple[str, ...] = ()
    for number, (upto, hash_) in enumerate(marks):
        mark = checkpoint if upto == through else sign(key, upto, hash_, now, ARCHIVE)
        try:
            with engine.begin() as connection:
                lock_chain(connection)
                if number == 0:  # again, under the lock: a destination may have stopped sending since
                    unsent = _refuse_unsent(connection, exports, through, lock=True)
                _remove_through(connection, mark)
        except ArchiveRefused:  # only ever in the first step
            out.unlink(missing_ok=True)  # nothing was removed: the rows are all still in the database
            raise
    with Session(engine) as session:
        kept = session.exec(select(func.count()).select_from(AuditEvent)).one()
    return Archived(proof.rows, through, int(kept), checkpoint, unsent)


def _remove_through(connection: Connection, mark: Checkpoint) -> None:
    """Store the archive checkpoint `mark`, then remove every row up to its row and every checkpoint up to it but
    `mark` (an earlier step's mark too). The caller holds the chain's lock."""
    store(connection, mark)
    connection.execute(delete(AuditEvent).where(col(AuditEvent.id) <= mark.row_id))
    connection.execute(
        delete(AuditCheckpoint).where(
            col(AuditCheckpoint.row_id) <= mark.row_id,
            ~((col(AuditCheckpoint.row_id) == mark.row_id) & (col(AuditCheckpoint.kind) == ARCHIVE)),
        )
    )


def _caught_up(engine: Engine, exports: Sequence[str], through: int, within: float) -> None:
    """Wait up to `within` seconds for every destination in `exports` to have sent the rows through `through`: a
    running server's tail is a second or so behind its writer; one that is failing is refused for, by name."""
    deadline = time.monotonic() + within
    while True:
        try:
            with engine.connect() as connection:
                _refuse_unsent(connection, exports, through)
            return
        except ArchiveRefused:
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.2)


def _refuse_unsent(
    connection: Connection, exports: Sequence[str], through: int, *, lock: bool = False
) -> tuple[str, ...]:
    """Refuse when a destination in `exports` has not sent every row up to `through`, or a checkpoint that would be
    removed with them; say which other destinations (cursors left by an earlier `audit_to`) have not.

    With `lock`, the cursors are locked first (PostgreSQL): a batch being sent now is waited for, not raced.
    """
    query = select(col(AuditExportCursor.name), col(AuditExportCursor.last_id))
    if lock:
        query = query.with_for_update()
    cursors: dict[str, int] = {row[0]: row[1] for row in connection.execute(query)}
    problems, others = [], []
    for name in exports:
        rows = cursors.get(name)
        if rows is not None and rows < through:
            problems.append(f"{name} has sent the rows through {rows} only")
            continue
        sent = cursors.get(checkpoint_cursor(name))
        if sent is not None:
            owed = select(func.count()).where(col(AuditCheckpoint.id) > sent, col(AuditCheckpoint.row_id) <= through)
            if connection.execute(owed).scalar_one():
                problems.append(f"{name} has not sent every checkpoint of the rows through {through}")
    if problems:
        raise ArchiveRefused(
            f"archiving the rows through {through} would remove some that [telemetry] audit_to has not sent: "
            + "; ".join(problems)
            + " (see /healthz, audit_export; archive again once it has caught up)"
        )
    for name, last in sorted(cursors.items()):
        if name not in exports and ":" not in name and last < through:
            others.append(f"{name} (rows after {last})")
    return tuple(others)


def _write_rows(
    engine: Engine, export: Export, sink: IO[str], key: Ed25519PrivateKey
) -> tuple[Proof, str | None, list[Checkpoint], list[tuple[int, str]]]:
    """Write the rows and their checkpoints, verifying them as they go; (proof, last row's hash, join checkpoints,
    every `REMOVE_AT_ONCE`-th row's id and hash: where the removal's steps end)."""
    with Session(engine) as session:
        named = [Checkpoint.from_row(c) for c in session.exec(select(AuditCheckpoint))]
        first = session.exec(select(AuditEvent).order_by(col(AuditEvent.id)).limit(1)).first()
        start = [] if first is None else joining(session, first.prev_hash)
    last: list[str] = []
    marks: list[tuple[int, str]] = []
    written = 0

    def rows() -> Iterator[dict[str, Any]]:
        nonlocal written
        after: int | None = None
        while True:
            with Session(engine) as session:
                batch, anchors = read_batch(session, export, after)
            if not batch:
                return
            for row in batch:
                sink.writelines(row_lines(row, anchors))
                last[:] = [row.hash]
                written += 1
                if written % REMOVE_AT_ONCE == 0:
                    marks.append((row.id or 0, row.hash))
                yield row.model_dump()
            after = batch[-1].id

    proof = prove(rows(), [c for c in named if c.row_id <= (export.upto or 0)], [key.public_key()])
    return proof, (last[0] if last else None), start, marks


class _Sink:
    """A new file of text lines, gzipped when its name says so, fsynced when it is closed without an error."""

    def __init__(self, path: Path) -> None:
        self._raw = path.open("xb")
        self._gzip = gzip.GzipFile(fileobj=self._raw, mode="wb") if path.name.endswith(".gz.partial") else None
        self.text = io.TextIOWrapper(self._gzip or self._raw, encoding="utf-8", write_through=False)

    def __enter__(self) -> IO[str]:
        return self.text

    def __exit__(self, kind: object, *_: object) -> None:
        try:
            self.text.flush()
            self.text.detach()
            if self._gzip is not None:
                self._gzip.close()  # writes gzip's trailer; the file underneath stays open
            if kind is None:
                self._raw.flush()
                os.fsync(self._raw.fileno())
        finally:
            self._raw.close()
