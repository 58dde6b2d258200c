"""Strings no database can hold, sent by an agent: refused at the edge or stored as sent, and signoff keeps serving.

A raw client sends the JSON escapes "\\ud800" (a lone surrogate) and "\\u0000" (NUL) in tool names and arguments,
on SQLite and on PostgreSQL (which refuses NUL in text), on the allowed and the approval path. After each, a normal
call still works, /healthz says "ok", every row is in the audit log and its chain verifies.
"""

import json
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import httpx2
import pytest
from mcp_types import TextContent
from sqlmodel import Session

from approvals.audit import digest_arguments, verify_chain
from approvals.models import AuditEvent, AuditKind
from tests.conftest import AGENT_TOKEN, READER, Running
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http

pytestmark = pytest.mark.anyio

Start = Callable[..., AbstractAsyncContextManager[Running]]
HEADERS = {
    "Authorization": f"Bearer {AGENT_TOKEN}",
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
}
POLICY = {
    "version": "1",
    "default": "allow",
    "tools": {"delete_record": {"action": "require_approval", "approval": {"approvers": ["alice"], "timeout": "5m"}}},
}


def raw_call(name: str, arguments: str, request_id: int = 7) -> bytes:
    """A tools/call whose name and arguments are JSON text as written, escapes and all."""
    return (
        f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call",'
        f'"params":{{"name":"{name}","arguments":{arguments}}}}}'
    ).encode()


async def post(running: Running, body: bytes) -> httpx2.Response:
    """POST `body` in a session of its own, opened with the handshake as a client would (the upstream wants one)."""
    params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
    hello = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}
    async with httpx2.AsyncClient(timeout=10) as http:
        opened = await http.post(running.mcp_url("ev"), json=hello, headers=HEADERS)
        headers = {**HEADERS, "Mcp-Session-Id": opened.headers["mcp-session-id"], "Mcp-Protocol-Version": "2025-11-25"}
        ready = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        await http.post(running.mcp_url("ev"), json=ready, headers=headers)
        return await http.post(running.mcp_url("ev"), content=body, headers=headers)


