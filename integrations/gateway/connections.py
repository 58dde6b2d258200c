"""A lean HTTP/1.1 keep-alive connection pool for the gateway's hop to one Streamable HTTP upstream.

Why not httpx2 here: on this hop every request pays for httpx2's `Request`/`Response` models and
httpcore2's pool, whose `_assign_requests_to_connections` probes every idle connection with syscalls on
each request and each response close (see bench/gateway-profile.md). Measured on the bench machine, the
`AsyncClient` layer alone (`build_request`, `send`, `aread` over a transport answering from memory)
costs ~280 µs of CPU per call, about half of what this whole pool costs per call syscalls included
(~400-600 µs, against ~2,300 µs for httpx2 over its own pool), so a custom `httpx2.AsyncBaseTransport`
would keep a large share of the cost. httpx2 stays the project's HTTP client everywhere else; this module only frames
HTTP/1.1 over asyncio transports: a request is written by hand (its header names and values checked against RFC 9110
with one regular expression), and responses are parsed by `httptools` (llhttp, the C parser uvicorn serves with).
That replaced `h11`, whose pure-Python state machine was about a fifth of the gateway's CPU per call under load
(bench/profiles).

How it works:

* `ConnectionPool` serves one origin (scheme, host, port). Idle connections sit on a LIFO stack; a
  request takes the most recently used one, so a burst's extra connections age out at the bottom.
  Only the connection taken is checked, in O(1): the event loop keeps reading idle sockets, so a
  server's FIN or reset has usually already flagged it (and removed it from the stack), and one
  `poll(0)` on its descriptor catches a FIN that arrived since the loop last looked. At most
  `max_connections` are open or opening; further requests wait, first come first served, up to the
  read timeout, and a released connection or a freed slot is handed to the longest waiter.
* `Connection` is an `asyncio.Protocol`: bytes received go straight into its response parser, whose
  callbacks queue the response's head, body pieces and end for the exchange to take; the request (head and
  body) goes out in one write. A response head over 64 KiB is refused. Reading pauses above 256 KiB of unconsumed body,
  so a slow client of an event stream does not make the gateway buffer without bound.
* A connection idle for longer than `keepalive_expiry` (4 s, under the 5 s keep-alive timeout of
  uvicorn and Node) is closed rather than reused: that shrinks the window in which a
  server's idle close can race a request further (see Retries), and lets a burst's connections go.
* A response is released to the pool only when its body was read to the end and both sides may
  keep the connection; a stream that is abandoned, fails or times out closes its connection.

Retries (HTTP/1.1 forbids retrying a non-idempotent request that may have been applied, and an MCP
POST is not idempotent): a request is retried once, on a fresh connection, only

* when it was not sent: the connection turned out to be closed when the request was written to it
  (the write failed at once), for any method; or
* when it was sent on a reused connection that then closed or reset before any byte of a response,
  for GET and DELETE only: that is how a keep-alive connection closed by the server at the same
  moment shows itself, and both methods are idempotent.

A POST that was handed to the kernel and then met a closed connection is not retried, since the
server may have received it (a crash mid-request looks the same from here as a keep-alive close that
raced the request): the caller gets `RemoteProtocolError`. The O(1) check before reuse makes that
window a matter of microseconds on loopback. Timeouts are never retried.
"""

import asyncio
import contextlib
import re
import select
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import httpx2

__all__ = [
    "ConnectError",
    "ConnectTimeout",
    "Connection",
    "ConnectionPool",
    "Headers",
    "PoolTimeout",
    "ReadError",
    "ReadTimeout",
    "RemoteProtocolError",
    "Response",
    "TransportError",
]

Headers = list[tuple[bytes, bytes]]

READ_HIGH_WATER = 256 * 1024  # unconsumed response bytes above which reading pauses
MAX_HEAD = 64 * 1024  # a response's status line and headers, at most
# Header lines as RFC 9110 allows them: a token, then a value of visible characters, spaces and tabs (no CR,
# LF, NUL or other controls, so nothing can end a line early or smuggle a second request).
_HEADER_LINES = re.compile(rb"(?:[-!#$%&'*+.^_`|~0-9A-Za-z]+: [\t\x20-\x7e\x80-\xff]*\r\n)*")
_NO_BODY_STATUS = frozenset({204, 304})
IDEMPOTENT_METHODS = frozenset({b"GET", b"DELETE", b"HEAD", b"OPTIONS", b"PUT"})
_HAS_POLL = hasattr(select, "poll")


