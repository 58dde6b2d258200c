"""A seeded fuzzer for signoff's HTTP surface, shared by tests/test_fuzz.py and bench/bench_fuzz.py.

Each case is built from `(seed, index)` alone (`case(family, seed, index, target)`), so one failing case
regenerates without the ones before it. A `Stage` is a real signoff served by uvicorn over loopback in front
of the everything server (Streamable HTTP), optionally the demo server (stdio), and the loopback Slack fake.
The fuzzer only sends requests and records what came back and what was logged; it knows no expected answers
beyond "no 5xx, no traceback, and the gateway still works afterwards".
"""

import hashlib
import hmac
import json
import logging
import random
import sys
import threading
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import anyio
import anyio.lowlevel
import httpx2
from sqlmodel import Session, col, func, select

from approvals.audit import verify_chain
from approvals.models import AuditEvent
from tests.conftest import AGENT_TOKEN, Running
from tests.fakes.slack_api import FakeSlack
from tests.fakes.upstreams import everything_http_app, serve_http

__all__ = [
    "FAMILIES",
    "Case",
    "Failure",
    "Liveness",
    "Report",
    "Stage",
    "Target",
    "case",
    "check_liveness",
    "run_cases",
    "stage",
]

MODERN = "2026-07-28"
HANDSHAKE = "2025-11-25"
ACCEPT = "application/json, text/event-stream"
SLACK_SECRET = "slack-signing-secret-fuzz"
APPROVER_TOKEN = "alice-approver-token"
MAX_BODY = 256 * 1024  # the stage's [gateway] max_body_bytes
BIG_BODY = 1536 * 1024  # over max_body_bytes and over Slack's 1 MiB
POLICY = {
    "version": "1",
    "default": "allow",
    "hide": ["drop_table"],
    "tools": {
        "delete_record": {
            "action": "require_approval",
            "reason": "Deletes a record",
            "approval": {"approvers": ["alice", "bob"], "timeout": "10m"},
        },
        "fail": {"action": "deny", "reason": "Not today"},
        "add": {"deny_if": [{"arg": "a", "op": "lt", "value": 0}]},
    },
}
TOOLS = ["echo", "add", "fail", "counter", "delete_record", "drop_table", "slow_count", "confirm", "nope"]


# -- what a case is ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One HTTP request, exactly as sent. Header values are latin-1 text (each char one byte on the wire)."""

    family: str
    seed: int
    index: int
    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    chunked: bool = False  # sent without Content-Length, in 64 KiB chunks
    expect_413: bool = False  # an oversized body: the answer must be 413

    def replay(self, base_url: str = "http://127.0.0.1:8080", limit: int = 3000) -> str:
        """Python that sends this request again (the body is cut past `limit` bytes; regenerate it by seed/index)."""
        body = repr(self.body[:limit])
        if len(self.body) > limit:
            digest = hashlib.sha256(self.body).hexdigest()[:16]
            body += f" + ...  # {len(self.body)} bytes, sha256 {digest}; regenerate with the seed and index below"
        content = f"chunks({body})" if self.chunked else body
        return (
            f"# family={self.family} seed={self.seed} index={self.index}\n"
            f"# regenerate: tests.fuzzing.case({self.family!r}, {self.seed}, {self.index}, target)\n"
            f"httpx2.request({self.method!r}, {base_url + self.path!r},\n"
            f"    headers=[{', '.join(f'({k!r}, {v!r})' for k, v in self.headers)}],\n"
            f"    content={content})"
        )


@dataclass(frozen=True)
class Target:
    """What a case may refer to on the stage: real ids and tokens, so requests get past the first check."""

    server: str = "ev"
    stdio_server: str | None = None
    approval_ids: tuple[str, ...] = ()
    session_id: str = ""
    stdio_session_id: str = ""
    web_cookie: str = ""
    web_csrf: str = ""
    slack_channel: str = "C0APPROVALS"
    slack_ts: str = "1700000001.000001"


# -- values -------------------------------------------------------------------------------------------

