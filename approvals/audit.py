"""The audit log: append records in order, each chained to the one before, and verify the chain.

The chain makes an edited or deleted row visible: `hash` is the SHA-256 of the previous row's hash and
this row's canonical content. Writers pass a database session; this module never opens connections.
"""

import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Dialect, insert, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, col, select

from approvals.models import AuditCheckpoint, AuditEvent, AuditKind

GENESIS = "0" * 64
_CHAINED = (
    "at",
    "kind",
    "server",
    "tool",
    "identity",
    "actor",
    "channel",
    "rule",
    "policy_version",
    "args_digest",
    "arguments",
    "outcome",
    "detail",
    "latency_ms",
)
# json.dumps builds a new encoder on every call that passes options; one shared encoder spells the same.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
_LAST_HASH = "SELECT hash FROM audit_events ORDER BY id DESC LIMIT 1"
_SQLITE_LOCK = "UPDATE audit_events SET id = id WHERE 0 = 1"  # a write that changes nothing takes the write lock
# Code points a database cannot hold in text: NUL (PostgreSQL refuses it) and lone surrogates (not UTF-8 at all).
# JSON text from an agent may carry either ("\\u0000", "\\ud800"); Python keeps them in a str until it is encoded.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


# The text columns and their lengths (None: unbounded): a value is made storable and cut to fit before it is
# chained, so a long tool name or detail cannot make PostgreSQL refuse the row that records it.
_TEXT_LIMITS: tuple[tuple[str, int | None], ...] = tuple(
    (column.name, getattr(column.type, "length", None))
    for column in AuditEvent.__table__.columns  # type: ignore[attr-defined]
    if column.name in _CHAINED and column.name not in ("at", "latency_ms")
)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What happened, as the gateway or the approval engine saw it; becomes one `AuditEvent` row."""

    kind: str
    server: str = ""
    tool: str = ""
    identity: str = ""
    actor: str = ""
    channel: str = ""
    rule: str = ""
    policy_version: str = ""
    args_digest: str = ""
    arguments: str | None = None
    outcome: str = ""
    detail: str = ""
    latency_ms: float | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The result of `verify_chain`: how many rows were checked and the first bad one, if any."""

    checked: int
    first_bad_id: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.first_bad_id is None


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def canonical_json(value: Any) -> str:
    """The one JSON spelling used for digests: sorted keys, no spaces, UTF-8 kept.

    A lone surrogate (which JSON text can spell, and Python keeps, but UTF-8 cannot encode) is written as its JSON
    escape, so the text always encodes and still reads back to the same value; every other string is unchanged.
    """
    text = _CANONICAL.encode(value)
    return text if text.isascii() else _SURROGATE.sub(_escape, text)


def storable(text: str) -> str:
    """`text` with each NUL and lone surrogate written as its escape, `\\u0000`, so every database can store it.

    For the audit log's plain text columns (tool names, details, outcomes): the row then says what was really sent.
    """
    return text if text.isascii() and "\x00" not in text else _UNSTORABLE.sub(_escape, text)


def displayable(text: str) -> Any:
    """The stored canonical JSON `text`, decoded for people to read: a lone surrogate stays its escape, as text.

    The API, the web page, Slack and webhooks all encode what they show as UTF-8, which a lone surrogate (kept
    exact in the row, see `canonical_json`) cannot be; the digest and the row keep the exact value.
    """
    value = json.loads(text)
    if "\\ud" not in text:  # canonical JSON writes a lone surrogate as its lowercase escape and nothing else so
        return value
    try:
        return _storable_strings(value)
    except RecursionError:  # nested past what a walk can follow: show the stored text itself
        return text


def _storable_strings(value: Any) -> Any:
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, list):
        return [_storable_strings(v) for v in value]
    if isinstance(value, dict):
        return {storable(k): _storable_strings(v) for k, v in value.items()}
    return value


def redacted(arguments: Mapping[str, Any], paths: Iterable[str]) -> Any:
    """A copy of `arguments` with the value at each dotted path replaced by "[redacted]" (the digest keeps them)."""
    paths = tuple(paths)
    if not paths:
        return arguments
    copy: Any = json.loads(canonical_json(arguments))
    for path in paths:
        node: Any = copy
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and parts[-1] in node:
            node[parts[-1]] = "[redacted]"
    return copy


def digest_arguments(arguments: Any) -> str:
    """SHA-256 of the canonical JSON of a call's arguments: binds approvals and audit rows to exact arguments."""
    return hashlib.sha256(canonical_json(arguments).encode()).hexdigest()


def row_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    """The hash a row with these columns must carry after `prev_hash` (its `at` a datetime or ISO 8601 text)."""
    content = {name: row.get(name) for name in _CHAINED}
    at: datetime = content["at"] if isinstance(content["at"], datetime) else datetime.fromisoformat(str(content["at"]))
    content["at"] = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    if content["latency_ms"] is not None:
        content["latency_ms"] = round(float(content["latency_ms"]), 3)
    return _digest(prev_hash, content)


