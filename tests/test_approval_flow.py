"""End to end: a real MCP client through a real signoff to a real upstream, with people deciding."""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import anyio
import httpx2
import pytest
from mcp_types import SERVER_INFO_META_KEY, CallToolResult, TextContent

from integrations.cli import main
from tests.conftest import READER, Running
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http
from tests.fakes.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.anyio

GUARDED = {
    "version": "1",
    "default": "allow",
    "tools": {
        "delete_record": {
            "action": "require_approval",
            "reason": "Deletes a customer record",
            "approval": {"approvers": ["group:dba", "carol"], "timeout": "10m"},
        },
        "drop_table": {
            "action": "require_approval",
            "reason": "Drops a table",
            "approval": {"approvers": ["alice", "bob"], "quorum": 2, "timeout": "10m"},
        },
        "counter": {"action": "require_approval", "approval": {"approvers": ["alpha"], "timeout": "10m"}},
        "echo": {
            "approve_if": [{"arg": "text", "op": "contains", "value": "prod"}],
            "approval": {"approvers": ["alice"], "timeout": "1s"},
        },
    },
}


def text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def meta(result: CallToolResult) -> dict[str, Any]:
    decision: dict[str, Any] = (result.meta or {}).get("signoff/decision", {})
    return decision


@asynccontextmanager
async def guarded(signoff: Any, state: EverythingState, hold: str = "20s") -> AsyncIterator[Running]:
    async with serve_http(everything_http_app(state)) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": GUARDED}]
        async with signoff(servers, approvers=True, gateway={"approval_hold": hold}) as running:
            yield running


async def api(running: Running, method: str, path: str, token: str | None = None, **body: Any) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else (READER if method == "GET" else {})
    async with httpx2.AsyncClient(base_url=running.url, timeout=10) as http:
        return await http.request(method, path, headers=headers, json=body if method == "POST" else None)


async def wait_for_pending(running: Running, tool: str) -> str:
    """The id of the pending request for `tool`, as an approver would find it in the list."""
    while True:  # bounded by the caller's fail_after
        listing = (await api(running, "GET", f"/api/approvals?status=pending&tool={tool}")).json()["approvals"]
        if listing:
            return str(listing[0]["id"])
        await anyio.sleep(0.02)


async def test_approved_call_runs_once_and_the_held_client_gets_the_upstream_result(signoff: Any, mode: str) -> None:
    state = EverythingState()
    async with guarded(signoff, state) as running, running.client("ev", mode=mode) as client:
        results: list[CallToolResult] = []
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    results.append(await client.call_tool("delete_record", {"record_id": "r-17"}))

                tg.start_soon(call)
                approval_id = await wait_for_pending(running, "delete_record")
                assert state.deleted_records == []  # held: nothing ran yet
                response = await api(
                    running, "POST", f"/api/approvals/{approval_id}/approve", "alice-approver-token", reason="ticket 42"
                )
        detail = (await api(running, "GET", f"/api/approvals/{approval_id}")).json()
        rows = await running.audit()

    assert response.status_code == 200 and response.json()["status"] == "approved"
    assert not results[0].is_error
    assert state.deleted_records == ["r-17"]
    assert detail["status"] == "executed" and detail["outcome"] == "ok"
    assert detail["decisions"][0]["approver"] == "alice" and detail["decisions"][0]["comment"] == "ticket 42"
    kinds = [r.kind for r in rows if r.tool == "delete_record"]
    # the gateway's own decision row is written off the hot path, so only the lifecycle's order is fixed
    assert [k for k in kinds if k != "approval_required"] == ["requested", "approved", "executed"]
    assert kinds.count("approval_required") == 1
    approved = next(r for r in rows if r.kind == "approved")
    assert (approved.actor, approved.channel) == ("alice", "api")


