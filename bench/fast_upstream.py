"""The fastest honest MCP upstream: raw ASGI Streamable HTTP, JSON responses, one `echo` tool.

It measures what the gateway hop costs without an upstream framework in the way. It still
speaks enough of the spec (initialize, sessions, notifications, JSON-RPC errors) for the
SDK's `Client("http://127.0.0.1:PORT/mcp")` to connect. Run `python bench/fast_upstream.py PORT`.
"""

import importlib.util
import json
import sys
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PATH = "/mcp"
LATEST_VERSION = "2025-11-25"
VERSIONS = frozenset({"2025-03-26", "2025-06-18", LATEST_VERSION})
SESSION_HEADER = b"mcp-session-id"

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602

ECHO_TOOL = {
    "name": "echo",
    "description": "Echo the text back.",
    "inputSchema": {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    },
    "annotations": {"readOnlyHint": True, "openWorldHint": False},
}
SERVER_INFO = {"name": "fast-upstream", "version": "1.0.0"}
JSON_HEADERS = [(b"content-type", b"application/json")]

sessions: set[str] = set()


class RPCError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def initialize(params: dict[str, Any]) -> dict[str, Any]:
    requested = params.get("protocolVersion")
    return {
        "protocolVersion": requested if requested in VERSIONS else LATEST_VERSION,
        "capabilities": {"tools": {}},
        "serverInfo": SERVER_INFO,
    }


def call_tool(params: dict[str, Any]) -> dict[str, Any]:
    if params.get("name") != "echo":
        raise RPCError(INVALID_PARAMS, f"Unknown tool: {params.get('name')!r}")
    arguments = params.get("arguments") or {}
    text = arguments.get("text") if isinstance(arguments, dict) else None
    if not isinstance(text, str):
        raise RPCError(INVALID_PARAMS, "echo needs a string argument 'text'")
    return {"content": [{"type": "text", "text": text}], "isError": False}


HANDLERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "initialize": initialize,
    "ping": lambda _params: {},
    "tools/list": lambda _params: {"tools": [ECHO_TOOL]},
    "tools/call": call_tool,
}


def error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def answer(message: Any) -> dict[str, Any] | None:
    """One JSON-RPC message in, its response out (None for notifications and client responses)."""
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return error(None, INVALID_REQUEST, "Not a JSON-RPC 2.0 message")
    method = message.get("method")
    if "id" not in message:  # a notification, or the client's response to a server request
        return None
    request_id = message["id"]
    if not isinstance(method, str):
        return error(request_id, INVALID_REQUEST, "Request has no method")
    handler = HANDLERS.get(method)
    if handler is None:
        return error(request_id, METHOD_NOT_FOUND, f"Method not found: {method}")
    params = message.get("params") or {}
    if not isinstance(params, dict):
        return error(request_id, INVALID_PARAMS, "params must be an object")
    try:
        return {"jsonrpc": "2.0", "id": request_id, "result": handler(params)}
    except RPCError as exc:
        return error(request_id, exc.code, exc.message)


async def respond(send: Send, status: int, body: Any = None, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    all_headers = [*(JSON_HEADERS if body is not None else []), *(headers or [])]
    all_headers.append((b"content-length", str(len(payload)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": payload})


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def post(scope: Scope, receive: Receive, send: Send) -> None:
    try:
        payload = json.loads(await read_body(receive))
    except ValueError:
        await respond(send, 400, error(None, PARSE_ERROR, "Parse error"))
        return
    messages = payload if isinstance(payload, list) else [payload]
    is_initialize = any(isinstance(m, dict) and m.get("method") == "initialize" for m in messages)
    session_id = header(scope, SESSION_HEADER)
    extra_headers: list[tuple[bytes, bytes]] = []
    if is_initialize:
        session_id = uuid.uuid4().hex
        sessions.add(session_id)
        extra_headers.append((SESSION_HEADER, session_id.encode()))
    elif session_id is not None and session_id not in sessions:
        # Spec: a request naming a terminated or unknown session gets 404, so the client starts over.
        await respond(send, 404, error(None, INVALID_REQUEST, "Session not found"))
        return
    responses = [r for r in map(answer, messages) if r is not None]
    if not responses:
        await respond(send, 202, headers=extra_headers)
    elif isinstance(payload, list):
        await respond(send, 200, responses, extra_headers)
    else:
        await respond(send, 200, responses[0], extra_headers)


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    if scope["path"] != PATH:
        await respond(send, 404, error(None, INVALID_REQUEST, "Not found"))
        return
    match scope["method"]:
        case "POST":
            await post(scope, receive, send)
        case "DELETE":
            sessions.discard(header(scope, SESSION_HEADER) or "")
            await respond(send, 200)
        case _:
            # No server-initiated messages, so no GET stream (spec: 405 when not offered).
            await respond(send, 405, headers=[(b"allow", b"POST, DELETE")])


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8002
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    uvicorn.run(app, host="127.0.0.1", port=port, http=http, log_level="warning", access_log=False, lifespan="on")


if __name__ == "__main__":
    main()
