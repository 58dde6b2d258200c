"""An HTTP upstream that ends a call's event stream mid-call for the client to poll (SEP-1699, from 2025-11-25).

signoff resumes the stream upstream itself, with GET and `Last-Event-ID`, so the agent reads one stream to the
response, audited and decided as any other; an upstream that will not resume still ends in a tool error. Real MCP
clients talk to a real signoff over loopback, in front of a real `MCPServer` with an event store
(`tests/fakes/upstreams.py`), or of a raw fake that primes a stream and then will not resume it
(`tests/fakes/broken_upstream.py`).
"""

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.dispatcher import ProgressFnT
from mcp_types import CallToolResult, TextContent

from integrations.gateway.sse import Cursor
from tests.conftest import AGENT_TOKEN, Running
from tests.fakes.upstreams import polling_http_app, serve_http
from tests.integrations.test_upstream_failures import api, approve_when_pending, broken_http, outcome

pytestmark = pytest.mark.anyio

Start = Callable[..., AbstractAsyncContextManager[Running]]
ALLOW_ALL = {"version": "1", "default": "allow"}
GUARDED = {
    "version": "1",
    "default": "allow",
    "tools": {"poll": {"action": "require_approval", "approval": {"approvers": ["alice"], "timeout": "10m"}}},
}
AUTH = {"Authorization": f"Bearer {AGENT_TOKEN}"}


def text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def noted(messages: list[str | None]) -> ProgressFnT:
    """A progress callback that keeps each notification's message."""

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message)

    return on_progress


@asynccontextmanager
async def polling(signoff: Start, policy: dict[str, Any] = ALLOW_ALL, **kwargs: Any) -> AsyncIterator[Running]:
    async with serve_http(polling_http_app()) as upstream:
        server = {"name": "jobs", "url": f"{upstream}/mcp", "policy": policy}
        async with signoff([server], **kwargs) as running:
            yield running


@asynccontextmanager
async def client(running: Running, reconnects: list[str]) -> AsyncIterator[Client]:
    """A real MCP client through signoff that notes the Last-Event-ID of each reconnection of its own."""

    async def on_request(request: httpx2.Request) -> None:
        if "last-event-id" in request.headers:
            reconnects.append(request.headers["last-event-id"])

    hooks = {"request": [on_request]}
    async with httpx2.AsyncClient(headers=AUTH, timeout=30, event_hooks=hooks) as http:
        transport = streamable_http_client(running.mcp_url("jobs"), http_client=http)
        async with Client(transport, mode="legacy") as connected:
            yield connected


async def test_a_call_whose_upstream_ends_the_stream_mid_call_is_resumed_and_answered_on_one_stream(
    signoff: Start,
) -> None:
    progress: list[str | None] = []
    reconnects: list[str] = []
    with anyio.fail_after(10):
        async with polling(signoff) as running, client(running, reconnects) as agent:
            result = await agent.call_tool("poll", {"times": 3}, progress_callback=noted(progress))
            rows = await running.audit()

    assert not result.is_error, text(result)
    assert text(result) == "polled 3 times"
    assert progress == ["round 1 of 3", "round 2 of 3", "round 3 of 3"]  # each once: nothing lost, none twice
    assert reconnects == []  # signoff resumed upstream; the agent's stream never ended
    [row] = [r for r in rows if r.tool == "poll"]
    assert (row.kind, row.outcome) == ("allowed", "ok")