PIECES = [
    "\ud800",  # lone high surrogate (sent as the JSON escape "\ud800")
    "\udfff",  # lone low surrogate
    "\udbff\udc00",  # a valid pair, U+10FC00
    "\u0000",
    "\u202e",  # RIGHT-TO-LEFT OVERRIDE
    "\u200f\u200e",
    "\u2066abc\u2069",
    "مرحبا بالعالم",
    "שלום",
    "🔥",
    "👩‍👩‍👧‍👦",
    "\U0001f600",
    "\U00010000",
    "\U0010ffff",
    "\ufeff",
    "\ufffe\uffff",
    "e\u0301\u0301\u0301",
    "\r\n",
    "\t",
    "\x7f\x1b[31m",
    "</script><script>alert(1)</script>",
    "'; DROP TABLE audit_events; --",
    "../../etc/passwd",
    "%00%ff",
    "${ALPHA_TOKEN}",
    "{{7*7}}",
    "echo",
    "delete_record",
    "",
    " ",
]
HUGE = [1_000, 10_000, 70_000, 200_000]


def weird_string(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.05:
        piece = rng.choice(PIECES) or "x"
        return piece * (rng.choice(HUGE) // len(piece))
    if roll < 0.1:
        return "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(1, 40)))
    return "".join(rng.choice(PIECES) for _ in range(rng.randrange(1, 5)))


def scalar(rng: random.Random) -> Any:
    return rng.choice(
        [
            None,
            True,
            False,
            0,
            -1,
            1,
            2**31,
            2**63,
            -(2**63) - 1,
            2**64 + 1,
            10**30,
            0.5,
            -0.0,
            1e308,
            5e-324,
            "",
            "0",
            "1",
            "null",
            "2.0",
            weird_string(rng),
            weird_string(rng),
        ]
    )


def value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.55:
        return scalar(rng)
    if roll < 0.75:
        return [value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {key(rng): value(rng, depth + 1) for _ in range(rng.randrange(0, 4))}


def key(rng: random.Random) -> str:
    return rng.choice(["text", "a", "b", "record_id", "name", "steps", "_meta", "", "__proto__", weird_string(rng)])


def any_id(rng: random.Random) -> Any:
    """A JSON-RPC id of every type: the valid string and integer kinds, and everything the spec forbids."""
    return rng.choice(
        [1, 0, -1, 2**53, 2**64, 1.5, "1", "", "abc", weird_string(rng), None, True, [], [1], {}, {"id": 1}]
    )


def encode(rng: random.Random, message: Any) -> bytes:
    """JSON text: escaped ASCII (lone surrogates as "\\ud800"), or raw UTF-8 (lone surrogates as invalid bytes)."""
    if rng.random() < 0.7:
        return json.dumps(message, ensure_ascii=True).encode()
    return json.dumps(message, ensure_ascii=False).encode("utf-8", "surrogatepass")


def nested(rng: random.Random, depth: int) -> str:
    """JSON text nested `depth` deep, built by hand (json.dumps would hit the recursion limit first)."""
    if rng.random() < 0.5:
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def pct(text: str) -> str:
    """`text` percent-encoded for a URL path, lone surrogates as their (invalid) UTF-8 bytes."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def header_text(text: str) -> str:
    """`text` as a header value: its UTF-8 bytes as latin-1 characters, minus what HTTP/1.1 cannot carry."""
    raw = text.encode("utf-8", "surrogatepass")
    return bytes(b for b in raw if b not in b"\r\n\x00").decode("latin-1")


# -- the MCP endpoint -----------------------------------------------------------------------------------

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


# -- /api -----------------------------------------------------------------------------------------------


def api_headers(rng: random.Random) -> dict[str, str]:
    token = rng.choice(
        [APPROVER_TOKEN] * 5
        + ["bob-approver-token", "carol-approver-token", AGENT_TOKEN, "", "nope", header_text(weird_string(rng))]
    )
    headers = {"Authorization": rng.choice(["Bearer ", "bearer ", "Basic ", ""]) + token}
    if rng.random() < 0.8:
        headers["Content-Type"] = rng.choice(["application/json", "text/plain", "application/x-www-form-urlencoded"])
    return headers


def approval_id(rng: random.Random, target: Target) -> str:
    return rng.choice(
        [
            *(target.approval_ids or ("00000000-0000-0000-0000-000000000000",)),
            str(uuid.UUID(int=rng.getrandbits(128))),
            "not-a-uuid",
            "00000000-0000-0000-0000-000000000000",
            "%00",
            pct(weird_string(rng)[:200]),
            "1" * 5000,
        ]
    )


def gen_api(rng: random.Random, target: Target) -> dict[str, Any]:
    """/api: approve, reject, list, get, grants, drift, audit, reload with bad ids, bad bodies, bad tokens."""
    headers = api_headers(rng)
    which = rng.randrange(8)
    rid = approval_id(rng, target)
    if which == 0:
        query = {k: header_text(weird_string(rng))[:100] for k in rng.sample(["status", "server", "tool", "limit"], 2)}
        return {"method": "GET", "path": "/api/approvals?" + urlencode(query), "headers": headers, "body": b""}
    if which == 1:
        return {"method": "GET", "path": f"/api/approvals/{rid}", "headers": headers, "body": b""}
    if which == 2:
        query = {k: header_text(weird_string(rng))[:100] for k in rng.sample(["tool", "server", "kind", "limit"], 2)}
        path = rng.choice(["/api/audit", "/api/grants", "/api/drift"]) + "?" + urlencode(query)
        return {"method": "GET", "path": path, "headers": headers, "body": b""}
    if which == 3:
        path = rng.choice(
            [
                f"/api/grants/{rid}/revoke",
                f"/api/drift/{target.server}/accept",
                f"/api/drift/{target.server}/{pct(weird_string(rng)[:60])}/accept",
                f"/api/drift/{pct(weird_string(rng)[:60])}/accept",
                "/api/policies/reload",
            ]
        )
        return {"method": "POST", "path": path, "headers": headers, "body": encode(rng, value(rng))}
    fields = {
        rng.choice(["reason", "comment", "grant", "arguments", "note", weird_string(rng)]): value(rng)
        for _ in range(rng.randrange(0, 4))
    }
    if rng.random() < 0.3:
        fields["grant"] = rng.choice(["15m", "1h", "0s", "-1m", "1e9s", 1e308, -1, "", "forever", weird_string(rng)])
    body: Any = fields if rng.random() < 0.8 else value(rng)
    raw = encode(rng, body) if rng.random() < 0.9 else rng.choice([b"{", b"\xff\xfe", b"reason=ok", b'{"reason":NaN}'])
    verb = rng.choice(["approve", "reject"])
    method = rng.choice(["POST"] * 8 + ["GET", "PUT"])
    return {"method": method, "path": f"/api/approvals/{rid}/{verb}", "headers": headers, "body": raw}


# -- /slack/events ------------------------------------------------------------------------------------------


def sign(secret: str, stamp: str, body: bytes) -> str:
    """Slack's v0 signature (what slack_sdk's SignatureVerifier computes, but over bytes that need not be UTF-8)."""
    digest = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return f"v0={digest}"


def slack_signed(body: bytes, rng: random.Random, *, honest: bool) -> dict[str, str]:
    stamp = str(int(time.time()))
    signature = sign(SLACK_SECRET, stamp, body)
    headers = {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature}
    if honest:
        return headers
    which = rng.randrange(6)
    if which == 0:
        return {}
    if which == 1:
        headers["X-Slack-Signature"] = "v0=" + "0" * 64
    elif which == 2:
        headers["X-Slack-Request-Timestamp"] = str(int(time.time()) - 3600)
    elif which == 3:
        headers["X-Slack-Request-Timestamp"] = header_text(rng.choice(["", "abc", "-1", "1e10", "9" * 40, "🔥"]))
    elif which == 4:
        headers["X-Slack-Signature"] = header_text(rng.choice(["", "v0=", "v1=abc", signature.upper(), "🔥"]))
    else:
        headers["X-Slack-Signature"] = sign("another-secret", stamp, body)
    return headers


def slack_payload(rng: random.Random, target: Target) -> dict[str, Any]:
    rid = rng.choice([*target.approval_ids, approval_id(rng, target)]) if target.approval_ids else "x"
    user = {"id": rng.choice(["U0ALICE", "U0BOB", "U0NOBODY"]), "username": "alice", "team_id": "T0SIGNOFF"}
    kind = rng.choice(["block_actions"] * 4 + ["view_submission", "shortcut", "message_action", "view_closed", "x"])
    if kind == "view_submission":
        return {
            "type": "view_submission",
            "team": {"id": "T0SIGNOFF", "domain": "acme"},
            "user": user,
            "api_app_id": "A0SIGNOFF",
            "trigger_id": "1.2.x",
            "view": {
                "id": "V0MODAL",
                "type": "modal",
                "callback_id": rng.choice(["signoff_reject", "signoff_approve_note", "x"]),
                "private_metadata": rng.choice([rid, json.dumps({"id": rid}), ""]),
                "blocks": [],
                "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": "no"}}}},
            },
        }
    action = {
        "action_id": rng.choice(["signoff_approve", "signoff_approve_note", "signoff_reject", "signoff_open", "x"]),
        "block_id": "signoff_actions",
        "text": {"type": "plain_text", "text": "Approve"},
        "value": rid,
        "type": "button",
        "action_ts": "1700000000.000001",
    }
    return {
        "type": kind,
        "user": user,
        "api_app_id": "A0SIGNOFF",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": target.slack_ts, "channel_id": target.slack_channel},
        "trigger_id": "13345224609.738474920.x",
        "team": {"id": "T0SIGNOFF", "domain": "acme"},
        "channel": {"id": target.slack_channel, "name": "approvals"},
        "message": {"type": "message", "ts": target.slack_ts, "text": "x", "blocks": []},
        "state": {"values": {}},
        "response_url": "https://hooks.slack.invalid/actions/T0SIGNOFF/1/x",
        "actions": [action],
    }


def mutate(rng: random.Random, doc: Any) -> Any:
    """Replace, delete or retype one value somewhere inside `doc` (in place; returns the new root)."""
    if not isinstance(doc, dict | list) or not doc or rng.random() < 0.1:
        return value(rng)
    keys: list[Any] = list(doc) if isinstance(doc, dict) else list(range(len(doc)))
    k = rng.choice(keys)
    child = doc[k]
    roll = rng.random()
    if isinstance(child, dict | list) and child and roll < 0.5:
        doc[k] = mutate(rng, child)
    elif roll < 0.65 and isinstance(doc, dict):
        del doc[k]
    elif roll < 0.8:
        doc[k] = weird_string(rng)
    else:
        doc[k] = value(rng)
    return doc


def gen_slack(rng: random.Random, target: Target) -> dict[str, Any]:
    """/slack/events: mutated interaction payloads and Events API bodies, signed correctly or not at all."""
    honest = rng.random() < 0.75
    roll = rng.random()
    if roll < 0.7:
        payload: Any = slack_payload(rng, target)
        for _ in range(rng.randrange(0, 4)):
            payload = mutate(rng, payload)
        text = json.dumps(payload, ensure_ascii=rng.random() < 0.7)
        body = urlencode({"payload": text}, encoding="utf-8", errors="surrogatepass").encode()
        content_type = "application/x-www-form-urlencoded"
    elif roll < 0.85:
        event: Any = rng.choice(
            [
                {"type": "url_verification", "challenge": value(rng), "token": "x"},
                {"type": "event_callback", "team_id": "T0SIGNOFF", "event": value(rng)},
                {"type": "app_rate_limited"},
                value(rng),
            ]
        )
        body = encode(rng, event)
        content_type = "application/json"
    else:
        body = rng.choice(
            [
                b"payload=%7B",
                b"payload=",
                b"payload=%ff%fe",
                b"payload=null&payload=1",
                b"command=/signoff&text=%00",
                bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 100))),
                b"",
            ]
        )
        content_type = rng.choice(["application/x-www-form-urlencoded", "application/json", "text/plain", ""])
    headers = {"Content-Type": content_type, **slack_signed(body, rng, honest=honest)}
    return {"method": "POST", "path": "/slack/events", "headers": headers, "body": body}


# -- the web page ------------------------------------------------------------------------------------------


def gen_web(rng: random.Random, target: Target) -> dict[str, Any]:
    """/login and the approve/reject forms, with and without a session and a CSRF token."""
    cookie = rng.choice([target.web_cookie] * 3 + ["", target.web_cookie[:-3] + "AAA", header_text(weird_string(rng))])
    headers = {"Content-Type": rng.choice(["application/x-www-form-urlencoded"] * 4 + ["multipart/form-data", ""])}
    if cookie:
        headers["Cookie"] = f"signoff_session={cookie}"
    if rng.random() < 0.2:
        headers["Origin"] = rng.choice(["http://evil.example", "null", "http://127.0.0.1"])
    csrf = rng.choice([target.web_csrf] * 3 + ["", "x", header_text(weird_string(rng))])
    fields: dict[str, Any] = {}
    if csrf or rng.random() < 0.5:
        fields["csrf"] = csrf
    which = rng.randrange(5)
    if which == 0:
        fields["token"] = rng.choice([APPROVER_TOKEN, "nope", weird_string(rng)])
        fields["next"] = rng.choice(["/approvals", "//evil.example", weird_string(rng)])
        path = "/login"
    elif which == 1:
        query = urlencode({"next": header_text(weird_string(rng))[:200]})
        return {"method": "GET", "path": f"/login?{query}", "headers": headers, "body": b""}
    elif which == 2:
        query = urlencode({k: header_text(weird_string(rng))[:100] for k in ("tool", "server", "status")})
        path = rng.choice([f"/approvals/{approval_id(rng, target)}", "/audit", "/approvals"]) + "?" + query
        if rng.random() < 0.5:  # the audit page's filters and cursors, with numbers of every shape
            keys = ["before", "after", "limit", "since", "until", "kind", "outcome", "agent", "verify"]
            numbers = ["9" * rng.randrange(1, 40), "1" * 5000, "-1", "0", "\u00b2", "1e9", "0x10", " 7"]
            pairs = {k: rng.choice(numbers + [weird_string(rng)]) for k in rng.sample(keys, rng.randrange(1, 4))}
            path = "/audit?" + urlencode({k: header_text(v)[:6000] for k, v in pairs.items()})
        return {"method": "GET", "path": path, "headers": headers, "body": b""}
    else:
        path = f"/approvals/{approval_id(rng, target)}/{rng.choice(['approve', 'reject'])}"
        fields["reason"] = rng.choice(["ok", "", weird_string(rng)])
        if rng.random() < 0.3:
            fields[weird_string(rng)] = weird_string(rng)
    pairs = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in fields.items()]
    body = urlencode(pairs, encoding="utf-8", errors="surrogatepass").encode()
    if rng.random() < 0.1:
        body = rng.choice([b"csrf=%ff%fe&reason=%00", b"\xff\xfe", b"=&=&&&", b"reason=" + b"x" * 100_000])
    return {"method": "POST", "path": path, "headers": headers, "body": body}


# -- oversized bodies ---------------------------------------------------------------------------------------


def _oversized(rng: random.Random, target: Target, paths: list[str]) -> dict[str, Any]:
    path = rng.choice(paths)
    if path.startswith("/mcp/"):
        headers = mcp_headers(rng, target, "tools/call", "echo")
        text = "x" * BIG_BODY
        body = json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": text}}}
        ).encode()
    elif path == "/slack/events":
        payload = json.dumps({**slack_payload(rng, target), "padding": "x" * BIG_BODY})
        body = urlencode({"payload": payload}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", **slack_signed(body, rng, honest=True)}
    elif path.startswith("/api"):
        body = b'{"reason":"' + b"x" * BIG_BODY + b'"}'
        headers = {"Authorization": f"Bearer {APPROVER_TOKEN}", "Content-Type": "application/json"}
    else:
        fields = {"csrf": target.web_csrf, "token": APPROVER_TOKEN, "reason": "x" * BIG_BODY}
        body = urlencode(fields).encode()
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"signoff_session={target.web_cookie}",
        }
    return {
        "method": "POST",
        "path": path,
        "headers": headers,
        "body": body,
        "chunked": rng.random() < 0.6,
        "expect_413": True,
    }


def gen_oversized_limited(rng: random.Random, target: Target) -> dict[str, Any]:
    """Bodies over the limit on the routes that have one (/mcp, /slack/events), declared or chunked."""
    return _oversized(rng, target, [f"/mcp/{target.server}", "/slack/events"])


def gen_oversized_other(rng: random.Random, target: Target) -> dict[str, Any]:
    """Bodies over 1.5 MiB, declared or chunked, on /api and the web forms."""
    rid = target.approval_ids[0] if target.approval_ids else "x"
    return _oversized(rng, target, [f"/api/approvals/{rid}/approve", "/login", f"/approvals/{rid}/reject"])


FAMILIES: dict[str, Callable[[random.Random, Target], dict[str, Any]]] = {
    "envelope": gen_envelope,
    "unicode": gen_unicode,
    "meta": gen_meta,
    "stdio_meta": gen_stdio_meta,
    "cancelled": gen_cancelled,
    "transport": gen_transport,
    "deep": gen_deep,
    "api": gen_api,
    "slack": gen_slack,
    "web": gen_web,
    "oversized_limited": gen_oversized_limited,
    "oversized_other": gen_oversized_other,
}


def case(family: str, seed: int, index: int, target: Target) -> Case:
    """The `index`-th case of `family` for `seed`: depends on nothing else, so it replays alone."""
    rng = random.Random(f"{family}:{seed}:{index}")  # noqa: S311  # reproducible on purpose, not secret
    spec = FAMILIES[family](rng, target)
    headers = tuple((k, v if all(ord(c) < 256 for c in v) else header_text(v)) for k, v in spec.pop("headers").items())
    return Case(family=family, seed=seed, index=index, headers=headers, **spec)


def cases(families: list[str], seed: int, count: int, target: Target) -> Iterator[Case]:
    """`count` cases, taking the families in turn."""
    for index in range(count):
        yield case(families[index % len(families)], seed, index, target)


# -- running cases and watching the log -----------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """Something a case caused: a 5xx, no answer, a traceback or error log, or a missing 413."""

    case: Case
    what: str  # "status 500", "no answer: ReadTimeout", "log ERROR integrations.x: message", "status 400, not 413"
    where: str = ""  # file:line of the innermost frame of ours in the traceback, if any
    trace: str = ""

    @property
    def signature(self) -> str:
        """What tells distinct failures apart: the kind of problem and where it happened."""
        head = self.what.split(":", 1)[0] if self.what.startswith("log") else self.what
        return f"{self.case.family} | {head} | {self.where}"


class LogWatch(logging.Handler):
    """Collects every record with a traceback, and every ERROR or CRITICAL, from any logger."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._lock_ = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            with self._lock_:
                self.records.append(record)

    def take(self) -> list[logging.LogRecord]:
        with self._lock_:
            taken, self.records = self.records, []
        return taken


@asynccontextmanager
async def watching_logs() -> AsyncIterator[LogWatch]:
    """Watch the root logger and uvicorn's (which does not propagate to the root)."""
    watch = LogWatch()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn"), logging.getLogger("uvicorn.error")]
    for logger in loggers:
        logger.addHandler(watch)
    try:
        yield watch
    finally:
        for logger in loggers:
            logger.removeHandler(watch)


OURS = ("/approvals/", "/integrations/", "/policies/")


def describe(record: logging.LogRecord) -> tuple[str, str, str]:
    """(what, where, trace) for a log record: the exception, our innermost frame, the formatted traceback."""
    what = f"log {record.levelname} {record.name}: {record.getMessage()[:200]}"
    if not record.exc_info or record.exc_info[1] is None:
        return what, f"{record.pathname}:{record.lineno}", ""
    exc = record.exc_info[1]
    frames = traceback.extract_tb(exc.__traceback__)
    inner = exc
    while inner.__cause__ is not None or inner.__context__ is not None:
        inner = inner.__cause__ or inner.__context__  # type: ignore[assignment]
        frames = traceback.extract_tb(inner.__traceback__) or frames
    ours = [f for f in frames if any(part in f.filename for part in OURS)]
    frame = (ours or frames or [None])[-1]
    where = f"{frame.filename.split('/wt-fuzz/')[-1].split('/main/')[-1]}:{frame.lineno}" if frame else ""
    what += f" [{type(inner).__name__}: {str(inner)[:160]}]"
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return what, where, trace


@dataclass
class Report:
    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def distinct(self) -> dict[str, list[Failure]]:
        groups: dict[str, list[Failure]] = {}
        for failure in self.failures:
            groups.setdefault(failure.signature, []).append(failure)
        return groups

    def summary(self, base_url: str, most: int = 12) -> str:
        lines = [f"{self.sent} requests, {len(self.failures)} failures, {len(self.distinct())} distinct"]
        for signature, group in list(self.distinct().items())[:most]:
            first = group[0]
            lines += ["", f"== {signature}  ({len(group)}x)", f"   {first.what}", first.case.replay(base_url, 1500)]
            if first.trace:
                lines.append("   " + first.trace.strip().splitlines()[-1])
        return "\n".join(lines)


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 65536):
        yield body[start : start + 65536]


def client(connections: int = 1, timeout: float = 20.0) -> httpx2.AsyncClient:
    limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx2.AsyncClient(timeout=timeout, limits=limits)


async def send(http: httpx2.AsyncClient, base_url: str, one: Case) -> httpx2.Response:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in one.headers]
    content: Any = _chunks(one.body) if one.chunked else one.body
    http.cookies.clear()  # the case's Cookie header is its whole session
    return await http.request(one.method, base_url + one.path, headers=headers, content=content)


