"""Audit rows sent where auditors read them, as they are committed: JSON lines on stdout, syslog, OpenTelemetry logs.

One record per audit row, with the row's id, fields, `prev_hash` and `hash`: the same chain as the database, so
a copy outside it can be checked on its own and against it. Each sink tails the committed log (`AuditTail`), so
it sends what any writer wrote, on any replica, in order; a sink that fails is retried and shown in /healthz
under `audit_export`, and never holds up a call or the database's rows.
"""

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

from approvals.models import AuditEvent, AuditExportCursor

__all__ = ["AuditTail", "JsonLines", "OtlpLogs", "Syslog", "build_sinks", "exported_record"]

logger = logging.getLogger(__name__)

CLOSE_WITHIN = 5.0  # seconds the last rows may take to send as signoff stops


def exported_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """An audit row as it leaves signoff: every chained field, `prev_hash` and `hash`, times in ISO 8601."""
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in row.items()}


class Sink(Protocol):
    name: str

    def send(self, records: Sequence[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


class JsonLines:
    """One JSON object per line on a stream (stdout), flushed per batch, for a log shipper to pick up."""

    name = "stdout"

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream or sys.stdout
        self._lock = threading.Lock()

    def send(self, records: Sequence[dict[str, Any]]) -> None:
        text = "".join(json.dumps({"signoff_audit": r}, ensure_ascii=True, default=str) + "\n" for r in records)
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
        from opentelemetry._logs import SeverityNumber

        for record in records:
            attributes = {f"signoff.audit.{k}": v for k, v in record.items() if isinstance(v, str | int | float)}
            self._logger.emit(
                event_name="signoff.audit",
                severity_number=SeverityNumber.INFO,
                severity_text="INFO",
                body=json.dumps(record, ensure_ascii=True, default=str),
                attributes=attributes,
            )

    def close(self) -> None:
        self._provider.shutdown()  # sends what the batch still holds


class AuditTail:
    """Sends every committed audit row, in id order, to one sink: rows from every writer (calls, approvals, policy
    loads) and every replica, once each. Where it has got to is kept in `audit_export_cursors`, under a row lock
    while a batch is sent; a sink that fails is retried with the same rows (at least once), the others go on."""

    def __init__(self, engine: Engine, sink: Sink, *, every: float = 0.5, batch: int = 500) -> None:
        self._engine = engine
        self.sink = sink
        self._every = every
        self._batch = batch
        self.sent = 0
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
        """Send the next rows after the cursor and move it past them; how many were sent."""
        with Session(self._engine) as session:
            query = select(AuditExportCursor).where(col(AuditExportCursor.name) == self.sink.name)
            cursor = session.exec(query.with_for_update()).first()
            if cursor is None:  # the first run starts at the log's end; `signoff audit` exports what came before
                newest = session.exec(select(func.max(AuditEvent.id))).one() or 0
                session.add(AuditExportCursor(name=self.sink.name, last_id=newest))
                session.commit()
                self.last_id = newest
                return 0
            after = select(AuditEvent).where(col(AuditEvent.id) > cursor.last_id)
            rows = session.exec(after.order_by(col(AuditEvent.id)).limit(self._batch)).all()
            if not rows:
                self.last_id = cursor.last_id
                return 0
            self.sink.send([exported_record(row.model_dump()) for row in rows])
            cursor.last_id = self.last_id = rows[-1].id or cursor.last_id
            session.add(cursor)
            session.commit()
        self.sent += len(rows)
        return len(rows)

    def health(self) -> dict[str, Any]:
        return {"sent": self.sent, "last_id": self.last_id, "last_error": self.last_error}


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
