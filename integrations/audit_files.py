"""Complete, verifiable exports of the audit log, shared by `signoff audit`, the web page and `signoff audit archive`.

An export is read in batches by row id (keyset), never all at once, and stops at the head it found when it began,
so rows written meanwhile do not make it ragged. JSON lines are one row each (every column, `prev_hash` and `hash`
included) plus two other kinds of line, told apart by their only key: a first `{"export": {...}}` line saying what
was asked (filters, limit, order, whether the rows are contiguous), and `{"checkpoint": {...}}` after each row a
signed checkpoint names, so the file verifies on its own (`signoff audit verify --file`). The reader also takes the
JSON lines `[telemetry] audit_to` writes (`{"signoff_audit": {...}}`, integrations/audit_sinks.py). CSV carries the
hashes but no checkpoints (a spreadsheet cannot hold them), so only JSON lines verify.
"""

import csv
import gzip
import io
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import func
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from approvals.checkpoints import Checkpoint
from approvals.models import AuditCheckpoint, AuditEvent
from approvals.verification import Scope

BATCH = 1000
Where = Callable[[SelectOfScalar[Any]], SelectOfScalar[Any]]
EXPORT_COLUMNS = (
    *("id", "at", "kind", "server", "tool", "identity", "actor", "rule", "outcome", "latency_ms", "detail"),
    *("channel", "policy_version", "args_digest", "arguments", "prev_hash", "hash"),
)


def _all(query: SelectOfScalar[Any]) -> SelectOfScalar[Any]:
    return query


@dataclass(frozen=True, slots=True)
class Export:
    """What is exported: the rows `where` keeps, up to row `upto`, in `newest_first` order, at most `limit`."""

    where: Where = _all
    filters: Mapping[str, str] | None = None  # as the user gave them, for the header; any: not contiguous
    limit: int | None = None
    newest_first: bool = True
    upto: int | None = None  # the head when the export began (set by `begin`)

    @property
    def scope(self) -> Scope:
        contiguous = not any((self.filters or {}).values())
        return Scope(contiguous=contiguous, whole=contiguous and self.limit is None)

    def header(self, now: datetime) -> dict[str, Any]:
        scope = self.scope
        return {
            "export": {
                "created_at": now.astimezone(UTC).isoformat(),
                "filters": {k: v for k, v in (self.filters or {}).items() if v},
                "limit": self.limit,
                "order": "newest_first" if self.newest_first else "oldest_first",
                "upto": self.upto,
                "contiguous": scope.contiguous,
                "whole": scope.whole,
            }
        }


def begin(session: Session, export: Export) -> Export:
    """`export` bound to the log's head now: rows written from here on are not part of it."""
    head = session.exec(select(func.max(AuditEvent.id))).one()
    return Export(export.where, export.filters, export.limit, export.newest_first, head or 0)


def read_batch(
    session: Session, export: Export, after: int | None, size: int = BATCH
) -> tuple[list[AuditEvent], dict[int, list[Checkpoint]]]:
    """The next `size` rows of `export` beyond row `after` (in its order), and the checkpoints naming them."""
    query = export.where(select(AuditEvent)).where(col(AuditEvent.id) <= (export.upto or 0))
    if export.newest_first:
        if after is not None:
            query = query.where(col(AuditEvent.id) < after)
        query = query.order_by(col(AuditEvent.id).desc())
    else:
        if after is not None:
            query = query.where(col(AuditEvent.id) > after)
        query = query.order_by(col(AuditEvent.id))
    rows: list[AuditEvent] = list(session.exec(query.limit(size)))
    ids = [row.id for row in rows]
    named: dict[int, list[Checkpoint]] = {}
    if ids:
        found = session.exec(
            select(AuditCheckpoint).where(col(AuditCheckpoint.row_id).in_(ids)).order_by(col(AuditCheckpoint.id))
        )
        for checkpoint in found:
            named.setdefault(checkpoint.row_id, []).append(Checkpoint.from_row(checkpoint))
    return rows, named


def joining(session: Session, prev_hash: str) -> list[Checkpoint]:
    """The checkpoints of the row before an export's oldest one (an archive's end): its start is anchored by them."""
    found = session.exec(select(AuditCheckpoint).where(col(AuditCheckpoint.hash) == prev_hash))
    return [Checkpoint.from_row(c) for c in found]


def jsonl_rows(session_for: Callable[[], Session], export: Export, now: datetime) -> Iterator[str]:
    """Every line of `export` as JSON lines, reading one batch per session from `session_for()` (for the CLI)."""
    with session_for() as session:
        export = begin(session, export)
    yield json.dumps(export.header(now)) + "\n"
    after: int | None = None
    left = export.limit
    oldest: AuditEvent | None = None
    while left is None or left > 0:
        with session_for() as session:
            rows, named = read_batch(session, export, after, BATCH if left is None else min(BATCH, left))
        if not rows:
            break
        for row in rows:
            yield from row_lines(row, named)
        after = rows[-1].id
        oldest = rows[-1] if export.newest_first else (oldest or rows[0])
        if left is not None:
            left -= len(rows)
    if oldest is not None:
        with session_for() as session:
            yield from checkpoint_lines(joining(session, oldest.prev_hash))


def row_lines(row: AuditEvent, named: Mapping[int, list[Checkpoint]]) -> Iterator[str]:
    """A row's JSON line, then a line for each checkpoint naming it."""
    yield row.model_dump_json() + "\n"
    yield from checkpoint_lines(named.get(row.id or 0, ()))


