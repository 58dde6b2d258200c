"""Audit rows sent where auditors read them, as they are committed: JSON lines on stdout, syslog, OpenTelemetry logs.

One record per audit row, with the row's id, fields, `prev_hash` and `hash`: the same chain as the database, so
a copy outside it can be checked on its own and against it; and one record per signed checkpoint, the line
`[audit] checkpoint_file` holds (`{"checkpoint": {...}}`), so the copy can be held to the checkpoints too. Each
sink tails the committed log and the checkpoint table (`AuditTail`), so it sends what any writer or signer wrote
(the server, `signoff audit checkpoint` or `archive`, any replica), in order; a sink that fails is retried and
shown in /healthz under `audit_export`, and never holds up a call or the database's rows.
"""

import itertools
import json
import logging
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import IO, Any, Protocol

import anyio
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from approvals.checkpoints import ARCHIVE, Checkpoint
from approvals.models import AuditCheckpoint, AuditEvent, AuditExportCursor

__all__ = [
    "AuditTail",
    "JsonLines",
    "OtlpLogs",
    "Syslog",
    "build_sinks",
    "checkpoint_cursor",
    "checkpoint_record",
    "exported_record",
]

logger = logging.getLogger(__name__)

CLOSE_WITHIN = 5.0  # seconds the last rows may take to send as signoff stops


def exported_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """An audit row as it leaves signoff: every chained field, `prev_hash` and `hash`, times in ISO 8601."""
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in row.items()}


def checkpoint_record(row: AuditCheckpoint) -> dict[str, Any]:
    """A stored checkpoint as it leaves signoff: `{"checkpoint": {...}}`, the line `checkpoint_file` holds."""
    return {"checkpoint": Checkpoint.from_row(row).as_json()}


def checkpoint_cursor(sink: str) -> str:
    """The name of the cursor (in `audit_export_cursors`) of how far `sink` has sent the checkpoints."""
    return f"{sink}:checkpoints"


class Sink(Protocol):
    name: str

    def send(self, records: Sequence[dict[str, Any]]) -> None: ...

    def send_checkpoints(self, records: Sequence[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


class JsonLines:
    """One JSON object per line on a stream (stdout), flushed per batch, for a log shipper to pick up."""

    name = "stdout"

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream or sys.stdout
        self._lock = threading.Lock()

    def send(self, records: Sequence[dict[str, Any]]) -> None:
        self._write([{"signoff_audit": r} for r in records])

    def send_checkpoints(self, records: Sequence[dict[str, Any]]) -> None:
        self._write(records)  # `{"checkpoint": {...}}`: `signoff audit verify --file` reads both kinds of line

    def _write(self, lines: Sequence[dict[str, Any]]) -> None:
        text = "".join(json.dumps(line, ensure_ascii=True, default=str) + "\n" for line in lines)
        with self._lock:
            self._stream.write(text)
            self._stream.flush()

    def close(self) -> None:
        return None


class Syslog:
    """RFC 3164 messages, facility `auth`, severity `info`, to the local syslog socket (`/dev/log`) or to
    `host:port` over UDP; the message is the row as JSON after the tag `signoff-audit:`. Written here rather
    than through `logging.handlers.SysLogHandler`, which prints its failures instead of raising them: a row
    syslog did not take must be sent again."""

    name = "syslog"
    PRIORITY = 4 * 8 + 6  # auth, info

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self._target: str | tuple[str, int]
        if host and port.isdigit() and "/" not in address:
            self._family, self._target = socket.AF_INET, (host, int(port))
        else:
            self._family, self._target = socket.AF_UNIX, address
        self._socket: socket.socket | None = None

    def send(self, records: Sequence[dict[str, Any]]) -> None:
        self._send_all(records)

    def send_checkpoints(self, records: Sequence[dict[str, Any]]) -> None:
        self._send_all(records)  # the message is `{"checkpoint": {...}}`, as `checkpoint_file` holds it

    def _send_all(self, records: Sequence[dict[str, Any]]) -> None:
        if self._socket is None:
            sock = socket.socket(self._family, socket.SOCK_DGRAM)
            try:
                sock.connect(self._target)
            except OSError:
                sock.close()
                raise
            self._socket = sock
        try:
            for record in records:
                text = json.dumps(record, ensure_ascii=True, default=str)
                self._socket.send(f"<{self.PRIORITY}>signoff-audit: {text}".encode())
        except OSError:
            self.close()  # connect again for the retry (syslogd may have restarted)
            raise

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


class OtlpLogs:
    """OpenTelemetry log records over OTLP/HTTP (`{endpoint}/v1/logs`), event `signoff.audit`: the row as the
    body (JSON) and its scalar fields as attributes, so a collector can index kind, tool, identity and hash."""

    name = "otlp"

    def __init__(self, service_name: str, endpoint: str | None, exporter: Any = None) -> None:
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, SimpleLogRecordProcessor
        from opentelemetry.sdk.resources import Resource

        self._provider = LoggerProvider(resource=Resource.create({"service.name": service_name}))
        if exporter is not None:
            self._provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
        else:
            from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

            url = f"{str(endpoint).rstrip('/')}/v1/logs"
            self._provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=url, timeout=5)))
        self._logger = self._provider.get_logger("signoff.audit")

    def send(self, records: Sequence[dict[str, Any]]) -> None:
        for record in records:
            self._emit("signoff.audit", "signoff.audit", record, record)

    def send_checkpoints(self, records: Sequence[dict[str, Any]]) -> None:
        for record in records:
            self._emit("signoff.audit.checkpoint", "signoff.checkpoint", record["checkpoint"], record)

    def _emit(self, event: str, prefix: str, fields: dict[str, Any], record: dict[str, Any]) -> None:
        """One log record: the whole `record` as its JSON body, the scalar `fields` as attributes under `prefix`."""
        from opentelemetry._logs import SeverityNumber

        attributes = {f"{prefix}.{k}": v for k, v in fields.items() if isinstance(v, str | int | float)}
        self._logger.emit(
            event_name=event,
            severity_number=SeverityNumber.INFO,
            severity_text="INFO",
            body=json.dumps(record, ensure_ascii=True, default=str),
            attributes=attributes,
        )

    def close(self) -> None:
        self._provider.shutdown()  # sends what the batch still holds


