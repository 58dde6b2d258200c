"""A Streamable HTTP "MCP server" that answers `initialize` and `tools/list` well and then misbehaves on cue.

A `tools/call` (or a `resources/read`) names how to fail: the tool's name or the resource's URI is one of
`BEHAVIOURS`. Raw ASGI, so each failure is exactly the bytes a broken server would send. It speaks the
handshake revisions and 2026-07-28 (`server/discover`, and `resultType` on its good answers to a request
that carries that revision's envelope).
"""

import json
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.types import Receive, Scope, Send

__all__ = ["BEHAVIOURS", "BrokenConnection", "Hang", "broken_app", "watch_hang"]

BEHAVIOURS = (
    "echo",
    "five_hundred",
    "not_json",
    "wrong_id",
    "neither",
    "hang",
    "close",
    "sse_end",
    "sse_break",
    "sse_poll_refused",
    "sse_poll_empty",
)
PROTOCOL_VERSION = "2025-11-25"
MODERN_VERSION = "2026-07-28"
ENVELOPE_VERSION = "io.modelcontextprotocol/protocolVersion"


class BrokenConnection(Exception):
    """Raised inside the app to make uvicorn drop the connection mid-response."""


@dataclass
class Hang:
    """One `hang` call as the upstream saw it: it began, and its client (signoff) closed the request."""

    started: anyio.Event = field(default_factory=anyio.Event)
    gone: anyio.Event = field(default_factory=anyio.Event)


_HANGS: dict[Any, Hang] = {}


def watch_hang(request_id: Any) -> Hang:
    """What the upstream will see of the `hang` call with `request_id` (call it in the test's event loop)."""
    return _HANGS.setdefault(request_id, Hang())


async def _read(receive: Receive) -> bytes:
    body = b""
    while True:
        event = await receive()
        chunk: bytes = event.get("body", b"")
        body += chunk
        if not event.get("more_body", False):
            return body


async def _answer(send: Send, status: int, body: bytes, content_type: bytes = b"application/json") -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _json(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def _event(message: dict[str, Any]) -> bytes:
    return b"event: message\ndata: " + _json(message) + b"\n\n"


def _priming(event_id: bytes) -> bytes:
    """An event with an id and no data, asking for a reconnection after 20 ms (SEP-1699's priming event)."""
    return b"id: " + event_id + b"\nretry: 20\ndata: \n\n"


async def _stream(send: Send, *events: bytes) -> None:
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for event in events:
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def broken_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["method"] != "POST":
        last_event_id = dict(scope["headers"]).get(b"last-event-id", b"")
        if scope["method"] == "GET" and last_event_id.startswith(b"sse_poll_empty"):  # resumed with nothing in it
            await _stream(send, _priming(b"sse_poll_empty-again"))
            return
        await _answer(send, 405, b"")
        return
    message = json.loads(await _read(receive))
    method, request_id, params = message.get("method"), message.get("id"), message.get("params") or {}
    if method is None or request_id is None:  # a notification, or the client's response to a request of ours
        await _answer(send, 202, b"")
        return
    modern = isinstance(params.get("_meta"), dict) and params["_meta"].get(ENVELOPE_VERSION) == MODERN_VERSION
    if method == "server/discover":
        result = {
            "supportedVersions": [MODERN_VERSION],
            "capabilities": {"tools": {}, "resources": {}},
            **_MODERN_LIST,
        }
        await _answer(send, 200, _json({"jsonrpc": "2.0", "id": request_id, "result": result}))
        return
    if method == "initialize":
        result = {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {"tools": {}, "resources": {}},
            "serverInfo": {"name": "broken", "version": "1.0.0"},
        }
        await _answer(send, 200, _json({"jsonrpc": "2.0", "id": request_id, "result": result}))
        return
    if method == "tools/list":
        tools = [{"name": name, "inputSchema": {"type": "object"}} for name in BEHAVIOURS]
        result = {"tools": tools, **(_MODERN_LIST if modern else {})}
        await _answer(send, 200, _json({"jsonrpc": "2.0", "id": request_id, "result": result}))
        return
    await _misbehave(send, receive, request_id, str(params.get("name") or params.get("uri") or ""), modern)


_MODERN_LIST = {"resultType": "complete", "ttlMs": 0, "cacheScope": "private"}


async def _misbehave(send: Send, receive: Receive, request_id: Any, behaviour: str, modern: bool) -> None:
    fine = {"content": [{"type": "text", "text": "fine"}], **({"resultType": "complete"} if modern else {})}
    ok = {"jsonrpc": "2.0", "id": request_id, "result": fine}
    if behaviour == "echo":
        await _answer(send, 200, _json(ok))
    elif behaviour == "five_hundred":
        await _answer(send, 500, b"Internal Server Error", b"text/plain")
    elif behaviour == "not_json":
        await _answer(send, 200, b"<html>upstream proxy error</html>")
    elif behaviour == "wrong_id":
        await _answer(send, 200, _json({**ok, "id": 424242}))
    elif behaviour == "neither":
        await _answer(send, 200, _json({"jsonrpc": "2.0", "id": request_id}))
    elif behaviour == "hang":  # until the client gives up, so that uvicorn can shut down
        hang = _HANGS.pop(request_id, None) if isinstance(request_id, str | int) else None
        if hang is not None:
            hang.started.set()
        while (await receive())["type"] != "http.disconnect":
            pass
        if hang is not None:
            hang.gone.set()
    elif behaviour == "close":  # the head and part of the body, then the connection drops
        headers = [(b"content-type", b"application/json"), (b"content-length", b"1000")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"jsonrpc": "2.0", ', "more_body": True})
        raise BrokenConnection(behaviour)
    elif behaviour in ("sse_end", "sse_break"):  # one progress event, then an end, or a dropped connection
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        progress = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "hi"}}
        await send({"type": "http.response.body", "body": _event(progress), "more_body": True})
        if behaviour == "sse_break":
            raise BrokenConnection(behaviour)
        await send({"type": "http.response.body", "body": b""})
    elif behaviour in ("sse_poll_refused", "sse_poll_empty"):  # primed to be resumed; a GET then refuses or is empty
        await _stream(send, _priming(behaviour.encode() + b"-1"))
    else:
        await _answer(
            send, 200, _json({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32602, "message": behaviour}})
        )
