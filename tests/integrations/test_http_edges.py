"""The edges of `/mcp/{server}` as a raw HTTP client meets them: auth, Origin, routing, malformed bodies.

Every test talks to a real signoff over loopback with plain httpx2 requests (no SDK client smoothing
anything over) and asserts what the client reads: the status, the JSON-RPC error, the tool result,
and, where a refusal must have no effect, that the upstream's state and the audit log did not move.
"""

import json
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp_types import CLIENT_CAPABILITIES_META_KEY, PROTOCOL_VERSION_META_KEY, TextContent
from starlette.types import ASGIApp, Receive, Scope, Send

from approvals.models import AuditEvent, AuditKind
from tests.conftest import AGENT_TOKEN, OTHER_TOKEN, Running
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http

pytestmark = pytest.mark.anyio

Start = Callable[..., AbstractAsyncContextManager[Running]]

MODERN = "2026-07-28"
HANDSHAKE = "2025-11-25"
PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS, HEADER_MISMATCH = -32700, -32600, -32602, -32020
ALLOW_ALL = {"version": "1", "default": "allow"}
DEMO_COMMAND = [sys.executable, "-m", "integrations.demo"]
DEMO: dict[str, Any] = {"name": "demo", "command": DEMO_COMMAND, "policy": "catalog:demo"}
ACCEPT = "application/json, text/event-stream"


def everything(url: str, **extra: Any) -> dict[str, Any]:
    return {"name": "ev", "url": f"{url}/mcp", "policy": ALLOW_ALL, **extra}


def gateway_keys(tmp_path: Path, **keys: Any) -> str:
    """A `database_url` for the `signoff` fixture that also sets other `[gateway]` keys.

    `write_config` opens `[gateway]` itself and writes `database_url = "<value>"` on one line, so the value
    closes its own string, adds one key per line, and turns write_config's closing quote into a comment.
    """
    added = "".join(f"\n{key} = {json.dumps(value)}" for key, value in keys.items())
    return f'sqlite:///{tmp_path / "signoff.db"}"{added}\n#'