async def run_cases(
    base_url: str,
    all_cases: Iterator[Case],
    watch: LogWatch,
    *,
    concurrency: int = 1,
    deadline: float | None = None,
    patience: float = 10.0,
) -> Report:
    """Send every case; a log record is blamed on the cases in flight when it was taken (one, sequentially)."""
    report = Report()
    started = time.monotonic()
    lock = anyio.Lock()

    async def one(http: httpx2.AsyncClient, item: Case) -> None:
        response = None
        try:
            with anyio.move_on_after(patience):
                response = await send(http, base_url, item)
        except httpx2.LocalProtocolError:
            return  # the client refused to send it (an illegal header): nothing reached signoff
        except (httpx2.TransportError, OSError) as exc:
            report.sent += 1
            report.failures.append(Failure(item, f"no answer: {type(exc).__name__} {exc}"[:200]))
            return
        report.sent += 1
        if response is None:
            if item.method != "GET":  # a GET may open a stream that stays open: that is an answer
                report.failures.append(Failure(item, f"no answer within {patience} s"))
            return
        status = response.status_code
        report.statuses[status] = report.statuses.get(status, 0) + 1
        if status >= 500:
            report.failures.append(Failure(item, f"status {status}", "", response.text[:300]))
        elif item.expect_413 and status != 413:
            report.failures.append(Failure(item, f"status {status}, not 413"))

    async def blame(items: list[Case]) -> None:
        await anyio.lowlevel.checkpoint()
        for record in watch.take():
            what, where, trace = describe(record)
            report.failures.append(Failure(items[0], what, where, trace))

    async with client(concurrency, patience + 5) as http:
        if concurrency == 1:
            for item in all_cases:
                if deadline is not None and time.monotonic() > deadline:
                    break
                await one(http, item)
                await blame([item])
        else:
            in_flight: list[Case] = []
            iterator = iter(all_cases)

            async def worker() -> None:
                while deadline is None or time.monotonic() <= deadline:
                    async with lock:
                        item = next(iterator, None)
                    if item is None:
                        return
                    in_flight.append(item)
                    try:
                        await one(http, item)
                    finally:
                        in_flight.remove(item)
                    if watch.records:
                        await blame([item, *in_flight])

            async with anyio.create_task_group() as tg:
                for _ in range(concurrency):
                    tg.start_soon(worker)
    report.seconds = time.monotonic() - started
    return report