async def test_rejection_from_the_cli_names_who_and_why_and_nothing_runs(signoff: Any, mode: str) -> None:
    state = EverythingState()
    async with guarded(signoff, state) as running, running.client("ev", mode=mode) as client:
        results: list[CallToolResult] = []
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    results.append(await client.call_tool("delete_record", {"record_id": "r-9"}))

                tg.start_soon(call)
                approval_id = await wait_for_pending(running, "delete_record")
                argv = [
                    "reject",
                    approval_id,
                    "--reason",
                    "wrong customer",
                    "--url",
                    running.url,
                    "--token",
                    "bob-approver-token",
                ]
                code = await anyio.to_thread.run_sync(main, argv)
            repeat = await client.call_tool("delete_record", {"record_id": "r-9"})

    assert code == 0
    assert results[0].is_error
    assert "bob rejected this call" in text(results[0]) and "wrong customer" in text(results[0])
    assert meta(results[0])["outcome"] == "rejected" and meta(results[0])["rejected_by"] == "bob"
    assert meta(repeat)["outcome"] == "rejected"  # a repeat is told the same, and nothing runs
    assert state.deleted_records == []


async def test_nobody_deciding_in_time_expires_the_request_and_fails_closed(signoff: Any, mode: str) -> None:
    state = EverythingState()
    async with guarded(signoff, state) as running, running.client("ev", mode=mode) as client:
        with anyio.fail_after(20):
            harmless = await client.call_tool("echo", {"text": "hello"})
            risky = await client.call_tool("echo", {"text": "restart prod"})
        rows = await running.audit()

    assert text(harmless) == "hello"  # approve_if did not hold: the call went straight through
    assert risky.is_error and meta(risky)["outcome"] == "expired"
    assert "nobody approved this call" in text(risky)
    expired = [r for r in rows if r.kind == "expired"]
    assert len(expired) == 1 and expired[0].actor == "signoff"


async def test_a_call_held_past_approval_hold_answers_pending_and_its_repeat_collects_the_outcome(
    signoff: Any, mode: str
) -> None:
    state = EverythingState()
    async with guarded(signoff, state, hold="0.3s") as running, running.client("ev", mode=mode) as client:
        with anyio.fail_after(20):
            first = await client.call_tool("delete_record", {"record_id": "r-1"})
            joined = await client.call_tool("delete_record", {"record_id": "r-1"})
            approval_id = meta(first)["approval_id"]
            await api(running, "POST", f"/api/approvals/{approval_id}/approve", "carol-approver-token")
            collected = await client.call_tool("delete_record", {"record_id": "r-1"})
            again = await client.call_tool("delete_record", {"record_id": "r-1"})
            other = await client.call_tool("delete_record", {"record_id": "r-2"})
        pending = (await api(running, "GET", "/api/approvals?status=pending")).json()["approvals"]

    assert meta(first)["outcome"] == "approval_pending"
    if mode == "auto":  # a 2026-07-28 result names the server that made it: signoff, not the upstream
        assert (first.meta or {})[SERVER_INFO_META_KEY] == {"name": "signoff", "version": "0.1.0"}
    assert f"/approvals/{approval_id}" in text(first)  # a link an approver can open
    assert "Call again with the same arguments" in text(first)
    assert meta(joined)["approval_id"] == approval_id  # one request, not two
    assert not collected.is_error and state.deleted_records == ["r-1"]
    # approvals are single-use and bound to the exact arguments
    assert meta(again)["outcome"] == "approval_pending" and meta(again)["approval_id"] != approval_id
    assert meta(other)["outcome"] == "approval_pending"
    assert state.deleted_records == ["r-1"]
    assert {p["arguments"]["record_id"] for p in pending} == {"r-1", "r-2"}