def _digest(prev_hash: str, content: Mapping[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(content)).encode()).hexdigest()


def of_kind(query: Any, kind: str) -> Any:
    """`query` narrowed to rows of `kind`.

    For a kind other than `allowed` the partial index of migration 0016 serves the filter, and SQLite's planner
    uses a partial index only when the query carries the index's own condition, so that is added too.
    """
    query = query.where(col(AuditEvent.kind) == kind)
    return query if kind == AuditKind.ALLOWED else query.where(col(AuditEvent.kind) != AuditKind.ALLOWED)


def lock_chain(session: Session | Connection) -> None:
    # Two appenders that read the same last hash would fork the chain, so the head is read only while
    # holding the database's write lock: on PostgreSQL a transaction-scoped advisory lock; on SQLite a
    # write statement (that changes nothing) takes the one write lock before the read, across processes too.
    dialect = session.dialect if isinstance(session, Connection) else session.get_bind().dialect
    if dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(7305924)"))
    elif dialect.name == "sqlite":
        session.execute(text(_SQLITE_LOCK))


def chain(prev_hash: str, records: Iterable[AuditRecord]) -> list[dict[str, Any]]:
    """The rows for `records`, each linked to the one before, the first to `prev_hash`.

    The gateway chains a row for every call, so this spells out `storable` and `row_hash` for rows it has just
    built (their `at` a UTC datetime already): the same values and hash, a third fewer Python calls a row.
    """
    rows = []
    for record in records:
        row: dict[str, Any] = {name: getattr(record, name) for name in _CHAINED}
        for name, limit in _TEXT_LIMITS:
            value = row[name]
            if value is not None:
                if not value.isascii() or "\x00" in value:
                    value = _UNSTORABLE.sub(_escape, value)
                row[name] = value if limit is None or len(value) <= limit else value[: limit - 1] + "…"
        at = row["at"] = record.at.astimezone(UTC)
        content = {**row, "at": at.isoformat()}
        if record.latency_ms is not None:
            row["latency_ms"] = round(record.latency_ms, 3)
            content["latency_ms"] = round(float(row["latency_ms"]), 3)
        row["prev_hash"] = prev_hash
        row["hash"] = prev_hash = _digest(prev_hash, content)
        rows.append(row)
    return rows


def append(session: Session, records: Iterable[AuditRecord]) -> list[int]:
    """Append records to the log in order, chaining each to the last row, in the caller's transaction.

    The caller commits, so an audit row lands together with the state change it records, or not at all.
    One multi-row INSERT, without ORM objects: the gateway appends a row for every tool call.

    Args:
        session: an open database session; not committed.
        records: the records to append, oldest first.

    Returns:
        The ids of the rows written, in order.
    """
    lock_chain(session)
    last = session.exec(select(AuditEvent.hash).order_by(col(AuditEvent.id).desc()).limit(1)).first()
    rows = chain(last or GENESIS, records)
    if not rows:
        return []
    table = AuditEvent.__table__  # type: ignore[attr-defined]
    result = session.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows)
    return [row_id for (row_id,) in result]


def append_rows(connection: Connection, records: Sequence[AuditRecord]) -> int:
    """`append` for a Core connection that does not need the ids back: the gateway's audit writer.

    The same lock, chain and rows as `append`, in the caller's transaction (the caller commits), with one
    `executemany` INSERT instead of an INSERT ... RETURNING, on the driver's own cursor: an agent waits for its
    row's commit, and SQLAlchemy's statement machinery cost more than SQLite's insert and commit together
    (135 µs a row against 54 µs, measured). Values go through the columns' own bind processors, so a row is
    stored exactly as SQLAlchemy would store it, and reads back to the same hash.

    Returns:
        How many rows were written.
    """
    statements = _statements(connection.dialect)
    if not connection.in_transaction():  # the caller's commit commits it; the driver's cursor would not begin it
        connection.begin()
    return _append(connection.connection.cursor(), statements, statements.lock, records)


def append_rows_sqlite(driver_connection: Any, dialect: Dialect, records: Sequence[AuditRecord]) -> int:
    """`append_rows` on a SQLite driver connection of the caller's own, committed here: `BEGIN IMMEDIATE` takes
    the write lock (or fails at once with busy_timeout 0), then the same chain and rows, then `COMMIT`.

    For the audit writer's commits on the event loop: without SQLAlchemy's transaction around it, the
    writer's one-row commit took 73 µs of CPU instead of 94 (SQLite's own part is ~45 µs), and that commit
    is on the path of every sequential call's answer. On any error the transaction is rolled back, and the
    error raised as SQLAlchemy raises it.
    """
    statements = _statements(dialect)
    try:
        written = _append(driver_connection.cursor(), statements, "BEGIN IMMEDIATE", records)
        driver_connection.commit()
    except BaseException:
        if driver_connection.in_transaction:
            driver_connection.rollback()
        raise
    return written