# -- the stage ---------------------------------------------------------------------------------------------------


@dataclass
class Stage:
    running: Running
    slack: FakeSlack
    target: Target


@dataclass(frozen=True)
class Liveness:
    call_ok: bool
    healthz_ok: bool
    chain_ok: bool
    last_call_audited: bool
    detail: str

    @property
    def ok(self) -> bool:
        return self.call_ok and self.healthz_ok and self.chain_ok and self.last_call_audited


def slack_section(api: str) -> str:
    users = {"alice": "U0ALICE", "bob": "U0BOB", "carol": "U0CAROL"}
    lines = [
        "",
        "[slack]",
        'bot_token = "xoxb-test-token"',
        f'signing_secret = "{SLACK_SECRET}"',
        'channel = "#approvals"',
        f'api_url = "{api}/api/"',
        "",
    ]
    for name, user in users.items():
        groups = ["ops"] if name == "carol" else ["dba"]
        lines += [
            "[[approvers]]",
            f'name = "{name}"',
            f'token = "{name}-approver-token"',
            f'slack_user = "{user}"',
            f"groups = {json.dumps(groups)}",
            "",
        ]
    return "\n".join(lines)


Start = Callable[..., AbstractAsyncContextManager[Running]]


@asynccontextmanager
async def stage(start: Start, *, stdio: bool = False, pending: int = 3) -> AsyncIterator[Stage]:
    """signoff (fixture-style `start`) before the everything server, the Slack fake, and `pending` held requests."""
    slack = FakeSlack()
    async with serve_http(slack.app) as api, serve_http(everything_http_app()) as upstream:
        servers: list[dict[str, Any]] = [{"name": "ev", "url": f"{upstream}/mcp", "policy": POLICY}]
        if stdio:
            demo = [sys.executable, "-m", "integrations.demo"]
            servers.append({"name": "demo", "command": demo, "policy": "catalog:demo"})
        gateway = {"approval_hold": "0.05s", "max_body_bytes": MAX_BODY}
        async with start(servers, gateway=gateway, extra=slack_section(api)) as running:
            target = await _prepare(running, slack, pending, stdio)
            yield Stage(running, slack, target)