def checkpoint_lines(checkpoints: Any) -> Iterator[str]:
    for checkpoint in checkpoints:
        yield json.dumps({"checkpoint": checkpoint.as_json()}, separators=(",", ":")) + "\n"


def csv_cell(value: Any) -> Any:
    # A cell starting with = + - @ (or a tab or CR) is a formula to a spreadsheet: a hostile tool argument could
    # run one on the auditor's machine. The quote keeps the text readable and inert (OWASP "CSV injection").
    if isinstance(value, datetime):
        return value.replace(tzinfo=value.tzinfo or UTC).astimezone(UTC).isoformat()
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def csv_line(values: Any) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue()


def csv_rows(session_for: Callable[[], Session], export: Export) -> Iterator[str]:
    """Every row of `export` as CSV, header first, with the hashes (no checkpoints)."""
    yield csv_line(EXPORT_COLUMNS)
    for row in each_row(session_for, export):
        yield csv_line([csv_cell(getattr(row, c)) for c in EXPORT_COLUMNS])


def each_row(session_for: Callable[[], Session], export: Export) -> Iterator[AuditEvent]:
    with session_for() as session:
        export = begin(session, export)
    after: int | None = None
    left = export.limit
    while left is None or left > 0:
        with session_for() as session:
            rows, _ = read_batch(session, export, after, BATCH if left is None else min(BATCH, left))
        if not rows:
            return
        yield from rows
        after = rows[-1].id
        if left is not None:
            left -= len(rows)


@dataclass(frozen=True, slots=True)
class ReadExport:
    """An export file as `verify --file` reads it: its header (or None), and how to walk its rows and checkpoints."""

    path: Path
    header: Mapping[str, Any] | None
    checkpoints: list[Checkpoint]

    def rows(self) -> Iterator[dict[str, Any]]:
        with open_export(self.path) as lines:
            for number, line in enumerate(lines, 1):
                item = _parse(line, self.path, number)
                if item is not None and is_row(item):
                    yield item

    @property
    def scope(self) -> Scope:
        # No header (an older export, or the JSON lines of [telemetry] audit_to, which begin where they began):
        # its rows must link up, but it need not reach back to the log's start.
        export = (self.header or {}).get("export") or {}
        return Scope(contiguous=bool(export.get("contiguous", True)), whole=bool(export.get("whole", False)))


class ExportUnreadable(ValueError):
    """Raised when an export or checkpoint file cannot be read, or a line of it is not what it should be."""


def open_export(path: Path) -> IO[str]:
    """`path` as text lines, gunzipped when it starts with gzip's magic bytes (`.jsonl.gz` archives)."""
    try:
        with path.open("rb") as probe:
            gzipped = probe.read(2) == b"\x1f\x8b"
        if gzipped:
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
        return path.open(encoding="utf-8")
    except OSError as exc:
        raise ExportUnreadable(f"{path}: cannot read the file: {exc.strerror or exc}") from exc


def _parse(line: str, path: Path, number: int) -> dict[str, Any] | None:
    if not line.strip():
        return None
    try:
        parsed = json.loads(line)
    except ValueError as exc:
        raise ExportUnreadable(f"{path}:{number}: not a JSON line ({exc})") from exc
    if not isinstance(parsed, dict):
        raise ExportUnreadable(f"{path}:{number}: not a JSON object")
    item: dict[str, Any] = parsed
    if isinstance(item.get("signoff_audit"), dict) and len(item) == 1:  # a line of [telemetry] audit_to's stdout
        item = item["signoff_audit"]
    if is_row(item) and not {"prev_hash", "hash", "kind", "at"} <= item.keys():
        raise ExportUnreadable(f"{path}:{number}: a row without prev_hash, hash, kind or at: not a signoff export")
    return item


def is_row(item: Mapping[str, Any]) -> bool:
    """Whether a JSON line is an audit row (a webhook delivery has an `id` too, beside its `checkpoint`)."""
    return "id" in item and "checkpoint" not in item and "export" not in item


def checkpoint_of(item: Mapping[str, Any], path: Path, number: int) -> Checkpoint | None:
    """The checkpoint a line holds: `{"checkpoint": {...}}`, or a webhook delivery of `audit.checkpoint`."""
    data = item.get("checkpoint")
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ExportUnreadable(f"{path}:{number}: `checkpoint` is not an object")
    try:
        return Checkpoint.from_json(data)
    except ValueError as exc:
        raise ExportUnreadable(f"{path}:{number}: {exc}") from exc


def read_export(path: Path) -> ReadExport:
    """Read `path`'s header and checkpoints (the first pass; `rows()` is the second).

    Raises:
        ExportUnreadable: the file cannot be read, or a line is not JSON, not a row, header or checkpoint.
    """
    header: Mapping[str, Any] | None = None
    checkpoints: list[Checkpoint] = []
    try:
        with open_export(path) as lines:
            for number, line in enumerate(lines, 1):
                item = _parse(line, path, number)
                if item is None or is_row(item):
                    continue
                if "export" in item and header is None:
                    header = item
                    continue
                checkpoint = checkpoint_of(item, path, number)
                if checkpoint is None:
                    raise ExportUnreadable(f"{path}:{number}: neither a row, a checkpoint nor the export's header")
                checkpoints.append(checkpoint)
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
        raise ExportUnreadable(f"{path}: cannot read the file: {exc}") from exc
    return ReadExport(path, header, checkpoints)
