"""Upstream MCP servers behind the gateway, as one interface over two transports.

`HttpUpstream` passes Streamable HTTP exchanges through byte for byte (with the config's headers, never
the agent's); `StdioUpstream` (in `stdio.py`) multiplexes many downstream sessions onto one supervised
child process. Both answer with a `Reply` the gateway can send, inspect or rewrite.
"""

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx2
from anyio.abc import TaskGroup

from integrations.errors import UpstreamUnavailable

# Request headers a client may send that mean something to an MCP server; everything else (the agent's
# Authorization, cookies, Origin) stays at the gateway.
FORWARDED_REQUEST_HEADERS = frozenset(
    {"accept", "content-type", "mcp-session-id", "mcp-protocol-version", "last-event-id", "mcp-method", "mcp-name"}
)
FORWARDED_RESPONSE_HEADERS = frozenset({"content-type", "mcp-session-id", "mcp-protocol-version", "cache-control"})


async def _nothing() -> None:
    return None


@dataclass(slots=True)
class Reply:
    """An upstream's answer: a status, headers, and either a whole body or an event stream."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    close: Callable[[], Awaitable[None]] = field(default=_nothing)

    @property
    def content_type(self) -> str:
        for name, value in self.headers:
            if name == "content-type":
                return value.split(";", 1)[0].strip().lower()
        return ""


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

    async def post(self, body: bytes, message: dict[str, Any], headers: Mapping[str, str], identity: str) -> Reply: ...

    async def get(self, headers: Mapping[str, str], identity: str) -> Reply: ...

    async def delete(self, headers: Mapping[str, str], identity: str) -> Reply: ...

    def start(self, task_group: TaskGroup) -> None: ...

    async def aclose(self) -> None: ...


class HttpUpstream:
    """A Streamable HTTP upstream; requests and responses pass through unchanged."""

    def __init__(self, name: str, url: str, headers: Mapping[str, str], client: httpx2.AsyncClient) -> None:
        self.name = name
        self._url = url
        self._headers = dict(headers)
        self._client = client

    def start(self, task_group: TaskGroup) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def _request_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        out = {k: v for k, v in headers.items() if k in FORWARDED_REQUEST_HEADERS or k.startswith("mcp-param-")}
        out.update(self._headers)
        return out

    async def _send(self, method: str, headers: Mapping[str, str], body: bytes | None = None) -> Reply:
        request = self._client.build_request(method, self._url, headers=self._request_headers(headers), content=body)
        try:
            response = await self._client.send(request, stream=True)
        except httpx2.TransportError as exc:
            raise UpstreamUnavailable(self.name, f"{type(exc).__name__}: {exc}") from exc
        reply_headers = [(k, v) for k, v in response.headers.items() if k in FORWARDED_RESPONSE_HEADERS]
        reply = Reply(status=response.status_code, headers=reply_headers)
        if reply.content_type == "text/event-stream":
            reply.stream = self._stream(response)
            reply.close = response.aclose
            return reply
        try:
            reply.body = await response.aread()
        except httpx2.TransportError as exc:
            raise UpstreamUnavailable(self.name, f"{type(exc).__name__}: {exc}") from exc
        finally:
            await response.aclose()
        return reply

    async def _stream(self, response: httpx2.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx2.TransportError:
            return  # the upstream dropped the stream; the client sees it end, as it would without us

    async def post(self, body: bytes, message: dict[str, Any], headers: Mapping[str, str], identity: str) -> Reply:
        return await self._send("POST", headers, body)

    async def get(self, headers: Mapping[str, str], identity: str) -> Reply:
        return await self._send("GET", headers)

    async def delete(self, headers: Mapping[str, str], identity: str) -> Reply:
        return await self._send("DELETE", headers)