async def test_a_repeat_of_a_call_that_already_ran_is_asked_anew_and_told_it_ran_naming_the_approval(
    signoff: Any,
) -> None:
    # An agent whose answer was lost (signoff killed after the outcome was committed, a client that gave up) repeats
    # the call: "Nothing has run" would be false, and a second approval would run it twice without anyone knowing.
    state = EverythingState()
    async with guarded(signoff, state, hold="0.3s") as running, running.client("ev") as client:
        with anyio.fail_after(20):
            first = await client.call_tool("delete_record", {"record_id": "r-1"})
            approval_id = meta(first)["approval_id"]
            await api(running, "POST", f"/api/approvals/{approval_id}/approve", "carol-approver-token")
            ran = await client.call_tool("delete_record", {"record_id": "r-1"})
            repeat = await client.call_tool("delete_record", {"record_id": "r-1"})
            joined = await client.call_tool("delete_record", {"record_id": "r-1"})
            other = await client.call_tool("delete_record", {"record_id": "r-2"})
        executed = (await api(running, "GET", f"/api/approvals/{approval_id}")).json()

    assert not ran.is_error and state.deleted_records == ["r-1"]
    assert meta(repeat)["outcome"] == "approval_pending" and meta(repeat)["approval_id"] != approval_id
    assert meta(repeat)["ran_before"] == {
        "approval_id": approval_id,
        "status": "executed",
        "outcome": "ok",
        "finished_at": executed["finished_at"],
    }
    assert f"this exact call already ran at {executed['finished_at']} (approval {approval_id}" in text(repeat)
    assert "Nothing has run." not in text(repeat) and "approving it would run it again" in text(repeat)
    assert meta(joined)["approval_id"] == meta(repeat)["approval_id"] and "already ran" in text(joined)
    assert "ran_before" not in meta(other) and "Nothing has run." in text(other)
    assert state.deleted_records == ["r-1"]


async def test_fifty_concurrent_decisions_give_one_outcome_and_at_most_one_execution(signoff: Any) -> None:
    state = EverythingState()
    async with guarded(signoff, state, hold="0.2s") as running, running.client("ev") as client:
        with anyio.fail_after(30):
            first = await client.call_tool("delete_record", {"record_id": "r-50"})
            approval_id = meta(first)["approval_id"]
            statuses: list[int] = []
            voters = ["alice", "bob", "carol"]
            async with httpx2.AsyncClient(base_url=running.url, timeout=20) as http:

                async def decide(i: int) -> None:
                    verdict = "approve" if i % 2 else "reject"
                    headers = {"Authorization": f"Bearer {voters[i % 3]}-approver-token"}
                    path = f"/api/approvals/{approval_id}/{verdict}"
                    response = await http.post(path, json={"reason": f"vote {i}"}, headers=headers)
                    statuses.append(response.status_code)

                async with anyio.create_task_group() as tg:
                    for i in range(50):
                        tg.start_soon(decide, i)

            async def repeat() -> None:
                await client.call_tool("delete_record", {"record_id": "r-50"})

            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(repeat)
        detail = (await api(running, "GET", f"/api/approvals/{approval_id}")).json()
        rows = await running.audit()

    settled = [r.kind for r in rows if r.kind in ("approved", "rejected")]
    assert len(settled) == 1
    assert statuses.count(200) >= 1 and set(statuses) <= {200, 409}
    if settled == ["approved"]:
        assert state.deleted_records == ["r-50"] and detail["status"] == "executed"
    else:
        assert state.deleted_records == [] and detail["status"] == "rejected"
    assert len([r for r in rows if r.kind == "executed"]) == len(state.deleted_records)


