"""An upstream that fails mid-call, as the agent sees it: a tool error naming the server, and an audit row.

Real MCP clients talk to a real signoff over loopback, in front of a Streamable HTTP upstream that
misbehaves on cue (`tests/fakes/broken_upstream.py`) or a stdio child that does (`tests/fakes/broken_stdio.py`).
"""

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

import anyio
import httpx2
import pytest
from mcp_types import CallToolResult, TextContent

from tests.conftest import AGENT_TOKEN, READER, Running
from tests.fakes.broken_upstream import broken_app, watch_hang
from tests.fakes.upstreams import serve_http

pytestmark = pytest.mark.anyio

Start = Callable[..., AbstractAsyncContextManager[Running]]
ALLOW_ALL = {"version": "1", "default": "allow"}
BROKEN_STDIO = [sys.executable, "-m", "tests.fakes.broken_stdio"]
ACCEPT = "application/json, text/event-stream"


def text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def outcome(result: CallToolResult) -> Any:
    return (result.meta or {}).get("signoff/decision", {}).get("outcome")


@asynccontextmanager
async def broken_http(signoff: Start, policy: dict[str, Any] = ALLOW_ALL, **kwargs: Any) -> AsyncIterator[Running]:
    gateway = {"upstream_timeout": "1s", **kwargs.pop("gateway", {})}
    async with serve_http(broken_app) as upstream:
        server = {"name": "broken", "url": f"{upstream}/mcp", "policy": policy}
        async with signoff([server], gateway=gateway, **kwargs) as running:
            yield running


@asynccontextmanager
async def broken_stdio(signoff: Start) -> AsyncIterator[Running]:
    server = {"name": "child", "command": BROKEN_STDIO, "policy": ALLOW_ALL}
    async with signoff([server], gateway={"upstream_timeout": "2s"}) as running:
        await ready(running, "child")
        yield running


async def ready(running: Running, server: str) -> None:
    async with httpx2.AsyncClient() as http:
        # a bounded poll (under the caller's fail_after) of what an operator would watch: /healthz
        while not (await http.get(f"{running.url}/healthz")).json()["servers"][server]["ready"]:  # noqa: ASYNC110
            await anyio.sleep(0.05)


HTTP_FAILURES = {
    "five_hundred": "it answered HTTP 500",
    "not_json": "its answer is not valid JSON",
    "wrong_id": "its answer is for request id 424242, not this request",
    "neither": "its answer has neither a result object nor an error object",
    "hang": "ReadTimeout: no data from the server in 1 s",
    "close": "RemoteProtocolError",
    "sse_end": "its event stream ended without the response",
    "sse_break": "its event stream broke: RemoteProtocolError",
}


@pytest.mark.parametrize("behaviour", list(HTTP_FAILURES))
async def test_an_http_upstream_failing_a_call_gives_the_agent_a_tool_error_naming_it(
    signoff: Start, behaviour: str, mode: str
) -> None:
    with anyio.fail_after(15):
        async with broken_http(signoff) as running, running.client("broken", mode=mode) as client:
            failed = await client.call_tool(behaviour, {})
            after = await client.call_tool("echo", {})
            rows = await running.audit()

    assert failed.is_error
    assert "upstream server 'broken' failed" in text(failed)
    assert HTTP_FAILURES[behaviour] in text(failed)
    assert "may have run on the server" in text(failed)
    assert outcome(failed) == "upstream_failure"
    assert not after.is_error and text(after) == "fine"  # the gateway, and the upstream, still serve
    [row] = [r for r in rows if r.tool == behaviour]
    assert row.outcome == "upstream_failure"
    assert HTTP_FAILURES[behaviour] in row.detail


STDIO_FAILURES = {
    "hang": "it did not answer within 2 s",
    "neither": "its answer has neither a result object nor an error object",
    "crash": "the server process exited with code 3",
    "close_output": "the server process closed its output",
}


@pytest.mark.parametrize("behaviour", list(STDIO_FAILURES))
async def test_a_stdio_child_failing_a_call_gives_the_agent_a_tool_error_naming_it(
    signoff: Start, behaviour: str, mode: str
) -> None:
    with anyio.fail_after(20):
        async with broken_stdio(signoff) as running, running.client("child", mode=mode) as client:
            failed = await client.call_tool(behaviour, {})
            await ready(running, "child")  # a crashed child comes back
            after = await client.call_tool("echo", {})
            rows = await running.audit()

    assert failed.is_error
    assert "upstream server 'child' failed" in text(failed)
    assert STDIO_FAILURES[behaviour] in text(failed)
    assert outcome(failed) == "upstream_failure"
    assert not after.is_error and text(after) == "fine"
    [row] = [r for r in rows if r.tool == behaviour]
    assert row.outcome == "upstream_failure"


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        ("five_hundred", "it answered HTTP 500"),
        ("not_json", "its answer is not valid JSON"),
        ("wrong_id", "its answer is for request id 424242"),
        ("hang", "ReadTimeout"),
        ("sse_break", "its event stream broke"),
    ],
)
async def test_other_methods_get_a_json_rpc_error_naming_the_upstream_not_its_bytes(
    signoff: Start, behaviour: str, expected: str
) -> None:
    request = {"jsonrpc": "2.0", "id": 7, "method": "resources/read", "params": {"uri": behaviour}}
    headers = {"Authorization": f"Bearer {AGENT_TOKEN}", "Accept": ACCEPT}
    with anyio.fail_after(15):
        async with broken_http(signoff) as running, httpx2.AsyncClient(timeout=10) as http:
            response = await http.post(running.mcp_url("broken"), json=request, headers=headers)

    if behaviour == "sse_break":  # the stream had begun: its last event is the error
        assert response.status_code == 200
        last = [line for line in response.text.splitlines() if line.startswith("data:")][-1]
        error = httpx2.Response(200, content=last[5:]).json()["error"]
    else:
        assert response.status_code == 502
        error = response.json()["error"]
    assert error["code"] == -32000
    assert "upstream server 'broken' failed" in error["message"] and expected in error["message"]


