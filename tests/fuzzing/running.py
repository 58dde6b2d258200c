"""Sending cases, and what came back: statuses, missing answers, and log records with tracebacks."""

import logging
import threading
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import httpx2

from tests.fuzzing.case import Case


@dataclass(frozen=True)
class Failure:
    """Something a case caused: a 5xx, no answer, a traceback or error log, or a missing 413."""

    case: Case
    what: str  # "status 500", "no answer: ReadTimeout", "log ERROR integrations.x: message", "status 400, not 413"
    where: str = ""  # file:line of the innermost frame of ours in the traceback, if any
    trace: str = ""

    @property
    def signature(self) -> str:
        """What tells distinct failures apart: the kind of problem and where it happened."""
        head = self.what.split(":", 1)[0] if self.what.startswith("log") else self.what
        return f"{self.case.family} | {head} | {self.where}"


class LogWatch(logging.Handler):
    """Collects every record with a traceback, and every ERROR or CRITICAL, from any logger."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._lock_ = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            with self._lock_:
                self.records.append(record)

    def take(self) -> list[logging.LogRecord]:
        with self._lock_:
            taken, self.records = self.records, []
        return taken


@asynccontextmanager
async def watching_logs() -> AsyncIterator[LogWatch]:
    """Watch the root logger and uvicorn's (which does not propagate to the root)."""
    watch = LogWatch()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn"), logging.getLogger("uvicorn.error")]
    for logger in loggers:
        logger.addHandler(watch)
    try:
        yield watch
    finally:
        for logger in loggers:
            logger.removeHandler(watch)


# An oversized body may be refused for what its headers say before a byte of it is read: no or a stale session
# (401, 403) or a throttled sign-in (429). Anything else must be the 413: the body was never taken in.
REFUSED_BY_HEADERS = (401, 403, 429)
# An MCP session an earlier case ended (a DELETE) is unknown from then on: 404, also decided by the header alone.
ENDED_SESSION = 404


def refused_by_headers(item: "Case", status: int) -> bool:
    """Whether `status` is a refusal an oversized request may get before its body is read."""
    carries_session = any(name.lower() == "mcp-session-id" for name, _ in item.headers)
    return status in REFUSED_BY_HEADERS or (status == ENDED_SESSION and carries_session)


OURS = ("/approvals/", "/integrations/", "/policies/")


def describe(record: logging.LogRecord) -> tuple[str, str, str]:
    """(what, where, trace) for a log record: the exception, our innermost frame, the formatted traceback."""
    what = f"log {record.levelname} {record.name}: {record.getMessage()[:200]}"
    if not record.exc_info or record.exc_info[1] is None:
        return what, f"{record.pathname}:{record.lineno}", ""
    exc = record.exc_info[1]
    frames = traceback.extract_tb(exc.__traceback__)
    inner = exc
    while inner.__cause__ is not None or inner.__context__ is not None:
        inner = inner.__cause__ or inner.__context__  # type: ignore[assignment]
        frames = traceback.extract_tb(inner.__traceback__) or frames
    ours = [f for f in frames if any(part in f.filename for part in OURS)]
    frame = (ours or frames)[-1] if ours or frames else None
    where = f"{frame.filename.split('/main/')[-1]}:{frame.lineno}" if frame else ""
    what += f" [{type(inner).__name__}: {str(inner)[:160]}]"
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return what, where, trace


@dataclass
class Report:
    """What a run saw. Each distinct failure keeps its first `KEPT` cases (a case may hold a 1.5 MiB body, and a long
    run may repeat one failure thousands of times); `counts` has them all."""

    KEPT = 5

    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # failures by signature, every one
    seconds: float = 0.0

    def fail(self, failure: Failure) -> None:
        seen = self.counts.get(failure.signature, 0)
        self.counts[failure.signature] = seen + 1
        if seen < self.KEPT:
            self.failures.append(failure)

    @property
    def failed(self) -> int:
        return sum(self.counts.values())

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def distinct(self) -> dict[str, list[Failure]]:
        groups: dict[str, list[Failure]] = {}
        for failure in self.failures:
            groups.setdefault(failure.signature, []).append(failure)
        return groups

    def summary(self, base_url: str, most: int = 12) -> str:
        lines = [f"{self.sent} requests, {self.failed} failures, {len(self.counts)} distinct"]
        for signature, group in list(self.distinct().items())[:most]:
            first = group[0]
            lines += [
                "",
                f"== {signature}  ({self.counts[signature]}x)",
                f"   {first.what}",
                first.case.replay(base_url, 1500),
            ]
            if first.trace:
                lines.append("   " + first.trace.strip().splitlines()[-1])
        return "\n".join(lines)


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 65536):
        yield body[start : start + 65536]


def client(connections: int = 1, timeout: float = 20.0) -> httpx2.AsyncClient:
    limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx2.AsyncClient(timeout=timeout, limits=limits)


async def send(http: httpx2.AsyncClient, base_url: str, one: Case) -> httpx2.Response:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in one.headers]
    content: Any = _chunks(one.body) if one.chunked else one.body
    http.cookies.clear()  # the case's Cookie header is its whole session
    return await http.request(one.method, base_url + one.path, headers=headers, content=content)


async def run_cases(
    base_url: str,
    all_cases: Iterator[Case],
    watch: LogWatch,
    *,
    concurrency: int = 1,
    deadline: float | None = None,
    patience: float = 10.0,
) -> Report:
    """Send every case; a log record is blamed on the cases in flight when it was taken (one, sequentially)."""
    report = Report()
    started = time.monotonic()
    lock = anyio.Lock()

    async def one(http: httpx2.AsyncClient, item: Case) -> None:
        response = None
        try:
            with anyio.move_on_after(patience):
                response = await send(http, base_url, item)
        except httpx2.LocalProtocolError:
            return  # the client refused to send it (an illegal header): nothing reached signoff
        except (httpx2.TransportError, OSError) as exc:
            report.sent += 1
            report.fail(Failure(item, f"no answer: {type(exc).__name__} {exc}"[:200]))
            return
        report.sent += 1
        if response is None:
            if item.method != "GET":  # a GET may open a stream that stays open: that is an answer
                report.fail(Failure(item, f"no answer within {patience} s"))
            return
        status = response.status_code
        report.statuses[status] = report.statuses.get(status, 0) + 1
        if status >= 500:
            report.fail(Failure(item, f"status {status}", "", response.text[:300]))
        elif item.expect_413 and status != 413 and not refused_by_headers(item, status):
            report.fail(Failure(item, f"status {status}, not 413"))

    async def blame(items: list[Case]) -> None:
        await anyio.lowlevel.checkpoint()
        for record in watch.take():
            what, where, trace = describe(record)
            report.fail(Failure(items[0], what, where, trace))

    async with client(concurrency, patience + 5) as http:
        if concurrency == 1:
            for item in all_cases:
                if deadline is not None and time.monotonic() > deadline:
                    break
                await one(http, item)
                await blame([item])
        else:
            in_flight: list[Case] = []
            iterator = iter(all_cases)

            async def worker() -> None:
                while deadline is None or time.monotonic() <= deadline:
                    async with lock:
                        item = next(iterator, None)
                    if item is None:
                        return
                    in_flight.append(item)
                    try:
                        await one(http, item)
                    finally:
                        in_flight.remove(item)
                    if watch.records:
                        await blame([item, *in_flight])

            async with anyio.create_task_group() as tg:
                for _ in range(concurrency):
                    tg.start_soon(worker)
    report.seconds = time.monotonic() - started
    return report
