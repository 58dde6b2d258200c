"""The leanest forwarding hop this stack allows: what any gateway on uvicorn + httptools + uvloop could keep.

A raw ASGI app that forwards each POST's body and `mcp-session-id` header to one upstream over signoff's own
keep-alive pool (`integrations.gateway.connections.ConnectionPool`) and answers with the upstream's status,
content type, session header and body. No MCP logic, no authentication, no policy, no audit: the bench measures
it as the floor under signoff's hop. It runs under uvicorn as `signoff serve` does (its HTTP protocol, the
default loop, which is uvloop where it is installed). Run `python bench/floor_proxy.py PORT UPSTREAM_URL`.
"""

import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn
from fast_upstream import read_body

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # signoff's packages, from this checkout
from integrations.gateway.connections import ConnectionPool, Headers, TransportError
from integrations.serving import http_protocol

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

FORWARDED_REQUEST = frozenset({b"content-type", b"accept", b"mcp-session-id"})
FORWARDED_RESPONSE = frozenset({b"content-type", b"mcp-session-id"})


class FloorProxy:
    """The ASGI app: one pool to the upstream, opened and closed by the lifespan."""

    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url
        self.pool: ConnectionPool | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] == "http":
            if scope["method"] == "POST":
                await self.forward(scope, receive, send)
            else:
                await respond(send, 405, b"", [(b"allow", b"POST")])

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.pool = ConnectionPool(self.upstream_url)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.pool is not None:
                    await self.pool.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.pool is None:
            raise RuntimeError("the lifespan has not started")
        body = await read_body(receive)
        headers: Headers = [(k, v) for k, v in scope["headers"] if k in FORWARDED_REQUEST]
        try:
            response = await self.pool.request(b"POST", self.pool.target.encode("ascii"), headers, body)
            data = await response.read()
        except TransportError as exc:
            await respond(send, 502, f"upstream: {type(exc).__name__}: {exc}".encode(), [])
            return
        await respond(send, response.status, data, [(k, v) for k, v in response.headers if k in FORWARDED_RESPONSE])


async def respond(send: Send, status: int, body: bytes, headers: Headers) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    port, upstream_url = int(sys.argv[1]), sys.argv[2]
    uvicorn.run(
        FloorProxy(upstream_url),
        host="127.0.0.1",
        port=port,
        http=http_protocol(),
        lifespan="on",
        ws="none",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