def _append(cursor: Any, statements: "_Statements", lock: str, records: Sequence[AuditRecord]) -> int:
    driver_error = statements.error
    try:
        cursor.execute(lock)
        cursor.execute(_LAST_HASH)
        found = cursor.fetchone()
        rows = chain(found[0] if found else GENESIS, records)
        if rows:
            cursor.executemany(statements.insert, [statements.values(row) for row in rows])
    except driver_error as exc:  # as SQLAlchemy raises it, so callers handle one kind of database error
        raise DBAPIError.instance(statements.insert, None, exc, driver_error) from exc
    finally:
        cursor.close()
    return len(rows)


@dataclass(frozen=True, slots=True)
class _Statements:
    """`append_rows`' SQL for one dialect, and how a row's values are bound."""

    lock: str
    insert: str
    columns: tuple[str, ...]
    processors: tuple[Any, ...]
    error: type[Exception]  # the driver's base error class

    def values(self, row: Mapping[str, Any]) -> list[Any]:
        return [
            row[c] if process is None else process(row[c])
            for c, process in zip(self.columns, self.processors, strict=True)
        ]


_STATEMENTS: dict[str, _Statements] = {}


def _statements(dialect: Dialect) -> _Statements:
    known = _STATEMENTS.get(dialect.name)
    if known is not None:
        return known
    table = AuditEvent.__table__  # type: ignore[attr-defined]
    columns = (*_CHAINED, "prev_hash", "hash")
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    lock = {"postgresql": "SELECT pg_advisory_xact_lock(7305924)"}.get(dialect.name, _SQLITE_LOCK)
    names, marks = ", ".join(columns), ", ".join(mark for _ in columns)  # the model's own names: no input
    statements = _Statements(
        lock=lock,
        insert=f"INSERT INTO audit_events ({names}) VALUES ({marks})",  # noqa: S608
        columns=columns,
        processors=tuple(table.c[name].type.bind_processor(dialect) for name in columns),
        error=dialect.loaded_dbapi.Error,
    )
    _STATEMENTS[dialect.name] = statements
    return statements


def probe_chain(connection: Connection) -> None:
    """Take the chain's lock and read its head, then roll back: proves the log can be written now, writing nothing.

    Raises:
        SQLAlchemyError: the database is down, or refuses writes to the log.
    """
    try:
        lock_chain(connection)
        connection.exec_driver_sql(_LAST_HASH).scalar()
    finally:
        connection.rollback()


AUDIT_FILTERS = ("kind", "server", "tool", "identity", "actor", "outcome")


def latest_events(session: Session, filters: Mapping[str, str], limit: int) -> list[AuditEvent]:
    """The newest `limit` audit rows whose columns equal `filters` (any of `AUDIT_FILTERS`), newest first."""
    query = select(AuditEvent)
    for name, value in filters.items():
        if name in AUDIT_FILTERS and value:
            query = query.where(col(getattr(AuditEvent, name)) == value)
    return list(session.exec(query.order_by(col(AuditEvent.id).desc()).limit(limit)).all())


def verify_chain(session: Session, batch: int = 1000) -> ChainReport:
    """Walk the whole log in id order and check every link and every row's own hash.

    The first row follows the genesis, or (after `signoff audit archive`) the row an archive checkpoint names;
    signatures are not checked here (`approvals.verification` does, with the public key).

    Returns:
        A report naming the first row whose content or link does not match, if any.
    """
    prev, checked, after = GENESIS, 0, 0
    while True:
        rows: Sequence[AuditEvent] = session.exec(
            select(AuditEvent).where(col(AuditEvent.id) > after).order_by(col(AuditEvent.id)).limit(batch)
        ).all()
        if not rows:
            return ChainReport(checked=checked)
        for row in rows:
            row_id = row.id or 0
            if checked == 0 and row.prev_hash != prev and _archived_before(session, row.prev_hash):
                prev = row.prev_hash
            if row.prev_hash != prev:
                return ChainReport(checked, row_id, "prev_hash does not match the row before: a row was removed")
            if row_hash(prev, row.model_dump()) != row.hash:
                return ChainReport(checked, row_id, "content does not match its hash: the row was edited")
            prev, checked, after = row.hash, checked + 1, row_id


def _archived_before(session: Session, prev_hash: str) -> bool:
    query = select(AuditCheckpoint.id).where(
        col(AuditCheckpoint.hash) == prev_hash, col(AuditCheckpoint.kind) == "archive"
    )
    return session.exec(query.limit(1)).first() is not None


def request_trail(session: Session, request_id: uuid.UUID) -> list[AuditEvent]:
    """Every audit row about one approval request, oldest first: each names it as `approval ID` in its detail."""
    query = select(AuditEvent).where(col(AuditEvent.detail).startswith(f"approval {request_id}"))
    return list(session.exec(query.order_by(col(AuditEvent.id))).all())
