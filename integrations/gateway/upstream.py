"""Upstream MCP servers behind the gateway, as one interface over two transports.

`HttpUpstream` passes Streamable HTTP exchanges through byte for byte (with the config's headers, never
the agent's), and resumes a request's event stream that the server ends before the response (SEP-1699);
`StdioUpstream` (in `stdio.py`) multiplexes many downstream sessions onto one supervised child process.
Both answer with a `Reply` the gateway can send, inspect or rewrite.
"""

import json
import logging
import math
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup

from integrations.errors import UpstreamFailed, UpstreamUnavailable
from integrations.gateway.connections import (
    ConnectError,
    ConnectionPool,
    ConnectTimeout,
    Headers,
    PoolTimeout,
    Response,
    TransportError,
)
from integrations.gateway.revisions import DISCOVER_BODY, DISCOVER_HEADERS, DISCOVER_ID, MAX_DISCOVER_BYTES, versions_in
from integrations.gateway.sse import Cursor, rewrite_events

logger = logging.getLogger(__name__)

# Request headers a client may send that mean something to an MCP server; everything else (the agent's
# Authorization, cookies, Origin) stays at the gateway.
FORWARDED_REQUEST_HEADERS = frozenset(
    {"accept", "content-type", "mcp-session-id", "mcp-protocol-version", "last-event-id", "mcp-method", "mcp-name"}
)
FORWARDED_RESPONSE_HEADERS = frozenset({"content-type", "mcp-session-id", "mcp-protocol-version", "cache-control"})
_FORWARDED_RESPONSE_BYTES = frozenset(name.encode() for name in FORWARDED_RESPONSE_HEADERS)
# Framing is the pool's business: a configured header cannot set these.
_POOL_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
USER_AGENT = b"signoff"
# Failures that leave the request unsent: the upstream is unavailable. Any other one came after the request
# went out, so the upstream may have run it: it failed.
_NOT_SENT = (ConnectError, ConnectTimeout, PoolTimeout)
DISCOVER_TTL = 60.0  # how long an upstream's list of revisions is trusted before it is asked again
DISCOVER_RETRY = 5.0  # how soon an upstream that could not be asked is asked again
DISCOVER_TIMEOUT = 10.0
# Resuming a stream the server ended early: the headers that name the session, and the delay before the GET when the
# server asked for none (the SDKs' clients wait 1 s) or for less than the least (no busy loop of reconnections).
_RESUME_HEADERS = ("mcp-session-id", "mcp-protocol-version")
DEFAULT_RETRY = 1.0
MIN_RETRY = 0.02
ENDED = "its event stream ended without the response"


