"""A stateless Streamable HTTP MCP server that serves exactly the 2026-07-28-era revisions it is given.

It answers the way the SDK's server does at a revision it lacks (400, -32022 with `supported` and
`requested`), so a test can pit signoff against an upstream whose revisions differ from signoff's own:
one newer than signoff knows, or one without 2026-07-28. Tools: `echo` and `wipe`. Raw ASGI.
"""

import json
from collections.abc import Sequence
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["revisions_app"]

CACHEABLE = {"ttlMs": 0, "cacheScope": "private"}
TOOLS = [
    {"name": "echo", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}},
    {"name": "wipe", "inputSchema": {"type": "object"}},
]


async def _answer(send: Send, status: int, message: dict[str, Any], sse: bool = False) -> None:
    body = json.dumps(message).encode()
    if sse:  # the answer as the one event of a stream, after a notification
        note = b'{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"hi"}}'
        body = b"event: message\r\ndata: " + note + b"\r\n\r\nevent: message\r\ndata: " + body + b"\r\n\r\n"
    content_type = b"text/event-stream" if sse else b"application/json"
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def revisions_app(supported: Sequence[str], *, sse: bool = False) -> ASGIApp:
    """The server, serving the revisions in `supported` and no other; `sse`: answering with event streams."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body", False):
                break
        message = json.loads(body)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        request_id, method = message.get("id"), message.get("method")
        requested = headers.get("mcp-protocol-version", "")
        if requested not in supported:
            data = {"supported": list(supported), "requested": requested}
            error = {"code": -32022, "message": "Unsupported protocol version", "data": data}
            await _answer(send, 400, {"jsonrpc": "2.0", "id": request_id, "error": error})
            return
        if method == "server/discover":
            result: dict[str, Any] = {"supportedVersions": list(supported), "capabilities": {"tools": {}}, **CACHEABLE}
        elif method == "tools/list":
            result = {"tools": TOOLS, **CACHEABLE}
        elif method == "tools/call":
            text = str((message["params"].get("arguments") or {}).get("text", "wiped"))
            result = {"content": [{"type": "text", "text": text}]}
        else:
            error = {"code": -32601, "message": f"Method not found: {method}"}
            await _answer(send, 404, {"jsonrpc": "2.0", "id": request_id, "error": error})
            return
        answer = {"jsonrpc": "2.0", "id": request_id, "result": {**result, "resultType": "complete"}}
        await _answer(send, 200, answer, sse)

    return app