GUARDED = {
    "version": "1",
    "default": "allow",
    "tools": {
        name: {"action": "require_approval", "approval": {"approvers": ["alice"], "timeout": "10m"}}
        for name in ("five_hundred", "sse_break")
    },
}


async def api(running: Running, method: str, path: str, headers: dict[str, str] = READER) -> httpx2.Response:
    async with httpx2.AsyncClient(base_url=running.url, timeout=10) as http:
        return await http.request(method, path, headers=headers, json={} if method == "POST" else None)


async def approve_when_pending(running: Running, tool: str) -> str:
    while True:  # bounded by the caller's fail_after
        listing = (await api(running, "GET", f"/api/approvals?status=pending&tool={tool}")).json()["approvals"]
        if listing:
            approval_id = str(listing[0]["id"])
            alice = {"Authorization": "Bearer alice-approver-token"}
            await api(running, "POST", f"/api/approvals/{approval_id}/approve", alice)
            return approval_id
        await anyio.sleep(0.02)


@pytest.mark.parametrize(("tool", "streamed"), [("five_hundred", False), ("sse_break", False), ("sse_break", True)])
async def test_an_approved_call_the_upstream_fails_is_a_tool_error_and_recorded_failed_with_why(
    signoff: Start, tool: str, streamed: bool, mode: str
) -> None:
    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        return None

    results: list[CallToolResult] = []
    with anyio.fail_after(20):
        async with (
            broken_http(signoff, GUARDED, approvers=True, gateway={"approval_hold": "10s"}) as running,
            running.client("broken", mode=mode) as client,
        ):
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    progress = on_progress if streamed else None
                    results.append(await client.call_tool(tool, {}, progress_callback=progress))

                tg.start_soon(call)
                approval_id = await approve_when_pending(running, tool)
            while (detail := (await api(running, "GET", f"/api/approvals/{approval_id}")).json())[  # noqa: ASYNC110
                "status"
            ] == "executing":  # the outcome is written just after the answer; bounded by the fail_after
                await anyio.sleep(0.02)
            rows = await running.audit()

    [result] = results
    assert result.is_error and outcome(result) == "upstream_failure"
    assert "upstream server 'broken' failed" in text(result)
    assert detail["status"] == "failed" and detail["outcome"] == "upstream_failure"
    [failed] = [r for r in rows if r.tool == tool and r.kind == "failed"]
    assert failed.outcome == "upstream_failure"
    assert HTTP_FAILURES[tool] in failed.detail


@pytest.mark.parametrize("meta", ["a string", [1, 2], 5])
async def test_a_stdio_request_whose_meta_is_not_an_object_is_refused_naming_params_meta(
    signoff: Start, meta: Any
) -> None:
    headers = {"Authorization": f"Bearer {AGENT_TOKEN}", "Accept": ACCEPT}
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    with anyio.fail_after(20):
        async with broken_stdio(signoff) as running, httpx2.AsyncClient(timeout=10) as http:
            url = running.mcp_url("child")
            opened = await http.post(url, json=initialize, headers=headers)
            headers["Mcp-Session-Id"] = opened.headers["mcp-session-id"]
            answers = [
                await http.post(
                    url, json={"jsonrpc": "2.0", "id": 2, "method": method, "params": params}, headers=headers
                )
                for method, params in [
                    ("tools/call", {"name": "echo", "arguments": {}, "_meta": meta}),
                    ("tools/list", {"_meta": meta}),
                ]
            ]
            after = await http.post(
                url,
                json={"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "echo"}},
                headers=headers,
            )

    for answer in answers:
        assert answer.status_code == 200
        assert answer.json()["error"]["code"] == -32602
        assert "params._meta" in answer.json()["error"]["message"]
    assert after.json()["result"]["content"][0]["text"] == "fine"


async def test_a_clients_response_to_the_server_still_gets_the_upstreams_bare_202(signoff: Start) -> None:
    headers = {"Authorization": f"Bearer {AGENT_TOKEN}", "Accept": ACCEPT}
    response_to_server = {"jsonrpc": "2.0", "id": 99, "result": {"action": "accept", "content": {}}}
    with anyio.fail_after(15):
        async with broken_http(signoff) as running, httpx2.AsyncClient(timeout=10) as http:
            answer = await http.post(running.mcp_url("broken"), json=response_to_server, headers=headers)

    assert answer.status_code == 202 and answer.content == b""


@pytest.mark.parametrize("method", ["tools/call", "resources/read"])
async def test_a_client_that_goes_away_closes_its_request_to_an_http_upstream(signoff: Start, method: str) -> None:
    request_id = f"gone-{method}"
    hang = watch_hang(request_id)
    params = {"name": "hang", "arguments": {}} if method == "tools/call" else {"uri": "hang"}
    request = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    headers = {"Authorization": f"Bearer {AGENT_TOKEN}", "Accept": ACCEPT}
    with anyio.fail_after(10):  # far below the upstream timeout: the close is the client's, passed on
        async with (
            broken_http(signoff, gateway={"upstream_timeout": "60s"}) as running,
            httpx2.AsyncClient(timeout=30) as http,
        ):
            async with anyio.create_task_group() as tg:
                tg.start_soon(partial(http.post, running.mcp_url("broken"), json=request, headers=headers))
                await hang.started.wait()
                tg.cancel_scope.cancel()  # the client closes its request
            await hang.gone.wait()
