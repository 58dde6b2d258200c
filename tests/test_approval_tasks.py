"""MCP-native waiting over loopback: a 2026-07-28 client that declares the tasks extension gets a task handle for a call
that needs approval, polls it with `tasks/get` until a person decides, and reads the result of the one run (or the
refusal); `tasks/cancel` withdraws it; the task outlives a restart. Clients without the extension are held as before.
"""

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp_types.version import LATEST_MODERN_VERSION

from tests.conftest import AGENT_TOKEN, OTHER_TOKEN, Running
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http
from tests.test_approval_binding import status_of
from tests.test_approval_flow import GUARDED, api

pytestmark = pytest.mark.anyio

EXTENSION = "io.modelcontextprotocol/tasks"
ALICE = "alice-approver-token"


def envelope(tasks: bool) -> dict[str, Any]:
    extensions: dict[str, Any] = {EXTENSION: {}} if tasks else {}
    return {
        "io.modelcontextprotocol/protocolVersion": LATEST_MODERN_VERSION,
        "io.modelcontextprotocol/clientCapabilities": {"extensions": extensions},
        "io.modelcontextprotocol/clientInfo": {"name": "task-test", "version": "1"},
    }


async def rpc(
    running: Running, method: str, params: dict[str, Any], *, tasks: bool = True, token: str = AGENT_TOKEN
) -> tuple[int, dict[str, Any]]:
    """One 2026-07-28 request to /mcp/ev, framed as a Streamable HTTP client frames it; the status and the message."""
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": LATEST_MODERN_VERSION,
        "Mcp-Method": method,
    }
    name = params.get("name", params.get("taskId"))
    if name is not None:
        headers["Mcp-Name"] = name
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": envelope(tasks)}}
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(running.mcp_url("ev"), json=body, headers=headers)
    if response.headers["content-type"].startswith("text/event-stream"):
        data = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
        return response.status_code, json.loads(data[-1])
    return response.status_code, response.json()


async def task_get(running: Running, task_id: str, token: str = AGENT_TOKEN) -> dict[str, Any]:
    _status, message = await rpc(running, "tasks/get", {"taskId": task_id}, token=token)
    return message


@asynccontextmanager
async def upstream(state: EverythingState) -> AsyncIterator[str]:
    async with serve_http(everything_http_app(state)) as url:
        yield f"{url}/mcp"


@asynccontextmanager
async def serving(signoff: Any, url: str, policy: dict[str, Any] = GUARDED) -> AsyncIterator[Running]:
    servers = [{"name": "ev", "url": url, "policy": policy}]
    async with signoff(servers, approvers=True, gateway={"approval_hold": "20s", "policy_poll": "0.05s"}) as running:
        yield running


async def delete_as_task(running: Running) -> dict[str, Any]:
    status, message = await rpc(running, "tools/call", {"name": "delete_record", "arguments": {"record_id": "r-7"}})
    assert status == 200, message
    result: dict[str, Any] = message["result"]
    return result


async def test_a_task_is_working_until_approved_then_completes_with_the_result_of_one_run(signoff: Any) -> None:
    state = EverythingState()
    async with upstream(state) as url, serving(signoff, url) as running:
        with anyio.fail_after(20):  # a held call would wait 20 s: the task handle comes at once
            created = await delete_as_task(running)
        task_id = created["taskId"]
        working = await task_get(running, task_id)
        approved = await api(running, "POST", f"/api/approvals/{task_id}/approve", ALICE, reason="ok")
        done = await task_get(running, task_id)
        again = await task_get(running, task_id)
        rows = await running.audit()

    assert created["resultType"] == "task" and created["status"] == "working"
    assert f"/approvals/{task_id}" in created["statusMessage"] and created["ttlMs"] > 600_000
    assert created["pollIntervalMs"] > 0 and created["createdAt"] and created["lastUpdatedAt"]
    assert working["result"]["resultType"] == "complete" and working["result"]["status"] == "working"
    assert "waiting for approval" in working["result"]["statusMessage"]
    assert approved.status_code == 200
    assert done["result"]["status"] == "completed" and done["result"]["taskId"] == task_id
    assert "r-7" in json.dumps(done["result"]["result"]["content"]) and not done["result"]["result"].get("isError")
    assert again["result"]["result"] == done["result"]["result"]
    assert state.deleted_records == ["r-7"]  # ran once, for two polls
    kinds = [(r.kind, r.outcome) for r in rows if r.tool == "delete_record"]
    assert ("approval_required", "held") in kinds and ("executed", "ok") in kinds


async def test_a_rejected_task_completes_with_the_refusal_and_nothing_runs(signoff: Any) -> None:
    state = EverythingState()
    async with upstream(state) as url, serving(signoff, url) as running:
        task_id = (await delete_as_task(running))["taskId"]
        await api(running, "POST", f"/api/approvals/{task_id}/reject", ALICE, reason="not today")
        done = (await task_get(running, task_id))["result"]
        repeat = await delete_as_task(running)  # within the remember window: the same refusal, not a new question
        pending = (await api(running, "GET", "/api/approvals?status=pending")).json()["approvals"]

    assert done["status"] == "completed" and done["result"]["isError"] is True
    decision = done["result"]["_meta"]["signoff/decision"]
    assert decision["outcome"] == "rejected" and decision["comment"] == "not today"
    assert repeat["resultType"] == "task" and repeat["taskId"] == task_id and repeat["status"] == "completed"
    assert pending == [] and state.deleted_records == []