async def _prepare(running: Running, slack: FakeSlack, pending: int, stdio: bool) -> Target:
    ids = []
    async with running.client("ev") as client:
        for n in range(pending):
            result = await client.call_tool("delete_record", {"record_id": f"fuzz-{n}"})
            ids.append(str((result.meta or {})["signoff/decision"]["approval_id"]))
    async with httpx2.AsyncClient(base_url=running.url, timeout=10) as http:
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": HANDSHAKE,
                "capabilities": {},
                "clientInfo": {"name": "fuzz", "version": "1"},
            },
        }
        headers = {"Authorization": f"Bearer {AGENT_TOKEN}", "Accept": ACCEPT}
        session = (await http.post("/mcp/ev", json=init, headers=headers)).headers.get("mcp-session-id", "")
        stdio_session = ""
        if stdio:
            answer = await http.post("/mcp/demo", json=init, headers=headers)
            stdio_session = answer.headers.get("mcp-session-id", "")
        form = await http.get("/login")
        csrf = _csrf(form.text)
        await http.post("/login", data={"csrf": csrf, "token": APPROVER_TOKEN, "next": "/approvals"})
        cookie = http.cookies.get("signoff_session") or ""
        web_csrf = _csrf((await http.get("/approvals")).text)
    with anyio.fail_after(10):
        await slack.wait_for("chat.postMessage", pending)
    channel = next(iter(slack.messages), ("C0APPROVALS", "1700000001.000001"))
    return Target(
        server="ev",
        stdio_server="demo" if stdio else None,
        approval_ids=tuple(ids),
        session_id=session,
        stdio_session_id=stdio_session,
        web_cookie=cookie,
        web_csrf=web_csrf,
        slack_channel=channel[0],
        slack_ts=channel[1],
    )


