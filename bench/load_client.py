"""The benchmarks' load client: one keep-alive HTTP/1.1 connection per simulated agent, speaking MCP by hand.

It costs little next to the servers it loads: it writes requests by hand, reads every response in full
(Content-Length, chunked or until close), parses JSON and SSE bodies and checks each `tools/call` returned a
non-error result with the echoed text.
"""

import asyncio
import contextlib
import json
import socket
from collections.abc import Iterator
from typing import Any

from harness import HOST, BenchError, read_response

PROTOCOL_VERSION = "2025-11-25"


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON-RPC and reads each response in full."""

    def __init__(self, port: int, path: str, headers: dict[str, str]) -> None:
        self.port = port
        self.path = path
        self.headers = dict(headers)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    def _head(self, length: int) -> bytes:
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {HOST}:{self.port}",
            "Content-Type: application/json",
            "Accept: application/json, text/event-stream",
            f"Content-Length: {length}",
        ]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def post(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(self._head(len(body)) + body)
        status, headers, data = await read_response(self.reader)
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers, data


def sse_messages(data: bytes) -> Iterator[Any]:
    """The JSON `data` of each event in an SSE body (any line ending)."""
    text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    for event in text.split("\n\n"):
        lines = [line[5:].removeprefix(" ") for line in event.split("\n") if line.startswith("data:")]
        if lines:
            yield json.loads("\n".join(lines))


def response_to(status: int, headers: dict[str, str], data: bytes, request_id: int) -> dict[str, Any]:
    if status != 200:
        raise BenchError(f"HTTP {status}: {data[:300]!r}")
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == "application/json":
        messages: Any = [json.loads(data)]
    elif content_type == "text/event-stream":
        messages = list(sse_messages(data))
    else:
        raise BenchError(f"unexpected content-type {content_type!r}")
    for message in messages:
        if isinstance(message, dict) and message.get("id") == request_id and "method" not in message:
            return message
    raise BenchError(f"no response to id {request_id} in {data[:300]!r}")


class McpClient:
    """One simulated agent: a connection, an MCP session, and a loop of `tools/call echo`."""

    def __init__(self, port: int, path: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.conn = Connection(port, path, headers)
        self.next_id = 0

    async def start(self) -> None:
        await self.conn.open()
        self.next_id += 1
        init = {
            "jsonrpc": "2.0",
            "id": self.next_id,
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "bench-gateway", "version": "1.0"},
            },
        }
        status, headers, data = await self.conn.post(json.dumps(init).encode())
        result = response_to(status, headers, data, self.next_id).get("result")
        if not isinstance(result, dict) or "protocolVersion" not in result:
            raise BenchError(f"initialize failed: {data[:300]!r}")
        session = headers.get("mcp-session-id")
        if session:
            self.conn.headers["Mcp-Session-Id"] = session
        self.conn.headers["Mcp-Protocol-Version"] = result["protocolVersion"]
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        status, _, data = await self.conn.post(json.dumps(note).encode())
        if status not in (200, 202):
            raise BenchError(f"notifications/initialized: HTTP {status} {data[:200]!r}")

    async def call(self) -> None:
        self.next_id += 1
        request_id = self.next_id
        body = (
            b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}'
            % request_id
        )
        status, headers, data = await self.conn.post(body)
        message = response_to(status, headers, data, request_id)
        result = message.get("result")
        if not isinstance(result, dict) or result.get("isError"):
            raise BenchError(f"tools/call failed: {data[:300]!r}")
        content = result.get("content")
        if not content or content[0].get("text") != "hi":
            raise BenchError(f"tools/call returned {data[:300]!r}")

    async def close(self) -> None:
        await self.conn.close()
