"""Cases for the MCP endpoint: envelopes, ids, methods, params, `_meta`, cancellations, transport, nesting."""

import random
import uuid
from typing import Any

from tests.conftest import AGENT_TOKEN
from tests.fuzzing.case import ACCEPT, HANDSHAKE, MODERN, TOOLS, Target
from tests.fuzzing.values import any_id, api_headers, encode, header_text, key, nested, pct, scalar, value, weird_string

METHODS = [
    "tools/call",
    "tools/call",
    "tools/list",
    "initialize",
    "notifications/cancelled",
    "notifications/initialized",
    "notifications/progress",
    "ping",
    "resources/list",
    "resources/read",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "tools/unknown",
    "",
]


def meta_value(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.4:
        return value(rng)
    modern = {
        "io.modelcontextprotocol/protocolVersion": rng.choice([MODERN, HANDSHAKE, value(rng)]),
        "io.modelcontextprotocol/clientCapabilities": rng.choice([{}, value(rng)]),
    }
    if rng.random() < 0.5:
        modern["progressToken"] = any_id(rng)
    if rng.random() < 0.3:
        modern[weird_string(rng)] = value(rng)
    return modern


def call_params(rng: random.Random, *, unicode: bool = False) -> Any:
    roll = rng.random()
    if not unicode and roll < 0.1:
        return value(rng)  # params of any type
    name: Any = weird_string(rng) if unicode and rng.random() < 0.6 else rng.choice(TOOLS)
    if not unicode and rng.random() < 0.15:
        name = scalar(rng)
    params: dict[str, Any] = {"name": name}
    if unicode:
        params["arguments"] = {rng.choice(["text", "a", "record_id", weird_string(rng)]): weird_string(rng)}
        if rng.random() < 0.3:
            params["arguments"][weird_string(rng)] = weird_string(rng)
    elif rng.random() < 0.85:
        params["arguments"] = rng.choice([value(rng), {key(rng): value(rng) for _ in range(rng.randrange(3))}])
    if rng.random() < 0.5:
        params["_meta"] = meta_value(rng)
    return params


def message(rng: random.Random, method: Any, params: Any, *, notification: bool = False) -> dict[str, Any]:
    msg: dict[str, Any] = {}
    jsonrpc = rng.choice(["2.0"] * 6 + ["1.0", 2.0, None, "", "missing"])
    if jsonrpc != "missing":
        msg["jsonrpc"] = jsonrpc
    if not notification:
        msg["id"] = any_id(rng) if rng.random() < 0.4 else rng.randrange(1, 10_000)
    msg["method"] = method
    if params is not _MISSING:
        msg["params"] = params
    return msg


_MISSING = object()


def mcp_headers(rng: random.Random, target: Target, method: Any, name: Any, *, hostile: bool = False) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {AGENT_TOKEN}", "Accept": ACCEPT, "Content-Type": "application/json"}
    if rng.random() < 0.6:
        headers["MCP-Protocol-Version"] = MODERN
        headers["Mcp-Method"] = str(method) if isinstance(method, str) else "tools/call"
        if isinstance(name, str):
            headers["Mcp-Name"] = header_text(name)
    elif rng.random() < 0.5 and target.session_id:
        headers["Mcp-Session-Id"] = target.session_id
        headers["MCP-Protocol-Version"] = HANDSHAKE
    if not hostile:
        return headers
    for _ in range(rng.randrange(1, 4)):
        which = rng.randrange(9)
        if which == 0:
            headers["MCP-Protocol-Version"] = header_text(rng.choice([MODERN, HANDSHAKE, "1999-01-01", "", "🔥"]))
        elif which == 1:
            headers["Mcp-Method"] = header_text(rng.choice([*METHODS, weird_string(rng)]))
        elif which == 2:
            headers["Mcp-Name"] = header_text(rng.choice([*TOOLS, weird_string(rng)]))
        elif which == 3:
            headers["Content-Type"] = rng.choice(
                ["text/plain", "application/json; charset=latin-1", "multipart/form-data", "", "application/jsonx"]
            )
        elif which == 4:
            headers["Mcp-Session-Id"] = header_text(
                rng.choice(["", "x" * 8000, str(uuid.UUID(int=rng.getrandbits(128))), weird_string(rng)])
            )
        elif which == 5:
            headers["Origin"] = rng.choice(
                ["http://localhost:3000", "http://evil.example", "null", "file://", "http://127.0.0.1.evil", "x"]
            )
        elif which == 6:
            headers["Accept"] = rng.choice(["", "text/html", "application/json", "*/*", "text/event-stream"])
        elif which == 7:
            headers["Authorization"] = rng.choice(
                ["", "Bearer", f"bearer {AGENT_TOKEN}", "Bearer agent-token-bravo", "Basic x", header_text("Bearer 🔥")]
            )
        else:
            headers["Last-Event-ID"] = header_text(weird_string(rng))[:200]
    return headers


def mcp_case(
    rng: random.Random, target: Target, body: bytes, headers: dict[str, str], *, server: str | None = None
) -> dict[str, Any]:
    return {"method": "POST", "path": f"/mcp/{server or target.server}", "headers": headers, "body": body}


def gen_envelope(rng: random.Random, target: Target) -> dict[str, Any]:
    """Envelopes and methods: wrong jsonrpc, ids of every type, batches, notifications, params of wrong types."""
    method: Any = rng.choice([*METHODS, weird_string(rng), 1, None, ["tools/call"]])
    roll = rng.random()
    if method == "tools/call" and roll < 0.7:
        params = call_params(rng)
    elif method == "initialize" and roll < 0.7:
        params = {
            "protocolVersion": rng.choice([HANDSHAKE, MODERN, value(rng)]),
            "capabilities": rng.choice([{}, value(rng)]),
            "clientInfo": rng.choice([{"name": "fuzz", "version": "1"}, value(rng)]),
        }
    elif roll < 0.85:
        params = value(rng)
    else:
        params = _MISSING
    notification = rng.random() < 0.15
    msg: Any = message(rng, method, params, notification=notification)
    if rng.random() < 0.12:
        msg = [message(rng, rng.choice(METHODS), call_params(rng)) for _ in range(rng.randrange(0, 5))]
        if rng.random() < 0.3:
            msg.append(value(rng))
    elif rng.random() < 0.05:
        msg = value(rng)  # not an object at all
    name = params.get("name") if isinstance(params, dict) else None
    return mcp_case(rng, target, encode(rng, msg), mcp_headers(rng, target, method, name))


def gen_unicode(rng: random.Random, target: Target) -> dict[str, Any]:
    """tools/call with tool names and arguments full of lone surrogates, NUL, RTL, emoji, astral, huge strings."""
    params = call_params(rng, unicode=True)
    body = encode(rng, message(rng, "tools/call", params))
    return mcp_case(rng, target, body, mcp_headers(rng, target, "tools/call", params["name"]))


def gen_meta(rng: random.Random, target: Target, server: str | None = None) -> dict[str, Any]:
    """`_meta` of every type on every method that takes params."""
    method = rng.choice(["tools/call", "tools/call", "tools/list", "initialize", "ping", "resources/list"])
    if method == "tools/call":
        params: Any = {"name": rng.choice(["echo", "add", "counter", "delete_record", "list_connections"])}
        params["arguments"] = rng.choice([{"text": "hi"}, {"a": 1, "b": 2}, {}])
    elif method == "initialize":
        params = {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}}
    else:
        params = {}
    meta = meta_value(rng)
    params["_meta"] = meta
    if isinstance(meta, dict) and rng.random() < 0.3:
        meta["progressToken"] = value(rng)
    body = encode(rng, message(rng, method, params))
    return mcp_case(rng, target, body, mcp_headers(rng, target, method, params.get("name")), server=server)