def _csrf(html: str) -> str:
    marker = 'name="csrf" value="'
    start = html.find(marker)
    return html[start + len(marker) : html.find('"', start + len(marker))] if start >= 0 else ""


async def check_liveness(running: Running, marker: str) -> Liveness:
    """After the fuzzing: a normal allowed call through a real MCP client, /healthz, and the audit chain."""
    problems: list[str] = []
    call_ok = healthz_ok = chain_ok = audited = False
    engine = running.app.state.engine
    with Session(engine) as session:
        before = session.exec(select(func.max(col(AuditEvent.id)))).one() or 0
    try:
        with anyio.fail_after(15):
            async with running.client("ev") as client:
                result = await client.call_tool("echo", {"text": marker})
        texts = [getattr(block, "text", "") for block in result.content]
        call_ok = not result.is_error and texts == [marker]
        if not call_ok:
            problems.append(f"echo answered {result!r}"[:300])
    except Exception as exc:  # liveness reports every way the call can fail
        problems.append(f"echo failed: {type(exc).__name__}: {exc}"[:300])
    async with httpx2.AsyncClient(timeout=10) as http:
        try:
            health = await http.get(f"{running.url}/healthz")
            healthz_ok = health.status_code == 200 and health.json().get("status") == "ok"
            if not healthz_ok:
                problems.append(f"/healthz answered {health.status_code} {health.text[:200]}")
        except httpx2.HTTPError as exc:
            problems.append(f"/healthz failed: {exc!r}")
    try:
        with anyio.fail_after(10):
            await running.app.state.audit.flush()
    except Exception as exc:  # a writer that cannot flush is the finding, whatever it raised
        problems.append(f"the audit writer cannot flush: {type(exc).__name__}: {exc}"[:300])
    with Session(engine) as session:
        report = verify_chain(session)
        chain_ok = report.ok
        if not chain_ok:
            problems.append(f"audit chain broken at row {report.first_bad_id}: {report.problem}")
        rows = session.exec(select(AuditEvent).where(col(AuditEvent.id) > before)).all()
        audited = any(r.tool == "echo" and r.kind == "allowed" for r in rows)
        if not audited:
            problems.append(f"no 'allowed' audit row for the last echo call (rows after it: {len(rows)})")
    return Liveness(call_ok, healthz_ok, chain_ok, audited, "; ".join(problems))