def answer(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC message in a reply, whether it came as JSON or as the last event of a stream."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:] for line in response.text.splitlines() if line.startswith("data:") and line[5:].strip()]
        message: dict[str, Any] = json.loads(data[-1])
        return message
    return dict(response.json())


async def still_serving(running: Running) -> None:
    """A normal call answers, /healthz says ok, and the audit chain verifies."""
    async with running.client("ev") as client:
        result = await client.call_tool("echo", {"text": "still here"})
    assert [block.text for block in result.content if isinstance(block, TextContent)] == ["still here"]
    async with httpx2.AsyncClient(timeout=10) as http:
        health = (await http.get(f"{running.url}/healthz")).json()
    assert health["status"] == "ok", health
    rows = await running.audit()
    assert rows[-1].tool == "echo" and rows[-1].outcome == "ok"
    with Session(running.app.state.signoff.database) as session:
        assert verify_chain(session).ok


async def sent(
    signoff: Start, body: bytes, state: EverythingState | None = None, **config: Any
) -> tuple[httpx2.Response, list[AuditEvent]]:
    """Serve signoff (the POLICY, approvers configured) before the everything server, POST `body`, check that it
    is still serving, and return the answer and the audit log."""
    with anyio.fail_after(20):
        async with (
            serve_http(everything_http_app(state)) as upstream,
            signoff([{"name": "ev", "url": f"{upstream}/mcp", "policy": POLICY}], approvers=True, **config) as run,
        ):
            response = await post(run, body)
            await still_serving(run)
            return response, await run.audit()


@pytest.mark.parametrize(
    ("name", "says", "stored"),
    [
        ("\\ud800", "U+D800 (at 0)", "\\ud800"),
        ("kill\\u0000", "U+0000 (at 4)", "kill\\u0000"),
        ("bell\\u0007", "U+0007 (at 4)", "bell\x07"),
        ("x" * 300, "at most 256 characters, not 300", "x" * 255 + "…"),
        ("", "cannot be empty", ""),
    ],
    ids=["lone-surrogate", "nul", "control", "too-long", "empty"],
)
async def test_a_tool_name_no_server_could_have_is_refused_with_the_reason_and_audited(
    signoff: Start, shared_database: str, name: str, says: str, stored: str
) -> None:
    response, rows = await sent(signoff, raw_call(name, "{}"), database_url=shared_database)

    assert response.status_code == 200
    error = answer(response)["error"]
    assert error["code"] == -32602 and says in error["message"], error
    refused = [r for r in rows if r.outcome == "invalid"]
    assert len(refused) == 1 and refused[0].kind == AuditKind.DENIED and says in refused[0].detail
    assert refused[0].tool == stored  # what was sent, with what no database holds written as its escape


async def test_arguments_with_nul_and_lone_surrogates_run_and_are_audited_exactly_as_sent(
    signoff: Start, shared_database: str
) -> None:
    arguments = '{"text": "a\\u0000b\\ud800c"}'
    response, rows = await sent(signoff, raw_call("echo", arguments), database_url=shared_database)

    # The SDK's server refuses a lone surrogate itself (its parse error comes back as sent); signoff forwarded the
    # call as it came and recorded exactly what was asked.
    assert response.status_code < 500 and answer(response)["id"] in (7, None)
    row = next(r for r in rows if r.tool == "echo")
    assert json.loads(row.arguments or "") == json.loads(arguments)
    assert row.args_digest == digest_arguments(json.loads(arguments))


async def test_a_held_call_whose_arguments_hold_nul_and_lone_surrogates_is_pending_not_a_500(
    signoff: Start, shared_database: str
) -> None:
    arguments = '{"record_id": "r\\u0000\\udfff"}'
    state = EverythingState()
    body = raw_call("delete_record", arguments)
    response, rows = await sent(signoff, body, state, database_url=shared_database, gateway={"approval_hold": "0.2s"})

    result = answer(response)["result"]
    assert response.status_code == 200 and result["isError"] is True
    assert result["_meta"]["signoff/decision"]["status"] == "pending"
    requested = next(r for r in rows if r.kind == AuditKind.REQUESTED)
    assert json.loads(requested.arguments or "") == json.loads(arguments)
    assert state.deleted_records == []


@pytest.mark.parametrize("request_id", ["[1, 2]", '{"a": 1}', "true", "null", "1.5"])
async def test_a_cancellation_naming_no_possible_request_is_ignored(signoff: Start, request_id: str) -> None:
    body = f'{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{request_id}}}}}'.encode()
    response, _ = await sent(signoff, body)

    assert response.status_code == 202


async def test_approvers_read_a_held_call_with_a_lone_surrogate_as_its_escape_and_the_digest_stays_exact(
    signoff: Start,
) -> None:
    arguments = '{"record_id": "r\\ud816"}'
    with anyio.fail_after(20):
        async with (
            serve_http(everything_http_app()) as upstream,
            signoff(
                [{"name": "ev", "url": f"{upstream}/mcp", "policy": POLICY}],
                approvers=True,
                gateway={"approval_hold": "0.2s"},
            ) as run,
            httpx2.AsyncClient(base_url=run.url, headers=READER, timeout=10) as http,
        ):
            await post(run, raw_call("delete_record", arguments))
            listed = await http.get("/api/approvals", params={"status": "pending"})
            one = await http.get(f"/api/approvals/{listed.json()['approvals'][0]['id']}")

    assert listed.status_code == 200 and one.status_code == 200
    assert one.json()["arguments"] == {"record_id": "r\\ud816"}  # the escape, as text a person can read
    assert one.json()["args_digest"] == digest_arguments(json.loads(arguments))


async def test_a_lone_surrogate_bound_for_a_stdio_server_is_refused_at_once_not_left_to_time_out(
    signoff: Start,
) -> None:
    demo = {
        "name": "ev",
        "command": [sys.executable, "-m", "integrations.demo"],
        "policy": {"version": "1", "default": "allow"},
    }
    with anyio.fail_after(20):  # the upstream timeout is 60 s: a request the child drops would fail this
        async with signoff([demo], gateway={"upstream_timeout": "60s"}) as run:
            call = await post(run, raw_call("list_connections", '{"filter": "\\ud800"}'))
            notice = await post(
                run, b'{"jsonrpc":"2.0","method":"notifications/roots/list_changed","params":{"x":"\\udfff"}}'
            )
            async with run.client("ev") as client:
                listed = await client.call_tool("list_connections", {})

    error = answer(call)["error"]
    assert error["code"] == -32602 and "lone UTF-16 surrogate" in error["message"]
    assert notice.status_code == 400 and "lone UTF-16 surrogate" in notice.json()["error"]["message"]
    assert listed.is_error is False
