"""`signoff serve`'s HTTP protocol: a response leaves in one write, streams still flow, closing sends what is held."""

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import uvicorn

from integrations.serving import CoalescingTransport, http_protocol

pytestmark = pytest.mark.anyio


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return f"info:{name}"


async def test_writes_in_one_loop_turn_leave_together_and_close_sends_what_is_held() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"")
    transport.write(bytearray(b"body"))
    assert inner.writes == []
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]

    transport.write(b"x" * 70_000)  # over the limit: sent at once
    assert inner.writes[-1] == b"x" * 70_000
    transport.write(b"last")
    transport.close()
    assert inner.writes[-1] == b"last" and inner.closed
    await asyncio.sleep(0)
    assert len(inner.writes) == 3
    assert transport.get_extra_info("peername") == "info:peername"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(3):
            await send({"type": "http.response.body", "body": b"event %d\n" % i, "more_body": True})
            await anyio.sleep(0.5)
        await send({"type": "http.response.body", "body": b""})
        return
    body = b'{"ok":true}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def serve() -> AsyncIterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", http=http_protocol()))
    with sock:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            with anyio.fail_after(10):
                while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
                    await anyio.sleep(0.01)
            try:
                yield port
            finally:
                server.should_exit = True


async def read_response(stream: anyio.abc.ByteStream) -> tuple[bytes, int]:
    """One Content-Length response; also how many reads it took."""
    data, reads = b"", 0
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < 11:
        data += await stream.receive()
        reads += 1
    return data, reads


async def test_a_json_reply_arrives_whole_and_the_connection_stays_open() -> None:
    async with serve() as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            for _ in range(3):
                await stream.send(b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n")
                data, reads = await read_response(stream)
                assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b'\r\n\r\n{"ok":true}')
                assert reads == 1  # head and body in one segment
            await stream.send(b"GET /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data, _ = await read_response(stream)
            assert data.endswith(b'{"ok":true}')
            with anyio.fail_after(5), pytest.raises(anyio.EndOfStream):
                await stream.receive()


async def test_a_stream_is_not_held_back() -> None:
    async with serve() as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            with anyio.fail_after(5):  # the first event alone: the app sleeps before the next
                while b"event 0" not in data:
                    data += await stream.receive()
            assert b"event 1" not in data
            with anyio.fail_after(5):
                while not data.endswith(b"0\r\n\r\n"):
                    data += await stream.receive()
            assert b"event 2" in data
