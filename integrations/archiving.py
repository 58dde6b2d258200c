"""Retention: move the audit log's oldest rows to an archive file that verifies on its own, then remove them.

The archive is written first (to a `.partial` file, fsynced, then renamed), the rows going into it verified as they
are written; only then, in one transaction, are they deleted and an `archive` checkpoint of the last archived row
stored, signed. That checkpoint ends the archive file too, so it joins the two: the first kept row's `prev_hash` is
its hash, and `verify` proves the kept log complete from there. The newest row is never archived, so the chain
always goes on from a row the database holds.
"""

import gzip
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from approvals.audit import lock_chain
from approvals.checkpoints import ARCHIVE, Checkpoint, sign, store
from approvals.models import AuditCheckpoint, AuditEvent
from approvals.verification import Proof, prove
from integrations.audit_files import Export, checkpoint_lines, joining, read_batch, row_lines


class ArchiveRefused(ValueError):
    """Raised when an archive cannot be made: nothing to archive, the file exists, or the chain does not verify."""


@dataclass(frozen=True, slots=True)
class Archived:
    rows: int
    through: int  # the last archived row's id
    kept: int
    checkpoint: Checkpoint


def boundary(session: Session, cutoff: datetime) -> int | None:
    """The last row to archive: every row before the first one at or after `cutoff`, never the newest row."""
    first_kept = session.exec(select(func.min(AuditEvent.id)).where(col(AuditEvent.at) >= cutoff)).one()
    head = session.exec(select(func.max(AuditEvent.id))).one()
    if head is None:
        return None
    limit = head if first_kept is None else first_kept
    through = session.exec(select(func.max(AuditEvent.id)).where(col(AuditEvent.id) < limit)).one()
    return through


def archive(engine: Engine, key: Ed25519PrivateKey, cutoff: datetime, out: Path, now: datetime) -> Archived:
    """Archive every row before `cutoff` to `out` (gzipped when it ends in .gz), then remove them from the database.

    Raises:
        ArchiveRefused: nothing is older than `cutoff`, `out` exists, or the rows to archive do not verify (then
            nothing is removed and no file is left).
    """
    if out.exists():
        raise ArchiveRefused(f"{out} exists: an archive is never overwritten")
    with Session(engine) as session:
        through = boundary(session, cutoff)
    if through is None:
        raise ArchiveRefused(f"no row before {cutoff.isoformat()} to archive (the newest row is always kept)")
    export = Export(newest_first=False, upto=through)
    partial = out.with_name(out.name + ".partial")
    try:
        with _Sink(partial) as sink:
            header = export.header(now)
            header["export"]["archive"] = {"before": cutoff.isoformat(), "through": through}
            sink.write(json.dumps(header) + "\n")
            proof, last, start = _write_rows(engine, export, sink, key)
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
    with engine.begin() as connection:
        lock_chain(connection)
        store(connection, checkpoint)
        connection.execute(delete(AuditEvent).where(col(AuditEvent.id) <= through))
        connection.execute(
            delete(AuditCheckpoint).where(
                col(AuditCheckpoint.row_id) <= through,
                ~((col(AuditCheckpoint.row_id) == through) & (col(AuditCheckpoint.kind) == ARCHIVE)),
            )
        )
        kept = connection.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
    return Archived(proof.rows, through, int(kept), checkpoint)


def _write_rows(
    engine: Engine, export: Export, sink: IO[str], key: Ed25519PrivateKey
) -> tuple[Proof, str | None, list[Checkpoint]]:
    """Write the rows and their checkpoints, verifying them as they go; (proof, last row's hash, join checkpoints)."""
    with Session(engine) as session:
        named = [Checkpoint.from_row(c) for c in session.exec(select(AuditCheckpoint))]
        first = session.exec(select(AuditEvent).order_by(col(AuditEvent.id)).limit(1)).first()
        start = [] if first is None else joining(session, first.prev_hash)
    last: list[str] = []

    def rows() -> Iterator[dict[str, Any]]:
        after: int | None = None
        while True:
            with Session(engine) as session:
                batch, anchors = read_batch(session, export, after)
            if not batch:
                return
            for row in batch:
                sink.writelines(row_lines(row, anchors))
                last[:] = [row.hash]
                yield row.model_dump()
            after = batch[-1].id

    proof = prove(rows(), [c for c in named if c.row_id <= (export.upto or 0)], [key.public_key()])
    return proof, (last[0] if last else None), start


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