class AuditTail:
    """Sends every committed audit row, in id order, to one sink: rows from every writer (calls, approvals, policy
    loads) and every replica, once each; then every signed checkpoint, from whoever signed it. Where it has got to
    is kept in `audit_export_cursors` (`NAME` for rows, `NAME:checkpoints`), under a row lock while a batch is
    sent; a sink that fails is retried with the same records (at least once), the others go on."""

    def __init__(self, engine: Engine, sink: Sink, *, every: float = 0.5, batch: int = 500) -> None:
        self._engine = engine
        self.sink = sink
        self._every = every
        self._batch = batch
        self.sent = 0
        self.checkpoints_sent = 0
        self.archived_unsent: list[tuple[int, int]] = []  # (first, last) row ids archived before they were sent
        self.last_id: int | None = None
        self.last_error: str | None = None
        self._lock = anyio.Lock()  # one step at a time: the run's, or the last one's at close

    async def _step(self) -> int:
        async with self._lock:
            return await anyio.to_thread.run_sync(self.step)

    async def close(self) -> None:
        """Send what the log holds now (the rows of the last calls, committed as signoff stopped), for at most
        `CLOSE_WITHIN` seconds, then close the sink."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_WITHIN):
            try:
                while await self._step():
                    pass
            except Exception:  # stopping: what is left is sent by the next start, from the cursor
                logger.warning("Sending the last audit rows to %s failed", self.sink.name, exc_info=True)
        self.sink.close()

    async def run(self) -> None:
        while True:
            try:
                sent = await self._step()
                self.last_error = None
            except Exception as exc:  # the sink or the database failed: the same rows are tried again
                self.last_error = f"{type(exc).__name__}: {exc}"[:500]
                logger.warning("Sending audit rows to %s failed; retrying", self.sink.name, exc_info=True)
                sent = 0
                await anyio.sleep(self._every * 4)
            if sent < self._batch:
                await anyio.sleep(self._every)

    def step(self) -> int:
        """Send the next rows after the cursor, then the checkpoints of rows sent, moving each cursor past what
        was sent; how many records were sent. Rows and checkpoints commit apart: a checkpoint that cannot be sent
        does not send its rows again."""
        return self._send_rows() + self._send_checkpoints()

    def _cursor(self, session: Session, name: str, table: type[AuditEvent] | type[AuditCheckpoint]) -> Any:
        """The cursor `name`, locked; None the first time, when it is made at the table's end (the rows before
        are exported by `signoff audit`, the checkpoints are in `checkpoint_file` and the database)."""
        query = select(AuditExportCursor).where(col(AuditExportCursor.name) == name)
        cursor = session.exec(query.with_for_update()).first()
        if cursor is None:
            newest = session.exec(select(func.max(table.id))).one() or 0
            session.add(AuditExportCursor(name=name, last_id=newest))
            session.commit()
            if table is AuditEvent:
                self.last_id = newest
        return cursor

    def _send_rows(self) -> int:
        with Session(self._engine) as session:
            cursor = self._cursor(session, self.sink.name, AuditEvent)
            if cursor is None:
                return 0
            self._pass_archived(session, cursor)
            after = select(AuditEvent).where(col(AuditEvent.id) > cursor.last_id)
            rows = session.exec(after.order_by(col(AuditEvent.id)).limit(self._batch)).all()
            if rows:
                self.sink.send([exported_record(row.model_dump()) for row in rows])
                cursor.last_id = rows[-1].id or cursor.last_id
            self.last_id = cursor.last_id
            session.add(cursor)
            session.commit()
        self.sent += len(rows)
        return len(rows)

    def _pass_archived(self, session: Session, cursor: AuditExportCursor) -> None:
        """Move past rows `signoff audit archive` removed before this sink sent them, and say so (log, /healthz).

        Archive refuses to remove rows a sink named in its config's `audit_to` has not sent; this is the case of a
        sink that was not named there (taken out of `audit_to` for a while, say). Those rows are in the archive,
        not in this copy: the copy's chain shows the gap, and the archive checkpoint sent after it explains it.
        """
        query = select(func.max(AuditCheckpoint.row_id)).where(
            col(AuditCheckpoint.kind) == ARCHIVE, col(AuditCheckpoint.row_id) > cursor.last_id
        )
        through = session.exec(query).one()
        if through is None:
            return
        logger.error(
            "Audit rows after %d through %d were archived before they were sent to %s: they are in that archive,"
            " not in this copy",
            cursor.last_id,
            through,
            self.sink.name,
        )
        self.archived_unsent.append((cursor.last_id + 1, through))
        cursor.last_id = through

    def _send_checkpoints(self) -> int:
        """Send the checkpoints made since the last sent, in the order they were made, each only once the row it
        names has been sent: a copy never holds a checkpoint of a row it does not (yet) have."""
        with Session(self._engine) as session:
            cursor = self._cursor(session, checkpoint_cursor(self.sink.name), AuditCheckpoint)
            rows = session.get(AuditExportCursor, self.sink.name)
            if cursor is None or rows is None:
                return 0
            after = select(AuditCheckpoint).where(col(AuditCheckpoint.id) > cursor.last_id)
            found = session.exec(after.order_by(col(AuditCheckpoint.id)).limit(self._batch)).all()
            ready = list(itertools.takewhile(lambda c: c.row_id <= rows.last_id, found))
            if not ready:
                return 0
            self.sink.send_checkpoints([checkpoint_record(c) for c in ready])
            cursor.last_id = ready[-1].id or cursor.last_id
            session.add(cursor)
            session.commit()
        self.checkpoints_sent += len(ready)
        return len(ready)

    def health(self) -> dict[str, Any]:
        health: dict[str, Any] = {
            "sent": self.sent,
            "last_id": self.last_id,
            "checkpoints_sent": self.checkpoints_sent,
            "last_error": self.last_error,
        }
        if self.archived_unsent:
            health["archived_unsent"] = [f"rows {first}-{last}" for first, last in self.archived_unsent]
        return health


def build_sinks(
    to: Sequence[str], *, syslog_address: str, service_name: str, otlp_endpoint: str | None, log_exporter: Any = None
) -> list[Sink]:
    """The sinks `[telemetry] audit_to` names (settings have checked the names)."""
    sinks: list[Sink] = []
    for name in to:
        if name == "stdout":
            sinks.append(JsonLines())
        elif name == "syslog":
            sinks.append(Syslog(syslog_address))
        elif name == "otlp":
            sinks.append(OtlpLogs(service_name, otlp_endpoint, log_exporter))
    return sinks