async def test_approver_rules_unknown_not_named_self_approval_and_quorum(signoff: Any) -> None:
    state = EverythingState()
    async with guarded(signoff, state, hold="0.2s") as running, running.client("ev") as client:
        with anyio.fail_after(20):
            drop = meta(await client.call_tool("drop_table", {"name": "users"}))["approval_id"]
            count = meta(await client.call_tool("counter", {}))["approval_id"]
            unknown = await api(running, "POST", f"/api/approvals/{drop}/approve", "not-a-token")
            not_named = await api(running, "POST", f"/api/approvals/{drop}/approve", "carol-approver-token")
            self_approval = await api(running, "POST", f"/api/approvals/{count}/approve", "alpha-approver-token")
            first = await api(running, "POST", f"/api/approvals/{drop}/approve", "alice-approver-token")
            twice = await api(running, "POST", f"/api/approvals/{drop}/approve", "alice-approver-token")
            second = await api(running, "POST", f"/api/approvals/{drop}/approve", "bob-approver-token")
            late = await api(
                running, "POST", f"/api/approvals/{drop}/reject", "alice-approver-token", reason="changed my mind"
            )
            no_reason = await api(running, "POST", f"/api/approvals/{count}/reject", "alpha-approver-token")
            dropped = await client.call_tool("drop_table", {"name": "users"})
        rows = await running.audit()

    assert unknown.status_code == 401
    assert not_named.status_code == 403 and "names alice, bob" in not_named.json()["error"]
    assert self_approval.status_code == 403 and "can never approve it" in self_approval.json()["error"]
    assert first.status_code == 200 and first.json()["status"] == "pending" and first.json()["approvals"] == 1
    assert twice.json()["approvals"] == 1  # one person counts once towards a quorum
    assert second.json()["status"] == "approved" and second.json()["approvals"] == 2
    assert late.status_code == 409
    assert no_reason.status_code == 400
    assert not dropped.is_error and state.dropped_tables == ["users"]
    refused = [(r.actor, r.detail.split(": ", 1)[1]) for r in rows if r.kind == "decision_refused"]
    assert ("carol", 'the rule tools["drop_table"] names alice, bob as approvers') in refused
    assert ("alpha", "the agent identity that made a call can never approve it") in refused
    assert ("alice", "the request is already executing") in refused or (
        "alice",
        "the request is already approved",
    ) in refused
    assert [r.detail.split(": ", 1)[1] for r in rows if r.kind == "voted"] == ["1 of 2 approvals"]


async def test_mcp_cancellation_withdraws_the_held_request(signoff: Any) -> None:
    state = EverythingState()
    async with guarded(signoff, state) as running:
        with anyio.fail_after(20):
            async with httpx2.AsyncClient(base_url=running.url, timeout=20) as http:
                headers = {
                    "Authorization": "Bearer agent-token-alpha",
                    "Accept": "application/json, text/event-stream",
                    "MCP-Protocol-Version": "2025-11-25",
                }
                init = {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"},
                }
                opened = await http.post(
                    "/mcp/ev", headers=headers, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init}
                )
                headers["Mcp-Session-Id"] = opened.headers["mcp-session-id"]
                call = {
                    "jsonrpc": "2.0",
                    "id": 7,
                    "method": "tools/call",
                    "params": {"name": "delete_record", "arguments": {"record_id": "r-3"}},
                }
                answers: list[httpx2.Response] = []
                async with anyio.create_task_group() as tg:

                    async def held() -> None:
                        answers.append(await http.post("/mcp/ev", headers=headers, json=call))

                    tg.start_soon(held)
                    approval_id = await wait_for_pending(running, "delete_record")
                    cancel = {
                        "jsonrpc": "2.0",
                        "method": "notifications/cancelled",
                        "params": {"requestId": 7, "reason": "user hit stop"},
                    }
                    await http.post("/mcp/ev", headers=headers, json=cancel)
        detail = (await api(running, "GET", f"/api/approvals/{approval_id}")).json()

    assert detail["status"] == "cancelled"
    assert json.loads(answers[0].text)["result"]["_meta"]["signoff/decision"]["outcome"] == "cancelled"
    assert state.deleted_records == []