class TransportError(Exception):
    """The exchange failed below HTTP: connecting, a timeout, a dropped connection or a protocol error."""


class ConnectError(TransportError):
    """The connection could not be opened (refused, unresolvable, TLS handshake or certificate failure)."""


class ConnectTimeout(TransportError):
    """The connection was not open within the connect timeout."""


class PoolTimeout(TransportError):
    """Every connection stayed busy for longer than the read timeout."""


class ReadTimeout(TransportError):
    """The server sent nothing for longer than the read timeout."""


class ReadError(TransportError):
    """The connection failed (reset, closed by us) while a response was expected."""


class RemoteProtocolError(TransportError):
    """The server closed the connection early or broke HTTP/1.1."""


class _NoResponse(TransportError):
    """The connection failed before any byte of a response; `sent` says whether the request went out."""

    def __init__(self, error: TransportError, *, sent: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.sent = sent


def _expire(waiter: "asyncio.Future[Any]", error: TransportError) -> None:
    if not waiter.done():
        waiter.set_exception(error)


class _Head:
    """A final response's status and headers (names lower-cased), as the parser saw them."""

    __slots__ = ("headers", "keep_alive", "status")

    def __init__(self, status: int, headers: Headers, keep_alive: bool) -> None:
        self.status = status
        self.headers = headers
        self.keep_alive = keep_alive


_END = object()  # the response's body is complete


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: an asyncio protocol that feeds what it receives to an httptools response parser.

    The parser's callbacks (`on_header` ... `on_message_complete`) turn bytes into a queue of a `_Head`, body
    pieces (bytes) and `_END`, which `next_event` hands to the exchange in order.
    """

    __slots__ = (
        "_awaiting_head",
        "_buffered",
        "_closed",
        "_complete",
        "_counted",
        "_error",
        "_events",
        "_head_bytes",
        "_header_bytes",
        "_headers",
        "_in_head",
        "_informational",
        "_keep_alive",
        "_lost",
        "_parser",
        "_paused",
        "_poll",
        "_pool",
        "_received",
        "_stray",
        "_transport",
        "_until_close",
        "_waiter",
        "busy",
        "exchanges",
        "idle_since",
    )

    def __init__(self, pool: "ConnectionPool") -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self._events: deque[Any] = deque()
        self._headers: Headers = []
        self._awaiting_head = False  # a request went out and its final response's head has not arrived
        self._head_bytes = 0  # bytes received while awaiting the head
        self._header_bytes = 0  # the current head's header names and values
        self._in_head = False  # between a response's first byte and the end of its headers
        self._informational = False  # the head being read is a 1xx; the final response follows it
        self._until_close = False  # the body has no length: it ends when the server closes
        self._keep_alive = False
        self._complete = False  # the response of this exchange has ended
        self._stray = False  # bytes beyond the response: the connection cannot carry another exchange
        self._transport: asyncio.Transport | None = None
        self._poll: Any = None
        self._waiter: asyncio.Future[None] | None = None
        self._error: TransportError | None = None  # set once the peer closed or reset the connection, or broke HTTP
        self._closed = False  # we closed it
        self._lost = asyncio.get_running_loop().create_future()
        self._counted = False  # holds one of the pool's slots (set once the pool counts it)
        self._received = False  # a byte arrived since the last response ended (of the next one, or stray)
        self._buffered = 0
        self._paused = False
        self.busy = True  # an exchange owns it (or is about to); False while it waits on the idle stack
        self.exchanges = 0
        self.idle_since = 0.0

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if _HAS_POLL and sock is not None:
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)
            self._poll = poller

    def data_received(self, data: bytes) -> None:
        if not self.busy or self._complete:  # nobody asked: whatever this is, the connection is not reused
            self._stray = True
            if not self.busy:
                self.close()
            return
        self._received = True
        if self._error is None:
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                self._fail(RemoteProtocolError("the server switched protocols"))
            except httptools.HttpParserError as exc:
                self._fail(RemoteProtocolError(f"malformed response: {exc}" if str(exc) else "malformed response"))
            if self._awaiting_head:  # a head still arriving: bound what is buffered (one read past the limit at most)
                self._head_bytes += len(data)
            if (self._head_bytes > MAX_HEAD or self._header_bytes > MAX_HEAD) and self._error is None:
                self._fail(RemoteProtocolError(f"the response's head is over {MAX_HEAD // 1024} KiB"))
        self._buffered += len(data)
        if self._buffered > READ_HIGH_WATER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        self._peer_closed(RemoteProtocolError("the server closed the connection"))
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self._peer_closed(RemoteProtocolError("the server closed the connection"))
        else:
            self._peer_closed(ReadError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__))
        self._poll = None  # the descriptor is about to be closed, and its number reused
        if not self._lost.done():
            self._lost.set_result(None)
        self._pool._forget(self)

    def _peer_closed(self, error: TransportError) -> None:
        if self._error is None:
            if self._until_close and not self._complete and not self._in_head:
                self._complete = True  # the end of a body delimited by the close
                self._events.append(_END)
                self._stray = True  # and the end of the connection
            self._error = error
        if self.busy:
            self._wake()
        else:
            self.close()

    def _fail(self, error: TransportError) -> None:
        """The server broke HTTP: what was parsed before still counts; nothing after it is read."""
        self._error = error
        self._stray = True

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- httptools callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:  # a second response to one request
            self._stray = True
        self._in_head = True
        self._until_close = False
        self._headers = []
        self._header_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)  # a head that arrived within one read is bounded here
        self._headers.append((name.lower(), value.strip(b" \t")))

    def on_headers_complete(self) -> None:
        self._in_head = False
        status = self._parser.get_status_code()
        if status < 200:  # 1xx: informational, no body; the final response follows on the same connection
            self._informational = True
            return
        self._awaiting_head = False
        self._head_bytes = 0
        if self._header_bytes > MAX_HEAD:
            return  # `data_received` fails the exchange: the head is not queued
        headers = self._headers
        keep_alive = self._parser.should_keep_alive()
        framed = status in _NO_BODY_STATUS or any(
            name == b"content-length" or (name == b"transfer-encoding" and value.lower().endswith(b"chunked"))
            for name, value in headers
        )
        self._until_close = not framed
        self._keep_alive = keep_alive and framed
        self._events.append(_Head(status, headers, self._keep_alive))

    def on_body(self, body: bytes) -> None:
        self._events.append(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self._complete = True
        self._events.append(_END)

    # -- used by the pool and responses ---------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """Whether an idle connection can carry another request: O(1), at most one `poll` syscall."""
        if (
            self._closed
            or self._received  # bytes nobody asked for (a 408, say) must not be read as the next response
            or self._stray
            or self._error is not None
            or self._transport is None
            or self._transport.is_closing()
        ):
            return False
        poller = self._poll
        return poller is None or not poller.poll(0)  # readable while idle means EOF, a reset or stray bytes

    def close(self) -> None:
        """Close the connection and give its slot back to the pool (safe to call more than once)."""
        if not self._closed:
            self._closed = True
            if self._transport is not None:
                self._transport.close()
            self._wake()
        self._pool._forget(self)

    def abort(self) -> None:
        self.close()
        if self._transport is not None:
            self._transport.abort()

    async def wait_closed(self) -> None:
        await self._lost

    async def send(self, method: bytes, target: bytes, headers: Headers, body: bytes | None) -> None:
        """Write the whole request at once; `_NoResponse(sent=False)` if the connection was already gone."""
        if self._transport is None:
            raise _NoResponse(ReadError("the connection is not open"), sent=False)
        lines = b"".join([b"%s: %s\r\n" % pair for pair in headers])
        # One line per header (a CRLF inside a value would make two valid-looking lines); not the value in the
        # message: it may quote a header value, and those can be secrets.
        if lines.count(b"\n") != len(headers) or not _HEADER_LINES.fullmatch(lines):
            raise RemoteProtocolError("cannot send this request: a header name or value is not valid HTTP")
        if self._error is not None or self._closed:
            raise _NoResponse(self._error or ReadError("the connection was closed"), sent=False)
        self._awaiting_head, self._head_bytes = True, 0
        self._transport.write(b"%s %s HTTP/1.1\r\n%s\r\n%s" % (method, target, lines, body or b""))
        if self._transport.is_closing():  # the socket refused the bytes (EPIPE, ECONNRESET): none were sent
            raise _NoResponse(ReadError("the connection was closed when the request was written"), sent=False)

    async def next_event(self) -> Any:
        """The response's next piece: its `_Head`, a body chunk (bytes) or `_END`, waiting at most the read timeout
        for each piece of data."""
        events = self._events
        while True:
            if events:
                return events.popleft()
            self._buffered = 0
            if self._paused and self._transport is not None:
                self._paused = False
                self._transport.resume_reading()
            if self._closed:
                raise self._failure(ReadError("the connection was closed"))
            if self._error is not None:
                raise self._failure(self._error)
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timeout = self._pool.read_timeout
            timer = loop.call_later(timeout, _expire, waiter, ReadTimeout(f"no data from the server in {timeout:g} s"))
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None

    def _failure(self, error: TransportError) -> TransportError:
        return error if self._received else _NoResponse(error, sent=True)

    def finish(self) -> bool:
        """After a complete response: ready the connection for the next exchange if both sides keep it."""
        if self._closed or self._error is not None or self._stray or not self._complete or not self._keep_alive:
            return False
        self._complete = self._until_close = False
        self._received = False
        self._events.clear()
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        self.exchanges += 1
        return True


class Response:
    """The head of an upstream's response, and its body to read whole or stream."""

    __slots__ = ("_conn", "_done", "_pool", "headers", "status")

    def __init__(self, pool: "ConnectionPool", conn: Connection, head: _Head) -> None:
        self.status: int = head.status
        self.headers: Headers = head.headers  # names lower-cased
        self._pool = pool
        self._conn = conn
        self._done = False

    async def read(self) -> bytes:
        """The whole body (Content-Length, chunked or close-delimited); the connection goes back to the pool."""
        chunks: list[bytes] = []
        ok = False
        try:
            while True:
                event = await self._conn.next_event()
                if event is _END:
                    ok = True
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.append(event)
        except _NoResponse as exc:  # cannot happen once the head arrived, but keep the types honest
            raise exc.error from None
        finally:
            self._finish(ok)

    async def stream(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk as it arrives; the connection is reused only if it is read to the end."""
        ok = False
        try:
            while True:
                event = await self._conn.next_event()
                if event is _END:
                    ok = True
                    return
                yield event
        finally:
            self._finish(ok)

    async def aclose(self) -> None:
        """Give up on the rest of the body: the connection is closed unless the body was already read."""
        self._finish(False)

    def _finish(self, complete: bool) -> None:
        if self._done:
            return
        self._done = True
        conn = self._conn
        if complete and conn.finish():
            self._pool._release(conn)
        else:
            conn.close()


class ConnectionPool:
    """Keep-alive HTTP/1.1 connections to one origin: LIFO reuse, bounded, with waiting."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
        max_connections: int = 256,
        keepalive_expiry: float = 4.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        default_port = self.port == (443 if parts.scheme == "https" else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = host if default_port else f"{host}:{self.port}"
        self._host = (b"host", self.authority.encode("ascii"))
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl_context if ssl_context is not None else httpx2.create_ssl_context()
        self._connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._max = max_connections
        self._expiry = keepalive_expiry
        self._idle: deque[Connection] = deque()
        self._all: set[Connection] = set()
        self._slots = 0  # connections open or opening
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._closed = False
        self.connects = 0  # connections opened so far (for tests and diagnostics)

    @property
    def open_connections(self) -> int:
        return len(self._all)

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def request(self, method: bytes, target: bytes, headers: Headers, body: bytes | None = None) -> Response:
        """Send a request and read the response head; the body is the caller's to read or close.

        `headers` must not carry Host, Content-Length or Transfer-Encoding; they are added here. HEAD is not
        supported: its response's length header describes a body that never comes.
        """
        if method == b"HEAD":
            raise ValueError("HEAD is not supported by this pool")
        headers = [self._host, *headers]
        if body is not None:
            headers.append((b"content-length", str(len(body)).encode("ascii")))
        retried = False
        while True:
            conn = await self._acquire()
            reused = conn.exchanges > 0
            try:
                await conn.send(method, target, headers, body)
                return Response(self, conn, await conn.next_event())  # the first piece is always the head
            except _NoResponse as exc:
                conn.close()
                safe = not exc.sent or (reused and method in IDEMPOTENT_METHODS)
                if retried or not safe:
                    raise exc.error from None
                retried = True
            except BaseException:
                conn.close()
                raise

    async def aclose(self) -> None:
        """Close every connection, idle or busy, and refuse new requests; waits briefly for the sockets."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ReadError("the connection pool is closed"))
        conns = list(self._all)
        for conn in conns:
            conn.close()
        if conns:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await asyncio.gather(*(c.wait_closed() for c in conns))
            for conn in conns:
                conn.abort()
        self._idle.clear()

    # -- slots and the idle stack -------------------------------------------------------------------

    async def _acquire(self) -> Connection:
        idle = self._idle
        while True:
            if self._closed:
                raise ReadError("the connection pool is closed")
            if idle and idle[-1].idle_since < asyncio.get_running_loop().time() - self._expiry:
                self._close_idle()  # the freshest has been idle too long, so have all the others
            while idle:
                conn = idle.pop()
                conn.busy = True
                if conn.usable:
                    return conn
                conn.close()
            if self._slots < self._max:
                self._slots += 1
                return await self._connect()
            handed = await self._wait_for_turn()
            if handed is None:  # a slot was freed for us
                return await self._connect()
            if handed.usable:
                return handed
            keep = handed._counted  # unless its close already gave the slot away, keep it and connect anew
            handed._counted = False
            handed.close()
            if keep:
                return await self._connect()

    async def _wait_for_turn(self) -> Connection | None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Connection | None] = loop.create_future()
        self._waiters.append(waiter)
        timeout = self.read_timeout
        timer = loop.call_later(timeout, _expire, waiter, PoolTimeout(f"no free connection in {timeout:g} s"))
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()  # our turn came just as we were cancelled: pass it on
                if handed is None:
                    self._free_slot()
                else:
                    self._release(handed)
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise
        finally:
            timer.cancel()

    async def _connect(self) -> Connection:
        """Open a connection in a slot the caller holds; the slot is freed if it fails."""
        loop = asyncio.get_running_loop()
        factory: Callable[[], Connection] = lambda: Connection(self)  # noqa: E731
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    factory, self.host, self.port, ssl=self._ssl, server_hostname=self.host if self._ssl else None
                )
        except TimeoutError:
            self._free_slot()
            raise ConnectTimeout(f"could not connect to {self.authority} in {self._connect_timeout:g} s") from None
        except OSError as exc:  # refused, unreachable, DNS (gaierror), TLS (SSLError)
            self._free_slot()
            raise ConnectError(f"{exc} ({self.authority})") from None
        except BaseException:
            self._free_slot()
            raise
        self.connects += 1
        conn._counted = True
        self._all.add(conn)
        if self._closed:
            conn.close()
            raise ReadError("the connection pool is closed")
        return conn

    def _release(self, conn: Connection) -> None:
        """A connection whose exchange completed: to the longest waiter, or onto the idle stack."""
        if self._closed:
            conn.close()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.busy = False
        now = asyncio.get_running_loop().time()
        conn.idle_since = now
        idle = self._idle
        idle.append(conn)
        while idle[0].idle_since < now - self._expiry:  # the oldest idle connection has waited long enough
            oldest = idle.popleft()
            oldest.busy = True  # off the stack already
            oldest.close()

    def _close_idle(self) -> None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            conn.busy = True
            conn.close()

    def _forget(self, conn: Connection) -> None:
        """Called when a connection closes, whoever closed it; frees its slot once."""
        if not conn.busy:
            with contextlib.suppress(ValueError):
                self._idle.remove(conn)  # O(idle), and only when a server closes an idle connection
            conn.busy = True  # off the stack for good
        self._all.discard(conn)
        if conn._counted:
            conn._counted = False
            self._free_slot()

    def _free_slot(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to the waiter, who connects
                return
        self._slots -= 1
