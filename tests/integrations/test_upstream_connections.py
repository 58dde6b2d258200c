"""`HttpUpstream` and its keep-alive pool against real loopback servers.

Three kinds of server: the bench's fast upstream and the everything server under uvicorn (real MCP over
Streamable HTTP, JSON and SSE replies), and raw asyncio servers written here, which count the
connections they accept and misbehave on cue (close after each response, drop a request unanswered,
stream an event stream only when the test says so, speak TLS).
"""

import asyncio
import datetime
import importlib.util
import ipaddress
import json
import socket
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.types import ASGIApp

from integrations.errors import UpstreamFailed, UpstreamUnavailable
from integrations.gateway.connections import ConnectionPool
from integrations.gateway.upstream import HttpUpstream, Reply, UpstreamRequest
from tests.fakes.upstreams import everything_http_app, serve_http

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
ACCEPT = "application/json, text/event-stream"
HANDSHAKE = "2025-11-25"


def load_fast_upstream() -> Any:
    spec = importlib.util.spec_from_file_location("fast_upstream", ROOT / "bench" / "fast_upstream.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rpc(method: str, params: dict[str, Any] | None = None, request_id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}


def initialize_params() -> dict[str, Any]:
    return {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}


async def post(upstream: HttpUpstream, message: dict[str, Any], **headers: str) -> Reply:
    body = json.dumps(message).encode()
    sent = {"accept": ACCEPT, "content-type": "application/json", **headers}
    return await upstream.post(UpstreamRequest(sent, "alpha", body, message))


async def read_all(reply: Reply) -> bytes:
    if reply.stream is None:
        return reply.body
    try:
        return b"".join([chunk async for chunk in reply.stream])
    finally:
        await reply.close()


def sse_messages(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in data.decode().splitlines() if line.startswith("data:")]


def header(reply: Reply, name: str) -> str | None:
    return next((v for k, v in reply.headers if k == name), None)


@asynccontextmanager
async def serve_uvicorn(app: ASGIApp, **config: Any) -> AsyncIterator[str]:
    """Like `serve_http`, with uvicorn settings (e.g. `timeout_keep_alive`)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning", ws="none", **config))
    with sock:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                with anyio.fail_after(10):
                    while not server.started:  # noqa: ASYNC110
                        await anyio.sleep(0.01)
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True


# -- a raw HTTP/1.1 server -------------------------------------------------------------------------


@dataclass
class RawRequest:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    connection: int  # which accepted connection, from 1
    number: int  # which request on that connection, from 1


Behaviour = Callable[[RawRequest, asyncio.StreamWriter], Awaitable[bool]]


@dataclass
class RawServer:
    """Accepts connections, parses requests, and lets `behaviour` answer; returns False to hang up."""

    behaviour: Behaviour
    accepted: int = 0
    requests: list[RawRequest] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        self.accepted += 1
        connection, number = self.accepted, 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *lines = head.decode("latin-1").split("\r\n")
                method, target, _ = line.split(" ")
                headers = {}
                for entry in lines:
                    if entry:
                        name, value = entry.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                number += 1
                request = RawRequest(method, target, headers, body, connection, number)
                self.requests.append(request)
                if not await self.behaviour(request, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:  # the test is over; end quietly (asyncio logs a cancelled handler)
            pass
        finally:
            self.disconnected.set()
            writer.close()
            self._tasks.discard(task)


@asynccontextmanager
async def raw_server(behaviour: Behaviour, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[RawServer]:
    raw = RawServer(behaviour)
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0, ssl=ssl_context)
    port = server.sockets[0].getsockname()[1]
    raw.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}/mcp"
    try:
        yield raw
    finally:
        server.close()
        for task in list(raw._tasks):
            task.cancel()
        await asyncio.gather(*raw._tasks, return_exceptions=True)
        for writer in raw._writers:
            writer.close()
        await server.wait_closed()
        await asyncio.sleep(0)  # let the transports finish closing


def json_response(payload: Any, *extra: str) -> bytes:
    body = json.dumps(payload).encode()
    head = ["HTTP/1.1 200 OK", "content-type: application/json", f"content-length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def echo_of(request: RawRequest) -> dict[str, Any]:
    message = json.loads(request.body) if request.body else {}
    result = {"method": request.method, "connection": request.connection, "number": request.number}
    return {"jsonrpc": "2.0", "id": message.get("id"), "result": result}


async def keep_alive(request: RawRequest, writer: asyncio.StreamWriter) -> bool:
    writer.write(json_response(echo_of(request)))
    await writer.drain()
    return True


async def close_after_each(request: RawRequest, writer: asyncio.StreamWriter) -> bool:
    """Answer, then hang up without a `Connection: close` header: the client learns it only from the FIN."""
    writer.write(json_response(echo_of(request)))
    await writer.drain()
    return False


async def connection_close(request: RawRequest, writer: asyncio.StreamWriter) -> bool:
    writer.write(json_response(echo_of(request), "connection: close"))
    await writer.drain()
    return False


async def drop_second_request(request: RawRequest, writer: asyncio.StreamWriter) -> bool:
    """A keep-alive server that hangs up on the second request of each connection without answering."""
    if request.number == 2:
        return False
    return await keep_alive(request, writer)


# -- JSON and event streams ------------------------------------------------------------------------


async def test_json_replies_from_the_fast_upstream_pass_through_on_one_connection() -> None:
    fast = load_fast_upstream()
    async with serve_http(fast.app) as url:
        upstream = HttpUpstream("fast", f"{url}/mcp", {})
        try:
            opened = await post(upstream, rpc("initialize", initialize_params()))
            session = header(opened, "mcp-session-id")
            assert opened.status == 200 and opened.content_type == "application/json" and session
            for n in range(20):
                reply = await post(
                    upstream,
                    rpc("tools/call", {"name": "echo", "arguments": {"text": f"hi {n}"}}, n),
                    **{"mcp-session-id": session, "mcp-protocol-version": HANDSHAKE},
                )
                assert reply.stream is None and reply.status == 200
                assert json.loads(reply.body)["result"]["content"][0]["text"] == f"hi {n}"
            closed = await upstream.delete(UpstreamRequest({"mcp-session-id": session}, "alpha"))
            assert closed.status == 200
            assert upstream.pool.connects == 1
        finally:
            await upstream.aclose()


async def test_sse_replies_stream_progress_notifications_before_the_result() -> None:
    async with serve_http(everything_http_app()) as url:
        upstream = HttpUpstream("ev", f"{url}/mcp", {})
        try:
            opened = await post(upstream, rpc("initialize", initialize_params()))
            session = header(opened, "mcp-session-id")
            assert session is not None and opened.content_type == "text/event-stream"
            assert sse_messages(await read_all(opened))[0]["result"]["serverInfo"]["name"] == "everything"
            ids = {"mcp-session-id": session, "mcp-protocol-version": HANDSHAKE}
            await read_all(await post(upstream, {"jsonrpc": "2.0", "method": "notifications/initialized"}, **ids))
            call = rpc(
                "tools/call", {"name": "slow_count", "arguments": {"steps": 3}, "_meta": {"progressToken": "p"}}, 7
            )
            messages = sse_messages(await read_all(await post(upstream, call, **ids)))
            progress = [m["params"]["progress"] for m in messages if m.get("method") == "notifications/progress"]
            assert progress == [1, 2, 3]
            assert messages[-1]["id"] == 7 and messages[-1]["result"]["content"][0]["text"] == "counted to 3"
            assert upstream.pool.connects == 1 and upstream.pool.idle_connections == 1  # every stream was reused
        finally:
            await upstream.aclose()


@pytest.mark.parametrize("framing", ["chunked", "close-delimited"])
async def test_an_event_stream_is_passed_on_as_it_arrives(framing: str) -> None:
    gate = asyncio.Event()
    first, second = b'event: message\ndata: {"n":1}\n\n', b'event: message\ndata: {"n":2}\n\n'

    def frame(data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data) if framing == "chunked" else data

    async def events(request: RawRequest, writer: asyncio.StreamWriter) -> bool:
        te = "transfer-encoding: chunked\r\n" if framing == "chunked" else ""
        writer.write(f"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n{te}\r\n".encode() + frame(first))
        await writer.drain()
        await gate.wait()  # the client must have the first event before the second exists
        writer.write(frame(second) + (b"0\r\n\r\n" if framing == "chunked" else b""))
        await writer.drain()
        return framing == "chunked"

    with anyio.fail_after(10):
        async with raw_server(events) as server:
            upstream = HttpUpstream("raw", server.url, {})
            try:
                reply = await post(upstream, rpc("tools/call"))
                assert reply.stream is not None
                received = [await anext(reply.stream)]
                gate.set()
                received += [chunk async for chunk in reply.stream]
                await reply.close()
                assert b"".join(received) == first + second
                assert received[0] == first
                assert upstream.pool.idle_connections == (1 if framing == "chunked" else 0)
            finally:
                await upstream.aclose()


async def test_a_chunked_json_body_is_read_whole() -> None:
    async def chunked(request: RawRequest, writer: asyncio.StreamWriter) -> bool:
        body = json.dumps(echo_of(request)).encode()
        parts = [body[:10], body[10:]]
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
        for part in parts:
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        return True

    async with raw_server(chunked) as server:
        upstream = HttpUpstream("raw", server.url, {})
        try:
            for n in range(3):
                reply = await post(upstream, rpc("ping", request_id=n))
                assert json.loads(reply.body) == {
                    "jsonrpc": "2.0",
                    "id": n,
                    "result": {"method": "POST", "connection": 1, "number": n + 1},
                }
        finally:
            await upstream.aclose()


# -- keep-alive, closed connections and retries ----------------------------------------------------


async def test_sequential_requests_reuse_one_connection() -> None:
    async with raw_server(keep_alive) as server:
        upstream = HttpUpstream("raw", server.url, {})
        try:
            for n in range(25):
                reply = await post(upstream, rpc("ping", request_id=n))
                assert json.loads(reply.body)["result"] == {"method": "POST", "connection": 1, "number": n + 1}
            assert server.accepted == 1
        finally:
            await upstream.aclose()


@pytest.mark.parametrize("behaviour", [close_after_each, connection_close], ids=["silent-close", "connection-close"])
async def test_a_server_that_closes_after_each_response_still_works(behaviour: Behaviour) -> None:
    async with raw_server(behaviour) as server:
        upstream = HttpUpstream("raw", server.url, {})
        try:
            for n in range(25):
                reply = await post(upstream, rpc("ping", request_id=n))
                assert json.loads(reply.body)["result"]["number"] == 1
            assert server.accepted == 25
            assert len(server.requests) == 25  # nothing was sent twice
        finally:
            await upstream.aclose()


async def test_uvicorn_closing_idle_keep_alive_connections_is_survived() -> None:
    fast = load_fast_upstream()
    async with serve_uvicorn(fast.app, timeout_keep_alive=1) as url:
        upstream = HttpUpstream("fast", f"{url}/mcp", {})
        try:
            for pause in (0, 1.3, 0, 1.3, 0):
                await anyio.sleep(pause)
                reply = await post(upstream, rpc("ping"))
                assert reply.status == 200 and json.loads(reply.body)["result"] == {}
            assert upstream.pool.connects == 3  # one per idle period the server ended
        finally:
            await upstream.aclose()


async def test_a_post_that_met_a_closed_connection_after_being_sent_is_not_retried() -> None:
    async with raw_server(drop_second_request) as server:
        upstream = HttpUpstream("raw", server.url, {})
        try:
            assert (await post(upstream, rpc("ping"))).status == 200
            with pytest.raises(UpstreamUnavailable) as caught:
                await post(upstream, rpc("tools/call", request_id=2))
            assert "RemoteProtocolError" in caught.value.detail
            assert [(r.connection, r.number) for r in server.requests] == [(1, 1), (1, 2)]  # sent once
            assert json.loads((await post(upstream, rpc("ping", request_id=3))).body)["result"]["connection"] == 2
        finally:
            await upstream.aclose()


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_an_idempotent_request_on_a_dropped_reused_connection_is_retried_once_on_a_new_one(method: str) -> None:
    async with raw_server(drop_second_request) as server:
        upstream = HttpUpstream("raw", server.url, {})
        try:
            assert (await post(upstream, rpc("ping"))).status == 200
            call = upstream.get if method == "GET" else upstream.delete
            reply = await call(UpstreamRequest({"mcp-session-id": "s-1"}, "alpha"))
            assert json.loads(reply.body)["result"] == {"method": method, "connection": 2, "number": 1}
            assert [(r.method, r.connection, r.number) for r in server.requests] == [
                ("POST", 1, 1),
                (method, 1, 2),
                (method, 2, 1),
            ]
        finally:
            await upstream.aclose()


async def test_a_dead_port_gives_upstream_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    upstream = HttpUpstream("down", f"http://127.0.0.1:{port}/mcp", {})
    try:
        with pytest.raises(UpstreamUnavailable) as caught:
            await post(upstream, rpc("ping"))
        assert caught.value.server == "down"
        assert caught.value.detail.startswith("ConnectError")
        assert upstream.pool.open_connections == 0
    finally:
        await upstream.aclose()


async def test_an_upstream_that_does_not_answer_times_out() -> None:
    async def silent(request: RawRequest, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(30)
        return False

    async with raw_server(silent) as server:
        upstream = HttpUpstream("slow", server.url, {}, timeout=0.3)
        try:
            with anyio.fail_after(5):
                with pytest.raises(UpstreamUnavailable) as caught:
                    await post(upstream, rpc("ping"))
            assert caught.value.detail.startswith("ReadTimeout")
            assert len(server.requests) == 1
            assert upstream.pool.open_connections == 0
        finally:
            await upstream.aclose()


# -- streams that end early -------------------------------------------------------------------------


async def stream_forever(request: RawRequest, writer: asyncio.StreamWriter) -> bool:
    """An event stream for `tools/call` (an event every 50 ms until the client goes), JSON for anything else."""
    if json.loads(request.body).get("method") != "tools/call":
        return await keep_alive(request, writer)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
    for n in range(1, 400):
        event = b'event: message\ndata: {"n":%d}\n\n' % n
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        await asyncio.sleep(0.05)
    return False


async def test_a_stream_abandoned_midway_closes_its_connection_and_leaves_the_pool_clean() -> None:
    with anyio.fail_after(10):
        async with raw_server(stream_forever) as server:
            upstream = HttpUpstream("raw", server.url, {})
            try:
                assert json.loads((await post(upstream, rpc("ping"))).body)["result"]["connection"] == 1
                reply = await post(upstream, rpc("tools/call", request_id=2))
                assert reply.stream is not None
                assert b'"n":1' in await anext(reply.stream)
                await reply.close()
                assert isinstance(reply.stream, AsyncGenerator)
                await reply.stream.aclose()
                assert upstream.pool.open_connections == 0
                await server.disconnected.wait()  # the server saw the connection go
                after = await post(upstream, rpc("ping", request_id=3))
                assert json.loads(after.body) == {
                    "jsonrpc": "2.0",
                    "id": 3,
                    "result": {"method": "POST", "connection": 2, "number": 1},
                }
            finally:
                await upstream.aclose()


async def test_a_stream_cancelled_while_waiting_for_data_closes_its_connection() -> None:
    with anyio.fail_after(10):
        async with raw_server(stream_forever) as server:
            upstream = HttpUpstream("raw", server.url, {})
            try:
                reply = await post(upstream, rpc("tools/call"))
                assert reply.stream is not None
                stream = reply.stream
                with anyio.move_on_after(0.2):
                    async for _ in stream:
                        pass
                await reply.close()
                assert upstream.pool.open_connections == 0
                assert (await post(upstream, rpc("ping", request_id=2))).status == 200
                assert server.accepted == 2
            finally:
                await upstream.aclose()


async def test_a_stream_the_upstream_drops_midway_raises_upstream_failed_after_what_arrived(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def drop(request: RawRequest, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(b"5\r\nhello\r\n")
        await writer.drain()
        return False  # hang up before the last chunk

    async with raw_server(drop) as server:
        upstream = HttpUpstream("raw", server.url, {"authorization": "Bearer upstream-secret"})
        try:
            reply = await post(upstream, rpc("tools/call"))
            assert reply.stream is not None
            received = b""
            with pytest.raises(UpstreamFailed) as failed:
                async for chunk in reply.stream:
                    received += chunk
            assert received == b"hello"
            assert upstream.pool.open_connections == 0
        finally:
            await upstream.aclose()

    assert "its event stream broke: RemoteProtocolError" in failed.value.detail
    [warning] = [r for r in caplog.records if r.levelname == "WARNING" and r.name == "integrations.gateway.upstream"]
    assert "raw" in warning.getMessage() and "its event stream broke" in warning.getMessage()
    assert "upstream-secret" not in caplog.text


# -- concurrency, the pool's bound, shutdown ----------------------------------------------------------


async def test_concurrent_requests_all_succeed_within_the_connection_bound() -> None:
    fast = load_fast_upstream()
    async with serve_http(fast.app) as url:
        upstream = HttpUpstream("fast", f"{url}/mcp", {}, max_connections=8)
        results: dict[int, str] = {}
        try:

            async def call(n: int) -> None:
                reply = await post(upstream, rpc("tools/call", {"name": "echo", "arguments": {"text": str(n)}}, n))
                message = json.loads(reply.body)
                assert message["id"] == n
                results[n] = message["result"]["content"][0]["text"]
                assert upstream.pool.open_connections <= 8

            with anyio.fail_after(20):
                for _ in range(3):
                    async with anyio.create_task_group() as tg:
                        for n in range(100):
                            tg.start_soon(call, n)
            assert results == {n: str(n) for n in range(100)}
            assert 1 <= upstream.pool.connects <= 8
            assert upstream.pool.idle_connections == upstream.pool.open_connections
        finally:
            await upstream.aclose()


async def test_a_full_pool_makes_requests_wait_for_a_connection() -> None:
    gate = asyncio.Event()

    async def slow_first(request: RawRequest, writer: asyncio.StreamWriter) -> bool:
        if request.connection == 1 and request.number == 1:
            await gate.wait()
        return await keep_alive(request, writer)

    with anyio.fail_after(10):
        async with raw_server(slow_first) as server:
            upstream = HttpUpstream("raw", server.url, {}, max_connections=1)
            replies: list[Reply] = []
            try:
                async with anyio.create_task_group() as tg:
                    for n in range(3):
                        tg.start_soon(_append, replies, post(upstream, rpc("ping", request_id=n)))
                    await anyio.sleep(0.2)
                    assert len(server.requests) == 1  # the others wait for the one connection
                    gate.set()
                assert sorted(json.loads(r.body)["result"]["number"] for r in replies) == [1, 2, 3]
                assert server.accepted == 1
            finally:
                await upstream.aclose()


async def _append(replies: list[Reply], reply: Awaitable[Reply]) -> None:
    replies.append(await reply)


async def test_a_waiter_that_gives_up_does_not_lose_the_slot() -> None:
    gate = asyncio.Event()

    async def slow_first(request: RawRequest, writer: asyncio.StreamWriter) -> bool:
        if request.number == 1 and request.connection == 1:
            await gate.wait()
        return await keep_alive(request, writer)

    with anyio.fail_after(10):
        async with raw_server(slow_first) as server:
            upstream = HttpUpstream("raw", server.url, {}, max_connections=1)
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(post, upstream, rpc("ping"))
                    await anyio.sleep(0.1)
                    with anyio.move_on_after(0.1):
                        await post(upstream, rpc("ping", request_id=2))  # waits, then is cancelled
                    gate.set()
                reply = await post(upstream, rpc("ping", request_id=3))
                assert json.loads(reply.body)["result"] == {"method": "POST", "connection": 1, "number": 2}
            finally:
                await upstream.aclose()


async def test_aclose_closes_idle_connections_and_refuses_new_requests() -> None:
    async with raw_server(keep_alive) as server:
        upstream = HttpUpstream("raw", server.url, {})
        await post(upstream, rpc("ping"))
        assert upstream.pool.idle_connections == 1
        await upstream.aclose()
        with anyio.fail_after(5):
            await server.disconnected.wait()
        assert upstream.pool.open_connections == 0
        with pytest.raises(UpstreamUnavailable):
            await post(upstream, rpc("ping"))


# -- what goes on the wire ----------------------------------------------------------------------------


async def test_the_request_carries_mcp_headers_and_configured_ones_never_the_agents_credentials() -> None:
    async with raw_server(keep_alive) as server:
        configured = {"X-Upstream-Key": "k-1", "Authorization": "Bearer upstream-own"}
        upstream = HttpUpstream("raw", server.url + "?tenant=a", configured)
        try:
            agent = {
                "authorization": "Bearer agent-secret",
                "cookie": "c=1",
                "origin": "http://localhost",
                "mcp-session-id": "s-1",
                "mcp-param-region": "eu",
                "content-length": "999",
                "host": "evil.example",
            }
            await post(upstream, rpc("ping"), **agent)
            sent = {"accept": "text/event-stream", "last-event-id": "e-9", "authorization": "x"}
            await upstream.get(UpstreamRequest(sent, "alpha"))
        finally:
            await upstream.aclose()
    posted, got = server.requests
    assert posted.target == "/mcp?tenant=a"
    assert posted.headers["host"] == server.url.split("/")[2]
    assert posted.headers["content-length"] == str(len(posted.body))
    assert posted.headers["x-upstream-key"] == "k-1"
    assert posted.headers["authorization"] == "Bearer upstream-own"
    assert (posted.headers["mcp-session-id"], posted.headers["mcp-param-region"]) == ("s-1", "eu")
    assert "cookie" not in posted.headers and "origin" not in posted.headers
    assert got.method == "GET" and got.body == b"" and "content-length" not in got.headers
    assert got.headers["last-event-id"] == "e-9" and got.headers["authorization"] == "Bearer upstream-own"


async def test_only_the_mcp_response_headers_come_back() -> None:
    async def with_headers(request: RawRequest, writer: asyncio.StreamWriter) -> bool:
        writer.write(json_response({}, "mcp-session-id: s-2", "set-cookie: a=b", "x-internal: 1"))
        return True

    async with raw_server(with_headers) as server:
        upstream = HttpUpstream("raw", server.url, {})
        try:
            reply = await post(upstream, rpc("ping"))
        finally:
            await upstream.aclose()
    assert reply.headers == [("content-type", "application/json"), ("mcp-session-id", "s-2")]


# -- TLS ------------------------------------------------------------------------------------------


@dataclass
class Certificates:
    ca_file: Path
    server: ssl.SSLContext
    names: list[str | None]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A throwaway CA and a certificate it signed for localhost and 127.0.0.1."""
    directory = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signoff test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    names: list[str | None] = []
    server.sni_callback = lambda _sock, name, _ctx: names.append(name)
    return Certificates(ca_file, server, names)


async def test_https_upstreams_verify_the_certificate_and_send_sni(tls: Certificates) -> None:
    async with raw_server(keep_alive, tls.server) as server:
        url = server.url.replace("127.0.0.1", "localhost")
        trusted = ssl.create_default_context(cafile=tls.ca_file)
        upstream = HttpUpstream("tls", url, {}, ssl_context=trusted)
        try:
            for n in range(3):
                reply = await post(upstream, rpc("ping", request_id=n))
                assert json.loads(reply.body)["result"] == {"method": "POST", "connection": 1, "number": n + 1}
        finally:
            await upstream.aclose()
        assert "localhost" in tls.names

        untrusting = HttpUpstream("tls", url, {})  # the system's CAs never signed the test CA
        try:
            with pytest.raises(UpstreamUnavailable) as caught:
                await post(untrusting, rpc("ping"))
            assert caught.value.detail.startswith("ConnectError") and "CERTIFICATE_VERIFY_FAILED" in caught.value.detail
        finally:
            await untrusting.aclose()


async def test_a_connection_idle_past_the_keepalive_expiry_is_replaced() -> None:
    async with raw_server(keep_alive) as server:
        pool = ConnectionPool(server.url, keepalive_expiry=0.2)
        try:
            for pause in (0, 0, 0.4, 0):
                await anyio.sleep(pause)
                response = await pool.request(b"POST", b"/mcp", [], b"{}")
                await response.read()
            assert server.accepted == 2
            assert [r.number for r in server.requests] == [1, 2, 1, 2]
            assert pool.open_connections == 1
        finally:
            await pool.aclose()


async def test_a_large_stream_read_slowly_arrives_whole_and_the_connection_is_kept() -> None:
    event = b"event: message\ndata: " + b"x" * 16_000 + b"\n\n"
    count = 64  # ~1 MiB: reading pauses at 256 KiB unconsumed and resumes as the consumer catches up

    async def large(request: RawRequest, writer: asyncio.StreamWriter) -> bool:
        if request.number > 1:
            return await keep_alive(request, writer)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(count):
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    with anyio.fail_after(20):
        async with raw_server(large) as server:
            upstream = HttpUpstream("raw", server.url, {})
            try:
                reply = await post(upstream, rpc("tools/call"))
                assert reply.stream is not None
                received = bytearray()
                async for chunk in reply.stream:
                    received += chunk
                    await anyio.sleep(0.002)
                await reply.close()
                assert bytes(received) == event * count
                assert (await post(upstream, rpc("ping", request_id=2))).status == 200
                assert server.accepted == 1
            finally:
                await upstream.aclose()


# -- framing the parser must get right -------------------------------------------------------------


def answers(*raw: bytes, hang_up: bool = False) -> Behaviour:
    """A behaviour that writes these bytes as they are for every request."""

    async def behaviour(request: RawRequest, writer: asyncio.StreamWriter) -> bool:
        for piece in raw:
            writer.write(piece)
            await writer.drain()
        return not hang_up

    return behaviour


async def test_an_informational_response_is_skipped_and_the_final_one_read() -> None:
    final = json_response({"jsonrpc": "2.0", "id": 1, "result": {"ok": True}})
    async with raw_server(
        answers(b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n", final)
    ) as server:
        upstream = HttpUpstream("raw", server.url, {})
        try:
            for _ in range(3):
                reply = await post(upstream, rpc("ping"))
                assert (reply.status, json.loads(reply.body)["result"]) == (200, {"ok": True})
            assert server.accepted == 1  # and the connection is kept
        finally:
            await upstream.aclose()


async def test_a_body_without_a_length_ends_when_the_server_closes() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n"
    async with raw_server(answers(head, b'{"jsonrpc": "2.0", ', b'"id": 1, "result": {}}', hang_up=True)) as server:
        upstream = HttpUpstream("raw", server.url, {})
        try:
            for _ in range(2):
                reply = await post(upstream, rpc("ping"))
                assert json.loads(reply.body) == {"jsonrpc": "2.0", "id": 1, "result": {}}
            assert server.accepted == 2  # a close-delimited body cannot share its connection
        finally:
            await upstream.aclose()


async def test_a_length_the_server_does_not_keep_is_a_failure_not_a_short_reply() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n"
    async with raw_server(answers(head, b'{"jsonrpc": "2.0"', hang_up=True)) as server:
        upstream = HttpUpstream("raw", server.url, {})
        try:
            with pytest.raises(UpstreamFailed, match="closed the connection"):
                await read_all(await post(upstream, rpc("ping")))
        finally:
            await upstream.aclose()


async def test_bytes_after_a_response_keep_its_connection_from_being_reused() -> None:
    stray = json_response(echo_of(RawRequest("POST", "/", {}, b"", 0, 0)))
    async with raw_server(answers(json_response({"jsonrpc": "2.0", "id": 1, "result": {}}) + stray)) as server:
        upstream = HttpUpstream("raw", server.url, {})
        try:
            for _ in range(3):
                reply = await post(upstream, rpc("ping"))
                assert json.loads(reply.body)["result"] == {}  # never the stray response
            assert server.accepted == 3
        finally:
            await upstream.aclose()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 70_000 + b"\r\n\r\n", "head is over 64 KiB"),
        (b"HTTP/1.1 2xx OK\r\n\r\n", "malformed response"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello", "malformed response"),
        (b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n", "switched protocols"),
    ],
    ids=["huge-head", "bad-status", "two-lengths", "upgrade"],
)
async def test_a_response_that_breaks_http_fails_with_the_reason_and_the_pool_goes_on(raw: bytes, message: str) -> None:
    async with raw_server(answers(raw)) as bad, raw_server(keep_alive) as good:
        upstream = HttpUpstream("raw", bad.url, {})
        try:
            with pytest.raises(UpstreamFailed, match=message):
                await read_all(await post(upstream, rpc("ping")))
            assert upstream.pool.open_connections == 0  # the broken connection is not kept
        finally:
            await upstream.aclose()
        upstream = HttpUpstream("raw", good.url, {})
        try:
            assert json.loads((await post(upstream, rpc("ping"))).body)["result"]["number"] == 1
        finally:
            await upstream.aclose()


@pytest.mark.parametrize("value", ["a\r\nx-injected: 1", "a\nb", "a\x00b", "a\x7fb"], ids=["crlf", "lf", "nul", "del"])
async def test_a_header_value_that_would_break_the_request_is_refused_without_quoting_it(value: str) -> None:
    async with raw_server(keep_alive) as server:
        upstream = HttpUpstream("raw", server.url, {})
        try:
            with pytest.raises(UpstreamFailed) as failed:
                await post(upstream, rpc("ping"), **{"mcp-session-id": value})
            assert "not valid HTTP" in str(failed.value) and value not in str(failed.value)
            assert server.requests == []  # nothing reached the server
        finally:
            await upstream.aclose()