def gen_stdio_meta(rng: random.Random, target: Target) -> dict[str, Any]:
    """As `meta`, on the stdio upstream, half the time in its handshake session (no envelope in `_meta` then)."""
    spec = gen_meta(rng, target, server=target.stdio_server)
    if target.stdio_session_id and rng.random() < 0.5:
        headers = {k: v for k, v in spec["headers"].items() if not k.lower().startswith("mcp-")}
        spec["headers"] = {**headers, "Mcp-Session-Id": target.stdio_session_id, "MCP-Protocol-Version": HANDSHAKE}
    return spec


def gen_cancelled(rng: random.Random, target: Target) -> dict[str, Any]:
    """notifications/cancelled with requestId of every type, alone, in batches, or with an id (a request)."""
    params: Any = {"requestId": rng.choice([any_id(rng), value(rng)]), "reason": rng.choice([None, value(rng)])}
    if rng.random() < 0.2:
        params = value(rng)
    elif rng.random() < 0.2:
        del params["requestId"]
    msg: Any = message(rng, "notifications/cancelled", params, notification=rng.random() < 0.8)
    if rng.random() < 0.2:
        msg = [msg, message(rng, "tools/call", {"name": "echo", "arguments": {"text": "x"}})]
    server = target.stdio_server if target.stdio_server and rng.random() < 0.4 else None
    return mcp_case(
        rng, target, encode(rng, msg), mcp_headers(rng, target, "notifications/cancelled", None), server=server
    )