async def test_the_agent_reads_the_priming_event_and_the_response_on_the_post_stream(signoff: Start) -> None:
    with anyio.fail_after(10):
        async with polling(signoff) as running, httpx2.AsyncClient(headers=AUTH, timeout=10) as http:
            url = running.mcp_url("jobs")
            accept = {"accept": "application/json, text/event-stream", "mcp-protocol-version": "2025-11-25"}
            hello = {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "1"},
                },
            }
            opened = await http.post(url, json=hello, headers=accept)
            headers = {**accept, "mcp-session-id": opened.headers["mcp-session-id"]}
            await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
            call = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "poll", "arguments": {"times": 2}, "_meta": {"progressToken": 7}},
            }
            answered = await http.post(url, json=call, headers=headers)

    assert answered.headers["content-type"].startswith("text/event-stream")
    events = [event for event in answered.text.replace("\r\n", "\n").split("\n\n") if event.strip()]
    first = dict(line.split(": ", 1) for line in events[0].split("\n") if ": " in line)
    assert "id" in first and "retry" in first  # the upstream's priming event, as the agent would resume it
    messages = [json.loads(line[6:]) for event in events for line in event.split("\n") if line.startswith("data: {")]
    [response] = [m for m in messages if m.get("id") == 1]
    assert response["result"]["content"][0]["text"] == "polled 2 times"
    assert [m["params"]["message"] for m in messages if m.get("method") == "notifications/progress"] == [
        "round 1 of 2",
        "round 2 of 2",
    ]


@pytest.mark.parametrize("streamed", [True, False])  # held on an event stream with progress, or answered whole
async def test_an_approved_call_whose_upstream_polls_runs_once_and_is_recorded_executed(
    signoff: Start, streamed: bool
) -> None:
    progress: list[str | None] = []
    reconnects: list[str] = []
    results: list[CallToolResult] = []
    with anyio.fail_after(15):
        async with (
            polling(signoff, GUARDED, approvers=True, gateway={"approval_hold": "10s"}) as running,
            client(running, reconnects) as agent,
        ):
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    on_progress = noted(progress) if streamed else None
                    results.append(await agent.call_tool("poll", {"times": 2}, progress_callback=on_progress))

                tg.start_soon(call)
                approval_id = await approve_when_pending(running, "poll")
            while (detail := (await api(running, "GET", f"/api/approvals/{approval_id}")).json())[  # noqa: ASYNC110
                "status"
            ] == "executing":  # the outcome is written just after the answer; bounded by the fail_after
                await anyio.sleep(0.02)

    [result] = results
    assert not result.is_error, text(result)
    assert text(result) == "polled 2 times"
    assert [m for m in progress if m and m.startswith("round")] == (
        ["round 1 of 2", "round 2 of 2"] if streamed else []
    )
    assert reconnects == []
    assert (detail["status"], detail["outcome"]) == ("executed", "ok")


@pytest.mark.parametrize(
    ("behaviour", "why"),
    [
        ("sse_poll_refused", "resuming it with GET and Last-Event-ID answered HTTP 405"),
        ("sse_poll_empty", "resuming it brought no message within 1 s"),
    ],
)
async def test_an_upstream_that_primes_a_stream_and_never_resumes_it_ends_in_a_tool_error(
    signoff: Start, behaviour: str, why: str
) -> None:
    with anyio.fail_after(10):
        async with broken_http(signoff) as running, running.client("broken") as agent:
            failed = await agent.call_tool(behaviour, {})
            after = await agent.call_tool("echo", {})
            rows = await running.audit()

    assert failed.is_error and outcome(failed) == "upstream_failure"
    assert "upstream server 'broken' failed" in text(failed)
    assert why in text(failed)
    assert not after.is_error
    [row] = [r for r in rows if r.tool == behaviour]
    assert row.outcome == "upstream_failure" and why in row.detail


def test_the_cursor_keeps_the_last_event_id_a_header_can_carry_and_the_retry_asked_for() -> None:
    cursor = Cursor()
    cursor.note([b"id: 7", b"retry: 250", b"data: "])
    assert (cursor.last_id, cursor.retry_ms) == ("7", 250)
    cursor.note([b"id:8", b"retry: soon"])  # no space after the colon is fine; a retry that is not digits is ignored
    assert (cursor.last_id, cursor.retry_ms) == ("8", 250)
    cursor.note([b"id: a\0b"])  # an id holding NUL is ignored (the SSE rules)
    assert cursor.last_id == "8"
    cursor.note([b"id"])  # an empty id clears it: nothing to resume from
    assert cursor.last_id is None
    cursor.note(["id: caf\u00e9".encode()])  # no header could carry it back
    assert cursor.last_id is None