async def test_webhooks_announce_the_request_and_its_outcome_signed_and_retried(signoff: Any) -> None:
    state = EverythingState()
    receiver = WebhookReceiver(secret="hook-secret-1", fail_first=1, fail_status=503, retry_after="0")
    async with serve_http(receiver.app) as hooks, serve_http(everything_http_app(state)) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": GUARDED}]
        extra = f'\n[[webhooks]]\nurl = "{hooks}/hook"\nsecret = "hook-secret-1"\n'
        async with signoff(servers, approvers=True, gateway={"approval_hold": "0.2s"}, extra=extra) as running:
            async with running.client("ev") as client:
                await client.list_tools()
                with anyio.fail_after(30):
                    first = await client.call_tool("delete_record", {"record_id": "r-8"})
                    approval_id = meta(first)["approval_id"]
                    await receiver.wait_for(1)
                    await api(
                        running, "POST", f"/api/approvals/{approval_id}/approve", "alice-approver-token", reason="ok"
                    )
                    await client.call_tool("delete_record", {"record_id": "r-8"})
                    deliveries = await receiver.wait_for(3)

    events = [d.json()["event"] for d in deliveries]
    assert events == ["approval.requested", "approval.approved", "approval.executed"]
    assert all(d.signature_valid for d in deliveries)
    assert deliveries[0].json()["request"]["id"] == approval_id
    assert deliveries[0].json()["request"]["arguments"] == {"record_id": "r-8"}
    assert deliveries[1].json()["request"]["responded_by"] == "alice"
    assert deliveries[0].json()["summary"] == deliveries[0].json()["request"]["summary"] == "record_id=r-8"
    assert deliveries[0].json()["request"]["tool_description"] == "Delete one record."
    # Held for 0.2 s only: the agent was told "pending" before alice approved, and the approval says so.
    assert deliveries[1].json()["request"]["agent_waiting"] is False
    assert len(receiver.requests) == 4  # the first attempt got a 503 and was retried


async def test_a_held_call_sends_progress_while_it_waits_and_then_the_result(signoff: Any, mode: str) -> None:
    state = EverythingState()
    messages: list[str | None] = []
    got_progress = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message)
        got_progress.set()

    async with guarded(signoff, state, hold="5s") as running, running.client("ev", mode=mode) as client:
        results: list[CallToolResult] = []
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    arguments = {"record_id": "r-5"}
                    results.append(await client.call_tool("delete_record", arguments, progress_callback=on_progress))

                tg.start_soon(call)
                await got_progress.wait()
                approval_id = await wait_for_pending(running, "delete_record")
                await api(running, "POST", f"/api/approvals/{approval_id}/approve", "bob-approver-token")

    assert messages and f"waiting for approval {approval_id}" in (messages[0] or "")
    assert not results[0].is_error and state.deleted_records == ["r-5"]


async def test_a_held_call_with_progress_that_nobody_decides_answers_pending_after_its_progress(
    signoff: Any, mode: str
) -> None:
    state = EverythingState()
    values: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        values.append(progress)

    async with guarded(signoff, state, hold="1.6s") as running, running.client("ev", mode=mode) as client:
        with anyio.fail_after(20):
            held = await client.call_tool("delete_record", {"record_id": "r-6"}, progress_callback=on_progress)
            approval_id = meta(held)["approval_id"]
            await api(running, "POST", f"/api/approvals/{approval_id}/approve", "bob-approver-token")
            collected = await client.call_tool("delete_record", {"record_id": "r-6"}, progress_callback=on_progress)

    assert len(values) >= 2 and values == sorted(values)  # one every 0.5 s while it waited
    assert meta(held)["outcome"] == "approval_pending" and "Call again with the same arguments" in text(held)
    assert not collected.is_error and state.deleted_records == ["r-6"]


async def test_reading_approvals_and_the_audit_log_needs_an_approver_token(signoff: Any) -> None:
    async with guarded(signoff, EverythingState()) as running:
        async with httpx2.AsyncClient(base_url=running.url, timeout=10) as http:
            with anyio.fail_after(10):
                anonymous = [
                    (await http.get(path)).status_code for path in ("/api/approvals", "/api/audit", "/api/grants")
                ]
                agent = await http.get("/api/audit", headers={"Authorization": "Bearer agent-token-alpha"})
                approver = await http.get("/api/audit", headers=READER)

    assert anonymous == [401, 401, 401]
    assert agent.status_code == 401  # an agent's token is not an approver's
    assert approver.status_code == 200 and approver.json()["events"][0]["kind"] == "policy_loaded"