async def _nothing() -> None:
    return None


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer for the agent: a status, headers, and either a whole body or an event stream.

    Immutable: a step that changes an answer (checking it, rewriting its tool list) makes a new one with `replace`.
    """

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    close: Callable[[], Awaitable[None]] = field(default=_nothing)
    # Continues a request's event stream that the upstream ended before the response, from where `Cursor` says it
    # stood; raises `UpstreamFailed` when it cannot. None: such a stream cannot be resumed (a stdio child's).
    resume: Callable[[Cursor], Awaitable[AsyncIterator[bytes]]] | None = None

    @property
    def content_type(self) -> str:
        return content_type(self.headers)


def content_type(headers: Iterable[tuple[str, str]]) -> str:
    """The media type of a response with these headers, lowercased, without parameters; "" if none is given."""
    for name, value in headers:
        if name == "content-type":
            return value.split(";", 1)[0].strip().lower()
    return ""


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """What the gateway sends an upstream, as one value: the agent's headers and name and, for a POST, its bytes
    (`body`, forwarded as they are over HTTP) and their JSON (`message`, which a stdio child's multiplexer reads)."""

    headers: Mapping[str, str]
    identity: str
    body: bytes = b""
    message: dict[str, Any] = field(default_factory=dict)


def json_reply(
    message: Mapping[str, Any] | None, status: int = 200, headers: list[tuple[str, str]] | None = None
) -> Reply:
    if message is None:
        return Reply(status=status, headers=headers or [])
    body = json.dumps(message, separators=(",", ":")).encode()
    return Reply(status=status, headers=[("content-type", "application/json"), *(headers or [])], body=body)


class Upstream(Protocol):
    """What the gateway needs of an upstream server."""

    name: str

    async def post(self, request: UpstreamRequest) -> Reply: ...

    async def get(self, request: UpstreamRequest) -> Reply: ...

    async def delete(self, request: UpstreamRequest) -> Reply: ...

    async def modern_versions(self) -> Sequence[str] | None:
        """The 2026-07-28-era revisions a client can speak to this upstream through signoff, newest last;
        () if none (a handshake-era server), None while that is not known (the upstream cannot be asked)."""
        ...

    def start(self, task_group: TaskGroup) -> None: ...

    async def aclose(self) -> None: ...


class HttpUpstream:
    """A Streamable HTTP upstream; requests and responses pass through unchanged.

    Requests go over the upstream's own keep-alive pool (`connections.ConnectionPool`), which
    explains what is retried and why. Close it with `aclose()`.
    """

    def __init__(
        self,
        name: str,
        url: str,
        headers: Mapping[str, str],
        *,
        timeout: float = 300.0,
        connect_timeout: float = 10.0,
        max_connections: int = 256,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self._url = url
        self._pool = ConnectionPool(
            url,
            connect_timeout=connect_timeout,
            read_timeout=timeout,
            max_connections=max_connections,
            ssl_context=ssl_context,
        )
        self._target = self._pool.target.encode("ascii")
        self._headers = {k.lower(): v.strip() for k, v in headers.items()}
        configured = [(k.encode("ascii"), v.encode()) for k, v in self._headers.items() if k not in _POOL_HEADERS]
        if "user-agent" not in self._headers:
            configured.insert(0, (b"user-agent", USER_AGENT))
        self._configured: Headers = configured
        self._versions: tuple[str, ...] | None = None
        self._versions_until = -math.inf  # monotonic time until which `_versions` is trusted
        self._discovering = anyio.Lock()

    @property
    def pool(self) -> ConnectionPool:
        return self._pool

    def start(self, task_group: TaskGroup) -> None:
        return None

    async def aclose(self) -> None:
        await self._pool.aclose()

    def _request_headers(self, headers: Mapping[str, str]) -> Headers:
        """The agent's MCP headers (never its credentials), then the configured ones, which win."""
        configured = self._headers
        out = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in headers.items()
            if (k in FORWARDED_REQUEST_HEADERS or k.startswith("mcp-param-")) and k not in configured
        ]
        out += self._configured
        return out

    async def _send(self, method: bytes, headers: Mapping[str, str], body: bytes | None = None) -> Reply:
        try:
            response = await self._pool.request(method, self._target, self._request_headers(headers), body)
        except _NOT_SENT as exc:
            raise UpstreamUnavailable(self.name, f"{type(exc).__name__}: {exc}") from exc
        except TransportError as exc:
            raise UpstreamFailed(self.name, f"{type(exc).__name__}: {exc}") from exc
        reply_headers = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers if k in _FORWARDED_RESPONSE_BYTES
        ]
        if content_type(reply_headers) == "text/event-stream":
            return Reply(response.status, reply_headers, stream=self._stream(response), close=response.aclose)
        try:
            return Reply(response.status, reply_headers, body=await response.read())
        except TransportError as exc:
            raise UpstreamFailed(self.name, f"{type(exc).__name__}: {exc}") from exc

    async def _stream(self, response: Response) -> AsyncIterator[bytes]:
        """The event stream's bytes; `UpstreamFailed` if it breaks, so the gateway can say so to the client."""
        try:
            async for chunk in response.stream():
                yield chunk
        except TransportError as exc:
            # The pool's messages name the failure, never a header value, so they are safe to log.
            detail = f"its event stream broke: {type(exc).__name__}: {exc}"
            logger.warning("Upstream %s: %s", self.name, detail)
            raise UpstreamFailed(self.name, detail) from exc
        finally:
            await response.aclose()

    async def post(self, request: UpstreamRequest) -> Reply:
        reply = await self._send(b"POST", request.headers, request.body)
        if reply.stream is not None:
            return replace(reply, resume=_Resumption(self, request.headers).resume)
        return reply

    async def get_after(self, session: Mapping[str, str], last_event_id: str) -> Reply:
        """GET the endpoint with `Last-Event-ID`: the rest of the stream that event was on (from 2025-11-25).

        `session`: the headers that name the session and its protocol version."""
        return await self._send(b"GET", {**session, "accept": "text/event-stream", "last-event-id": last_event_id})

    async def get(self, request: UpstreamRequest) -> Reply:
        return await self._send(b"GET", request.headers)

    async def delete(self, request: UpstreamRequest) -> Reply:
        return await self._send(b"DELETE", request.headers)

    async def modern_versions(self) -> tuple[str, ...] | None:
        """What the upstream's own `server/discover` says it serves, asked once a minute at most (so an upgrade
        is seen), and not while another request is asking; None while it cannot be asked."""
        if time.monotonic() < self._versions_until:
            return self._versions
        async with self._discovering:
            if time.monotonic() < self._versions_until:  # asked while this request waited
                return self._versions
            versions: tuple[str, ...] | None = None
            with anyio.move_on_after(DISCOVER_TIMEOUT):
                try:
                    versions = versions_in(await self._discover())
                except UpstreamUnavailable as exc:
                    logger.info("Upstream %s: asking which revisions it serves failed: %s", self.name, exc.detail)
            if versions is None:
                self._versions_until = time.monotonic() + DISCOVER_RETRY  # keep what was known, and ask again soon
            else:
                self._versions, self._versions_until = versions, time.monotonic() + DISCOVER_TTL
            return self._versions

    async def _discover(self) -> dict[str, Any] | None:
        """The upstream's answer to a `server/discover` of signoff's own (a JSON body, or the event carrying it)."""
        reply = await self._send(b"POST", DISCOVER_HEADERS, DISCOVER_BODY)
        try:
            if reply.stream is None:
                if reply.content_type != "application/json":
                    return None
                try:
                    message = json.loads(reply.body)
                except (ValueError, RecursionError):
                    return None
                return message if isinstance(message, dict) else None
            answer: list[dict[str, Any]] = []
            events = rewrite_events(reply.stream, DISCOVER_ID, lambda message: answer.append(message))
            size = 0
            try:
                async for chunk in events:
                    size += len(chunk)
                    if answer or size > MAX_DISCOVER_BYTES:
                        break
            finally:
                with anyio.CancelScope(shield=True):  # the probe's time limit must not leave the stream open
                    for stream in (events, reply.stream):
                        aclose = getattr(stream, "aclose", None)
                        if aclose is not None:
                            await aclose()
            return answer[0] if answer else None
        finally:
            with anyio.CancelScope(shield=True):
                await reply.close()