async def test_a_cancelled_task_withdraws_its_request_and_reads_cancelled(signoff: Any) -> None:
    state = EverythingState()
    async with upstream(state) as url, serving(signoff, url) as running:
        task_id = (await delete_as_task(running))["taskId"]
        status, ack = await rpc(running, "tasks/cancel", {"taskId": task_id})
        after = (await task_get(running, task_id))["result"]
        detail = (await api(running, "GET", f"/api/approvals/{task_id}")).json()
        late = await api(running, "POST", f"/api/approvals/{task_id}/approve", ALICE, reason="ok")

    assert status == 200 and ack["result"]["resultType"] == "complete"
    assert after["status"] == "cancelled" and "result" not in after
    assert detail["status"] == "cancelled" and late.status_code != 200
    assert state.deleted_records == []


async def test_another_agents_poll_of_a_task_gets_the_answer_an_unknown_task_gets(signoff: Any) -> None:
    state = EverythingState()
    async with upstream(state) as url, serving(signoff, url) as running:
        task_id = (await delete_as_task(running))["taskId"]
        await api(running, "POST", f"/api/approvals/{task_id}/approve", ALICE, reason="ok")
        theirs = await task_get(running, task_id, token=OTHER_TOKEN)
        unknown = await task_get(running, str(uuid.uuid4()), token=OTHER_TOKEN)
        _status, cancel = await rpc(running, "tasks/cancel", {"taskId": task_id}, token=OTHER_TOKEN)
        mine = (await task_get(running, task_id))["result"]

    assert "error" in theirs and theirs["error"]["code"] == unknown["error"]["code"]
    assert task_id not in json.dumps(theirs) and "error" in cancel
    assert mine["status"] == "completed" and state.deleted_records == ["r-7"]  # ran for its owner only


async def test_a_call_without_the_extension_is_held_and_answered_pending_as_before(signoff: Any) -> None:
    state = EverythingState()
    async with upstream(state) as url:
        servers = [{"name": "ev", "url": url, "policy": GUARDED}]
        async with signoff(servers, approvers=True, gateway={"approval_hold": "0.3s"}) as running:
            status, message = await rpc(
                running, "tools/call", {"name": "delete_record", "arguments": {"record_id": "r-7"}}, tasks=False
            )

    assert status == 200 and message["result"]["resultType"] == "complete" and "taskId" not in message["result"]
    assert message["result"]["_meta"]["signoff/decision"]["outcome"] == "approval_pending"


async def test_a_task_is_polled_to_completion_across_a_restart(signoff: Any) -> None:
    state = EverythingState()
    async with upstream(state) as url:
        async with serving(signoff, url) as first:
            task_id = (await delete_as_task(first))["taskId"]
        async with serving(signoff, url) as second:  # a new app on the same SQLite file
            working = (await task_get(second, task_id))["result"]
            await api(second, "POST", f"/api/approvals/{task_id}/approve", ALICE, reason="ok")
            done = (await task_get(second, task_id))["result"]

    assert working["status"] == "working"
    assert done["status"] == "completed" and "r-7" in json.dumps(done["result"])
    assert state.deleted_records == ["r-7"]


async def test_an_approved_task_the_reloaded_policy_denies_completes_refused_and_never_runs(
    signoff: Any, tmp_path: Path
) -> None:
    state = EverythingState()
    async with upstream(state) as url, serving(signoff, url) as running:
        task_id = (await delete_as_task(running))["taskId"]
        await api(running, "POST", f"/api/approvals/{task_id}/approve", ALICE, reason="ok")
        denying = {**GUARDED, "tools": {"delete_record": {"action": "deny", "reason": "frozen"}}}
        (tmp_path / "ev.json").write_text(json.dumps(denying))
        with anyio.fail_after(10):
            await status_of(running, task_id, "cancelled")  # the reload is in force (its re-check withdrew it)
        done = (await task_get(running, task_id))["result"]

    assert done["status"] == "completed" and done["result"]["isError"] is True
    assert done["result"]["_meta"]["signoff/decision"]["outcome"] == "policy_changed"
    assert state.deleted_records == []


async def test_server_discover_lists_the_tasks_extension(signoff: Any) -> None:
    async with upstream(EverythingState()) as url, serving(signoff, url) as running:
        status, message = await rpc(running, "server/discover", {})

    assert status == 200 and EXTENSION in message["result"]["capabilities"]["extensions"]


async def test_a_task_approved_with_edits_runs_the_edited_call_and_says_so(signoff: Any) -> None:
    state = EverythingState()
    editable = {
        "version": "1",
        "default": "allow",
        "tools": {
            "delete_record": {
                "action": "require_approval",
                "approval": {"approvers": ["group:dba"], "timeout": "10m", "allow_edits": True},
            }
        },
    }
    async with upstream(state) as url, serving(signoff, url, editable) as running:
        task_id = (await delete_as_task(running))["taskId"]
        approved = await api(
            running,
            "POST",
            f"/api/approvals/{task_id}/approve",
            ALICE,
            reason="the other one",
            arguments={"record_id": "r-8"},
        )
        done = (await task_get(running, task_id))["result"]

    assert approved.status_code == 200 and done["status"] == "completed"
    assert done["result"]["_meta"]["signoff/decision"]["outcome"] == "approved_with_edits"
    assert "arguments changed" in done["result"]["content"][0]["text"]
    assert state.deleted_records == ["r-8"]