def gen_transport(rng: random.Random, target: Target) -> dict[str, Any]:
    """Headers that disagree with the body, bad content types, absurd sessions, Origins, HTTP methods, raw bytes."""
    roll = rng.random()
    tool = rng.choice(TOOLS)
    body = encode(rng, message(rng, "tools/call", {"name": tool, "arguments": {"text": "hi"}}))
    headers = mcp_headers(rng, target, "tools/call", tool, hostile=True)
    if roll < 0.15:
        method = rng.choice(["GET", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD", "TRACE", "PROPFIND"])
        return {"method": method, "path": f"/mcp/{target.server}", "headers": headers, "body": b""}
    if roll < 0.45:
        body = rng.choice(
            [
                bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 200))),
                b"\xff\xfe\xfd",
                b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\xc3\x28"}}',
                b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"\xed\xa0\x80"}}}',
                b'{"jsonrpc":"2.0","id":1,"method":"tools/call"',
                b'{"jsonrpc":"2.0","id":NaN,"method":"ping"}',
                b'{"jsonrpc":"2.0","id":1e99999,"method":"ping"}',
                b'{"jsonrpc":"2.0","id":1,"id":2,"method":"ping","method":"tools/list"}',
                b"\xef\xbb\xbf" + body,
                body + b"\x00",
                b"",
                b"null",
                b"[]",
                b'"\\ud800"',
                b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"\\u0000"}}}',
            ]
        )
    if rng.random() < 0.1:
        server = rng.choice(["nope", "EV", "ev%00", pct(weird_string(rng)[:50]), "x" * 300])
        return {"method": "POST", "path": f"/mcp/{server}", "headers": headers, "body": body}
    return mcp_case(rng, target, body, headers)


def gen_deep(rng: random.Random, target: Target) -> dict[str, Any]:
    """Deep nesting: as the whole body, inside arguments, inside `_meta`, on /mcp and on /api."""
    depth = rng.choice([64, 500, 1_000, 5_000, 50_000, 100_000])
    inner = nested(rng, depth)
    where = rng.randrange(4)
    if where == 0:
        body = inner
    elif where == 1:
        body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":' + inner
        body += "}}}"
    elif where == 2:
        body = '{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":' + inner + "}}"
    else:
        path = rng.choice(
            [f"/api/approvals/{rng.choice(target.approval_ids or ('x',))}/{rng.choice(['approve', 'reject'])}"]
        )
        return {"method": "POST", "path": path, "headers": api_headers(rng), "body": inner.encode()}
    return mcp_case(rng, target, body.encode(), mcp_headers(rng, target, "tools/call", "echo"))