def auth(token: str = AGENT_TOKEN, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": ACCEPT, **headers}


def modern_call(tool: str, arguments: Any, request_id: int = 1) -> dict[str, Any]:
    """A 2026-07-28 `tools/call`: no session, the protocol envelope in `params._meta`."""
    meta = {PROTOCOL_VERSION_META_KEY: MODERN, CLIENT_CAPABILITIES_META_KEY: {}}
    params = {"name": tool, "arguments": arguments, "_meta": meta}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def modern_headers(tool: str, token: str = AGENT_TOKEN, **headers: str) -> dict[str, str]:
    return auth(token, **{"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": tool, **headers})


def initialize(request_id: int = 1) -> dict[str, Any]:
    params = {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
    return {"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": params}


def message_of(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC response in a reply, whether it came as JSON or as the last event of a stream."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        answers = [
            json.loads(line.removeprefix("data:"))
            for line in response.text.splitlines()
            if line.startswith("data:") and line.strip() != "data:"
        ]
        answers = [m for m in answers if "method" not in m]
        assert answers, response.text
        last: dict[str, Any] = answers[-1]
        return last
    message: dict[str, Any] = response.json()
    return message


def text_of(result: dict[str, Any]) -> str:
    return "\n".join(block["text"] for block in result.get("content", []) if block.get("type") == "text")


def calls(rows: list[AuditEvent]) -> list[AuditEvent]:
    """The audit rows about tool calls (not the policy_loaded rows written at start)."""
    return [row for row in rows if row.kind != AuditKind.POLICY_LOADED]


def free_port() -> int:
    """A loopback port that nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=10) as client:
        yield client


# -- authentication ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong-token-123",
        f"Bearer {AGENT_TOKEN}x",
        f"Basic {AGENT_TOKEN}",
        f"{AGENT_TOKEN}",
        "Bearer",
    ],
    ids=["missing", "wrong", "longer", "basic-scheme", "no-scheme", "empty-bearer"],
)
async def test_a_request_without_a_valid_bearer_token_gets_401_and_never_reaches_the_upstream(
    signoff: Start, http: httpx2.AsyncClient, authorization: str | None
) -> None:
    state = EverythingState()
    headers = modern_headers("delete_record")
    if authorization is None:
        del headers["Authorization"]
    else:
        headers["Authorization"] = authorization
    with anyio.fail_after(10):
        async with serve_http(everything_http_app(state)) as upstream, signoff([everything(upstream)]) as running:
            refused = await http.post(
                running.mcp_url("ev"), json=modern_call("delete_record", {"record_id": "r-1"}), headers=headers
            )
            rows = await running.audit()

    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer ")
    assert "bearer token" in refused.json()["error"]["message"]
    assert state.deleted_records == []
    assert calls(rows) == []


async def test_the_same_request_with_the_agents_token_does_reach_the_upstream(
    signoff: Start, http: httpx2.AsyncClient
) -> None:
    # The control for the test above: the refused request would have deleted a record.
    state = EverythingState()
    with anyio.fail_after(10):
        async with serve_http(everything_http_app(state)) as upstream, signoff([everything(upstream)]) as running:
            response = await http.post(
                running.mcp_url("ev"),
                json=modern_call("delete_record", {"record_id": "r-1"}),
                headers=modern_headers("delete_record"),
            )
            rows = await running.audit()

    assert response.status_code == 200
    assert text_of(message_of(response)["result"]) == "deleted record r-1"
    assert state.deleted_records == ["r-1"]
    assert [(row.identity, row.tool, row.outcome) for row in calls(rows)] == [("alpha", "delete_record", "ok")]


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer"])
async def test_the_bearer_scheme_is_accepted_in_any_case(signoff: Start, http: httpx2.AsyncClient, scheme: str) -> None:
    headers = modern_headers("echo", Authorization=f"{scheme} {AGENT_TOKEN}")
    with anyio.fail_after(10):
        async with serve_http(everything_http_app()) as upstream, signoff([everything(upstream)]) as running:
            response = await http.post(running.mcp_url("ev"), json=modern_call("echo", {"text": "hi"}), headers=headers)

    assert response.status_code == 200
    assert text_of(message_of(response)["result"]) == "hi"


# -- Origin -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["http://evil.example", "http://localhost.evil.example", "null"])
async def test_a_browser_origin_that_is_not_local_or_configured_gets_403_and_no_effect(
    signoff: Start, http: httpx2.AsyncClient, origin: str
) -> None:
    state = EverythingState()
    with anyio.fail_after(10):
        async with serve_http(everything_http_app(state)) as upstream, signoff([everything(upstream)]) as running:
            response = await http.post(
                running.mcp_url("ev"),
                json=modern_call("delete_record", {"record_id": "r-1"}),
                headers=modern_headers("delete_record", Origin=origin),
            )

    assert response.status_code == 403
    assert origin in response.json()["error"]["message"]
    assert state.deleted_records == []


@pytest.mark.parametrize("origin", ["http://localhost:3000", "http://127.0.0.1:5173", "https://console.example"])
async def test_a_localhost_or_configured_origin_is_allowed(
    signoff: Start, http: httpx2.AsyncClient, tmp_path: Path, origin: str
) -> None:
    database_url = gateway_keys(tmp_path, allowed_origins=["https://console.example"])
    with anyio.fail_after(10):
        async with (
            serve_http(everything_http_app()) as upstream,
            signoff([everything(upstream)], database_url=database_url) as running,
        ):
            response = await http.post(
                running.mcp_url("ev"),
                json=modern_call("echo", {"text": "from a browser"}),
                headers=modern_headers("echo", Origin=origin),
            )

    assert response.status_code == 200
    assert text_of(message_of(response)["result"]) == "from a browser"


# -- routing and HTTP methods -------------------------------------------------------------------------


async def test_an_unknown_server_name_gets_404_naming_the_configured_servers(
    signoff: Start, http: httpx2.AsyncClient
) -> None:
    with anyio.fail_after(10):
        async with serve_http(everything_http_app()) as upstream, signoff([everything(upstream), DEMO]) as running:
            response = await http.post(running.mcp_url("nope"), json=initialize(), headers=auth())

    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == INVALID_REQUEST
    assert "'nope'" in error["message"]
    assert "configured: demo, ev" in error["message"]


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_a_method_other_than_post_get_delete_gets_405_with_an_allow_header(
    signoff: Start, http: httpx2.AsyncClient, method: str
) -> None:
    with anyio.fail_after(10):
        async with serve_http(everything_http_app()) as upstream, signoff([everything(upstream)]) as running:
            response = await http.request(method, running.mcp_url("ev"), json=initialize(), headers=auth())

    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST, DELETE"
    assert method in response.json()["error"]["message"]


# -- malformed bodies -----------------------------------------------------------------------------------


@dataclass
class Malformed:
    """One bad POST and what signoff must answer."""

    body: bytes
    status: int
    code: int
    says: str
    headers: dict[str, str] = field(default_factory=dict)


MALFORMED = {
    "not-json": Malformed(b"{this is not json", 400, PARSE_ERROR, "not valid JSON"),
    "not-utf8": Malformed(b'{"jsonrpc": "2.0", "id": 1, "method": "\xff\xfe"}', 400, PARSE_ERROR, "not valid JSON"),
    "batch": Malformed(
        json.dumps([initialize(1), initialize(2)]).encode(), 400, INVALID_REQUEST, "batches are not supported"
    ),
    "scalar": Malformed(b"42", 400, INVALID_REQUEST, "must be an object"),
    "no-jsonrpc": Malformed(b'{"id": 1, "method": "tools/list"}', 400, INVALID_REQUEST, '"jsonrpc": "2.0"'),
    "jsonrpc-1": Malformed(b'{"jsonrpc": "1.0", "id": 1, "method": "tools/list"}', 400, INVALID_REQUEST, '"2.0"'),
    "method-not-string": Malformed(b'{"jsonrpc": "2.0", "id": 1, "method": 7}', 400, INVALID_REQUEST, '"method"'),
    "params-list": Malformed(
        b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": []}', 400, INVALID_REQUEST, '"params"'
    ),
    "bool-id": Malformed(b'{"jsonrpc": "2.0", "id": true, "method": "tools/list"}', 400, INVALID_REQUEST, '"id"'),
    "surrogate-id": Malformed(
        b'{"jsonrpc": "2.0", "id": "\\ud800", "method": "tools/list"}', 400, INVALID_REQUEST, "lone UTF-16 surrogates"
    ),
    "neither-request-nor-response": Malformed(b'{"jsonrpc": "2.0", "id": 1}', 400, INVALID_REQUEST, '"method"'),
    "arguments-list": Malformed(
        json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": ["hi"]}}
        ).encode(),
        200,
        INVALID_PARAMS,
        "params.arguments (an object",
    ),
    "arguments-string": Malformed(
        json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": "hi"}}
        ).encode(),
        200,
        INVALID_PARAMS,
        "params.arguments (an object",
    ),
    "name-missing": Malformed(
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"arguments": {}}}).encode(),
        200,
        INVALID_PARAMS,
        "params.name (a string)",
    ),
    "header-method-mismatch": Malformed(
        json.dumps(modern_call("delete_record", {"record_id": "r-1"})).encode(),
        400,
        HEADER_MISMATCH,
        "mcp-method header does not match",
        {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/list", "Mcp-Name": "delete_record"},
    ),
    "header-name-mismatch": Malformed(
        json.dumps(modern_call("delete_record", {"record_id": "r-1"})).encode(),
        400,
        HEADER_MISMATCH,
        "mcp-name header does not match",
        {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "echo"},
    ),
}


@pytest.mark.parametrize("case", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_post_gets_a_json_rpc_error_and_has_no_effect(
    signoff: Start, http: httpx2.AsyncClient, case: Malformed
) -> None:
    state = EverythingState()
    with anyio.fail_after(10):
        async with serve_http(everything_http_app(state)) as upstream, signoff([everything(upstream)]) as running:
            response = await http.post(
                running.mcp_url("ev"),
                content=case.body,
                headers=auth(**{"Content-Type": "application/json", **case.headers}),
            )
            rows = await running.audit()

    assert response.status_code == case.status
    error = response.json()["error"]
    assert error["code"] == case.code
    assert case.says in error["message"]
    assert state.deleted_records == []
    assert calls(rows) == []


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_forwarded_header_that_is_not_printable_ascii_is_refused_before_the_upstream_sees_it(
    signoff: Start, http: httpx2.AsyncClient, method: str
) -> None:
    state = EverythingState()
    garbled = "e\u00cc\u0081echo\u00ed\u00a0\u0080".encode("latin-1")  # UTF-8 bytes of a lone surrogate, and more
    with anyio.fail_after(10):
        async with serve_http(everything_http_app(state)) as upstream, signoff([everything(upstream)]) as running:
            headers = [(k.encode(), v.encode()) for k, v in auth(**{"Content-Type": "application/json"}).items()]
            response = await http.request(
                method,
                running.mcp_url("ev"),
                content=json.dumps(initialize(1)).encode() if method == "POST" else b"",
                headers=[*headers, (b"Last-Event-ID", garbled)],
            )
            rows = await running.audit()

    assert response.status_code == 400
    assert response.json()["error"]["message"] == "The last-event-id header must be printable ASCII"
    assert calls(rows) == []


async def test_a_deeply_nested_json_body_gets_a_parse_error_not_a_500(signoff: Start, http: httpx2.AsyncClient) -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    with anyio.fail_after(10):
        async with serve_http(everything_http_app()) as upstream, signoff([everything(upstream)]) as running:
            response = await http.post(
                running.mcp_url("ev"), content=nested, headers=auth(**{"Content-Type": "application/json"})
            )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == PARSE_ERROR


async def test_a_modern_tools_call_with_non_object_arguments_gets_the_same_status_as_from_the_upstream(
    signoff: Start, http: httpx2.AsyncClient
) -> None:
    request = modern_call("echo", ["not", "an", "object"])
    with anyio.fail_after(10):
        async with serve_http(everything_http_app()) as upstream, signoff([everything(upstream)]) as running:
            direct = await http.post(f"{upstream}/mcp", json=request, headers=modern_headers("echo"))
            through = await http.post(running.mcp_url("ev"), json=request, headers=modern_headers("echo"))

    assert direct.json()["error"]["code"] == through.json()["error"]["code"] == INVALID_PARAMS
    assert through.status_code == direct.status_code == 400


async def test_a_body_over_max_body_bytes_gets_413_whether_declared_or_streamed(
    signoff: Start, http: httpx2.AsyncClient, tmp_path: Path
) -> None:
    limit = 2048
    # A valid request of exactly `limit` bytes, then the same one byte longer.
    padding = "x" * (limit - len(json.dumps(modern_call("echo", {"text": ""}), separators=(",", ":"))))
    fits = json.dumps(modern_call("echo", {"text": padding}), separators=(",", ":")).encode()
    too_big = json.dumps(modern_call("echo", {"text": padding + "x"}), separators=(",", ":")).encode()
    assert len(fits) == limit

    async def streamed() -> AsyncIterator[bytes]:
        # No Content-Length: signoff must count the chunks as they arrive.
        for start in range(0, len(too_big), 512):
            yield too_big[start : start + 512]

    state = EverythingState()
    headers = modern_headers("echo", **{"Content-Type": "application/json"})
    with anyio.fail_after(10):
        async with (
            serve_http(everything_http_app(state)) as upstream,
            signoff([everything(upstream)], database_url=gateway_keys(tmp_path, max_body_bytes=limit)) as running,
        ):
            at_limit = await http.post(running.mcp_url("ev"), content=fits, headers=headers)
            declared = await http.post(running.mcp_url("ev"), content=too_big, headers=headers)
            chunked = await http.post(running.mcp_url("ev"), content=streamed(), headers=headers)
            after = await http.post(running.mcp_url("ev"), json=modern_call("echo", {"text": "ok"}), headers=headers)

    assert at_limit.status_code == 200
    assert text_of(message_of(at_limit)["result"]) == padding
    assert "content-length" not in chunked.request.headers
    for refused in (declared, chunked):
        assert refused.status_code == 413
        assert f"larger than {limit} bytes" in refused.json()["error"]["message"]
    assert text_of(message_of(after)["result"]) == "ok"


# -- sessions -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["http", "stdio"])
async def test_a_session_created_by_one_agent_cannot_be_used_by_another(
    signoff: Start, http: httpx2.AsyncClient, transport: str
) -> None:
    state = EverythingState()
    if transport == "http":
        stolen_call = owned_call = {"name": "delete_record", "arguments": {"record_id": "r-1"}}
    else:
        stolen_call = {"name": "kill_connection", "arguments": {"pid": 4121}}
        owned_call = {"name": "get_connection", "arguments": {"connection_id": "conn-1"}}
    async with serve_http(everything_http_app(state)) as upstream:
        server = everything(upstream) if transport == "http" else DEMO
        with anyio.fail_after(30):
            async with signoff([server]) as running:
                url = running.mcp_url(server["name"])
                opened = await http.post(url, json=initialize(), headers=auth())
                session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": HANDSHAKE}
                initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
                await http.post(url, json=initialized, headers=auth(**session))

                stolen = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": stolen_call}
                stolen_post = await http.post(url, json=stolen, headers=auth(OTHER_TOKEN, **session))
                stolen_delete = await http.delete(url, headers=auth(OTHER_TOKEN, **session))
                stolen_get = await http.get(url, headers=auth(OTHER_TOKEN, **session))
                owned = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": owned_call}
                owned_post = await http.post(url, json=owned, headers=auth(**session))
                rows = await running.audit()

    for refused in (stolen_post, stolen_delete, stolen_get):
        assert refused.status_code == 403
        assert "belongs to another agent" in refused.json()["error"]["message"]
    assert owned_post.status_code == 200
    result = message_of(owned_post)["result"]
    assert not result.get("isError")
    assert [(row.identity, row.tool) for row in calls(rows)] == [("alpha", owned_call["name"])]
    if transport == "http":
        assert state.deleted_records == ["r-1"]  # once: alpha's call, in alpha's session
    else:
        assert "conn-1 pid=4121" in text_of(result)  # bravo's kill_connection never ran


# -- what the upstream sees ---------------------------------------------------------------------------


@dataclass
class Recorder:
    """ASGI middleware that records the headers and body of every request before passing it on."""

    app: ASGIApp
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        chunks: list[bytes] = []
        more = True
        while more:
            event = await receive()
            chunks.append(event.get("body", b""))
            more = event.get("more_body", False) and event["type"] == "http.request"
        body = b"".join(chunks)
        self.requests.append((scope["method"], headers, body))
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def test_the_upstream_sees_the_configured_headers_and_never_the_agents_credentials(signoff: Start) -> None:
    recorder = Recorder(everything_http_app())
    configured = {"X-Upstream-Key": "upstream-secret", "Authorization": "Bearer upstream-own"}
    with anyio.fail_after(10):
        async with serve_http(recorder) as upstream, signoff([everything(upstream, headers=configured)]) as running:
            async with running.client("ev") as client:
                await client.list_tools()
                echoed = await client.call_tool("echo", {"text": "hello"})
            async with httpx2.AsyncClient(timeout=10) as http:
                raw = await http.post(
                    running.mcp_url("ev"),
                    json=modern_call("echo", {"text": "raw"}),
                    headers=modern_headers("echo", Cookie="agent_session=cookie-secret", Origin="http://localhost"),
                )

    assert isinstance(echoed.content[0], TextContent)
    assert echoed.content[0].text == "hello"
    assert raw.status_code == 200
    methods = [method for method, _, _ in recorder.requests]
    assert "POST" in methods
    for _, headers, _ in recorder.requests:
        assert headers["x-upstream-key"] == "upstream-secret"
        assert headers["authorization"] == "Bearer upstream-own"
        assert not any(AGENT_TOKEN in value for value in headers.values())
        assert "cookie" not in headers
        assert "origin" not in headers


async def test_a_tools_call_sent_as_a_notification_never_reaches_the_upstream(signoff: Start) -> None:
    recorder = Recorder(everything_http_app())
    policy = {"version": "1", "default": "allow", "hide": ["drop_table"]}
    notification = {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "drop_table", "arguments": {}}}
    with anyio.fail_after(10):
        async with (
            serve_http(recorder) as upstream,
            signoff([{"name": "ev", "url": f"{upstream}/mcp", "policy": policy}]) as running,
        ):
            async with httpx2.AsyncClient(timeout=10) as http:
                response = await http.post(running.mcp_url("ev"), json=notification, headers=auth())

    assert response.status_code == 400
    assert "must be a request with an id" in response.json()["error"]["message"]
    assert [body for _, _, body in recorder.requests if b"drop_table" in body] == []


# -- a down upstream ----------------------------------------------------------------------------------


async def test_an_upstream_that_is_down_gives_a_tool_error_naming_it_and_an_audit_row(
    signoff: Start, http: httpx2.AsyncClient
) -> None:
    server = {"name": "down", "url": f"http://127.0.0.1:{free_port()}/mcp", "policy": ALLOW_ALL}
    with anyio.fail_after(15):
        async with signoff([server]) as running:
            call = await http.post(
                running.mcp_url("down"), json=modern_call("echo", {"text": "hi"}), headers=modern_headers("echo")
            )
            opened = await http.post(running.mcp_url("down"), json=initialize(), headers=auth())
            rows = await running.audit()

    assert call.status_code == 200
    result = message_of(call)["result"]
    assert result["isError"] is True
    assert "'down' is unavailable" in text_of(result)
    assert result["_meta"]["signoff/decision"]["outcome"] == "upstream_unavailable"
    assert opened.status_code == 502
    assert "'down' is unavailable" in opened.json()["error"]["message"]
    [row] = calls(rows)
    assert (row.server, row.tool, row.identity, row.outcome) == ("down", "echo", "alpha", "upstream_unavailable")
    assert "ConnectError" in row.detail


# -- after all of it ----------------------------------------------------------------------------------


async def test_the_gateway_keeps_serving_after_every_kind_of_bad_request(signoff: Start, tmp_path: Path) -> None:
    state = EverythingState()
    database_url = gateway_keys(tmp_path, max_body_bytes=4096)
    async with httpx2.AsyncClient(timeout=10) as http:
        with anyio.fail_after(30):
            async with (
                serve_http(everything_http_app(state)) as upstream,
                signoff([everything(upstream), DEMO], database_url=database_url) as running,
            ):
                url = running.mcp_url("ev")
                statuses = [
                    (await http.post(url, json=initialize())).status_code,
                    (await http.post(url, json=initialize(), headers=auth("wrong-token-123"))).status_code,
                    (await http.post(url, json=initialize(), headers=auth(Origin="http://evil.example"))).status_code,
                    (await http.post(running.mcp_url("nope"), json=initialize(), headers=auth())).status_code,
                    (await http.put(url, json=initialize(), headers=auth())).status_code,
                    (await http.post(url, content=b"\x00\x01", headers=auth())).status_code,
                    (await http.post(url, content=b"x" * 5000, headers=auth())).status_code,
                ]
                for case in MALFORMED.values():
                    response = await http.post(url, content=case.body, headers=auth(**case.headers))
                    statuses.append(response.status_code)
                async with running.client("ev") as client:
                    counted = await client.call_tool("counter", {})
                async with running.client("demo", mode="auto") as client:
                    listed = await client.call_tool("list_connections", {})

    assert statuses[:7] == [401, 401, 403, 404, 405, 400, 413]
    assert 500 not in statuses
    assert not counted.is_error
    assert state.counter == 1
    assert isinstance(listed.content[0], TextContent)
    assert "conn-1" in listed.content[0].text


async def test_spaces_and_tabs_around_a_header_value_are_not_part_of_it(signoff: Start) -> None:
    """RFC 9110 section 5.5; httptools, which `signoff serve` uses, keeps them (the conformance suite sends these)."""
    state = EverythingState()
    body = json.dumps(modern_call("echo", {"text": "hi"})).encode()
    head = {**modern_headers("echo"), "Content-Type": "application/json", "Accept": ACCEPT}
    head |= {"Mcp-Name": "  echo \t", "Mcp-Method": "\ttools/call ", "Content-Length": str(len(body))}
    async with serve_http(everything_http_app(state)) as upstream, signoff([everything(upstream)]) as running:
        port = int(running.url.rsplit(":", 1)[1])
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
            await stream.send(f"POST /mcp/ev HTTP/1.1\r\nHost: 127.0.0.1\r\n{lines}\r\n".encode() + body)
            answer = b""
            with anyio.fail_after(10):
                while b'"result"' not in answer and b'"error"' not in answer:
                    answer += await stream.receive()

    assert answer.startswith(b"HTTP/1.1 200")
    assert b'"text":"hi"' in answer.replace(b" ", b"")