async def test_a_decision_taken_on_another_replica_wakes_the_call_held_here(signoff: Any) -> None:
    state = EverythingState()
    async with serve_http(everything_http_app(state)) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": GUARDED}]
        # Two replicas on one database: the call waits on `here`, the approver clicks on `there`.
        async with (
            signoff(servers, approvers=True, gateway={"approval_hold": "20s"}) as here,
            signoff(servers, approvers=True, gateway={"approval_hold": "20s"}) as there,
            here.client("ev") as client,
        ):
            results: list[CallToolResult] = []
            with anyio.fail_after(15):
                async with anyio.create_task_group() as tg:

                    async def call() -> None:
                        results.append(await client.call_tool("delete_record", {"record_id": "r-9"}))

                    tg.start_soon(call)
                    approval_id = await wait_for_pending(there, "delete_record")
                    decided = await api(there, "POST", f"/api/approvals/{approval_id}/approve", "carol-approver-token")
                    clicked = anyio.current_time()
            answered = anyio.current_time()
            detail = (await api(there, "GET", f"/api/approvals/{approval_id}")).json()

    assert decided.status_code == 200
    assert not results[0].is_error and state.deleted_records == ["r-9"]
    assert answered - clicked < 5  # the poll of new decisions (every 2 s), not the 20 s hold, ended the wait
    assert detail["status"] == "executed"


async def test_requests_nobody_waits_on_any_more_expire_at_their_own_deadlines(signoff: Any) -> None:
    state = EverythingState()
    async with guarded(signoff, state, hold="0.1s") as running, running.client("ev") as client:
        with anyio.fail_after(20):
            first = await client.call_tool("echo", {"text": "prod one"})
            await anyio.sleep(0.6)
            second = await client.call_tool("echo", {"text": "prod two"})
            await anyio.sleep(2.5)  # both 1 s deadlines have passed; the periodic sweep runs only every 30 s
            views = [
                (await api(running, "GET", f"/api/approvals/{meta(r)['approval_id']}")).json() for r in (first, second)
            ]

    assert [meta(r)["outcome"] for r in (first, second)] == ["approval_pending", "approval_pending"]
    assert [v["status"] for v in views] == ["expired", "expired"]
    for view in views:  # each at its own deadline: the one expiry job moved on to the next deadline
        late = datetime.fromisoformat(view["finished_at"]) - datetime.fromisoformat(view["deadline"])
        assert timedelta(0) <= late < timedelta(seconds=1)


async def test_a_decision_body_with_a_key_it_does_not_take_is_refused_and_decides_nothing(signoff: Any) -> None:
    state = EverythingState()
    async with guarded(signoff, state, hold="0.1s") as running, running.client("ev") as client:
        with anyio.fail_after(20):
            held = await client.call_tool("delete_record", {"record_id": "r-5"})
            approval_id = meta(held)["approval_id"]
            edited = await api(
                running,
                "POST",
                f"/api/approvals/{approval_id}/approve",
                "alice-approver-token",
                arguments={"record_id": "r-6"},
            )
            misspelt = await api(
                running, "POST", f"/api/approvals/{approval_id}/reject", "alice-approver-token", reasn="typo"
            )
            detail = (await api(running, "GET", f"/api/approvals/{approval_id}")).json()

    # "arguments" is a key an approval takes, but this rule does not allow edits: refused, and said so.
    assert edited.status_code == 422
    assert edited.json()["error"] == (
        'The edited call was refused: the rule tools["delete_record"] does not allow edits (it would need '
        '"approval": {"allow_edits": true}); approve or reject the call as it is; nothing was decided'
    )
    assert misspelt.status_code == 422 and 'unknown key(s) "reasn"' in misspelt.json()["error"]
    assert detail["status"] == "pending" and detail["decisions"] == []
    assert state.deleted_records == []