class _Resumption:
    """Resuming one request's event stream that the upstream ended before the response, as a 2025-11-25 client would.

    From 2025-11-25 a server may end a request's stream once it has sent an event id, and the client reconnects
    with GET and `Last-Event-ID` after the `retry` delay the server asked for, for the rest of it (SEP-1699, the
    transport's "Resumability and Redelivery"). signoff does that itself, so the agent reads one stream to the
    response and the response is decided and audited as any other. It gives up, with `UpstreamFailed`, when no event
    id came, when the GET is refused, or when the upstream timeout passes without a message (or the delay asked for
    is longer): the read timeout's promise, kept across reconnections, so an upstream that never resumes still
    fails in time.
    """

    def __init__(self, upstream: HttpUpstream, headers: Mapping[str, str]) -> None:
        self._upstream = upstream
        self._session = {k: v for k in _RESUME_HEADERS if (v := headers.get(k)) is not None}
        self._messages = -1
        self._deadline = 0.0

    async def resume(self, cursor: Cursor) -> AsyncIterator[bytes]:
        upstream = self._upstream
        if cursor.last_id is None:
            raise UpstreamFailed(upstream.name, ENDED)
        timeout = upstream.pool.read_timeout
        now = time.monotonic()
        if cursor.messages != self._messages:  # a message since the last reconnection: the clock starts again
            self._messages = cursor.messages
            self._deadline = now + timeout
        delay = DEFAULT_RETRY if cursor.retry_ms is None else max(MIN_RETRY, cursor.retry_ms / 1000)
        if now + delay > self._deadline:
            detail = f"{ENDED}, and resuming it brought no message within {timeout:g} s"
            logger.warning("Upstream %s: %s", upstream.name, detail)
            raise UpstreamFailed(upstream.name, detail)
        logger.debug("Upstream %s ended a stream before the response; resuming it in %g s", upstream.name, delay)
        await anyio.sleep(delay)
        try:
            reply = await upstream.get_after(self._session, cursor.last_id)
        except UpstreamUnavailable as exc:  # UpstreamFailed too; either way the call itself had reached the server
            raise UpstreamFailed(upstream.name, f"{ENDED}, and resuming it failed: {exc.detail}") from exc
        if reply.status == 200 and reply.stream is not None:
            return reply.stream
        await reply.close()
        what = f"HTTP {reply.status}" + (f" with {reply.content_type or 'no body'}" if reply.status == 200 else "")
        detail = f"{ENDED}, and resuming it with GET and Last-Event-ID answered {what}"
        logger.warning("Upstream %s: %s", upstream.name, detail)
        raise UpstreamFailed(upstream.name, detail)
