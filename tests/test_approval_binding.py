"""Approvals bound to the policy and to time, over loopback: a reload withdraws what the new policy no longer stands
behind, an approval nobody uses in time expires, and a client that gives up is not taken to have cancelled."""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import Running
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http
from tests.test_approval_flow import api, meta, text, wait_for_pending

pytestmark = pytest.mark.anyio

ALICE = "alice-approver-token"
BOB = "bob-approver-token"


def guarded(approvers: list[str], **approval: Any) -> dict[str, Any]:
    """A policy where delete_record needs one of `approvers`."""
    spec = {"approvers": approvers, "timeout": "10m", **approval}
    return {
        "version": "1",
        "default": "allow",
        "tools": {"delete_record": {"action": "require_approval", "reason": "Deletes a record", "approval": spec}},
    }


def write(path: Path, document: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")  # write then rename, as editors do
    temporary.write_text(json.dumps(document))
    temporary.replace(path)


@asynccontextmanager
async def serving(signoff: Any, state: EverythingState, document: dict[str, Any], hold: str) -> AsyncIterator[Running]:
    async with serve_http(everything_http_app(state)) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": document}]
        gateway = {"approval_hold": hold, "policy_poll": "0.05s"}
        async with signoff(servers, approvers=True, gateway=gateway) as running:
            yield running


async def status_of(running: Running, approval_id: str, wanted: str) -> dict[str, Any]:
    """The request once the API shows it `wanted` (bounded by the caller's fail_after)."""
    while True:
        detail: dict[str, Any] = (await api(running, "GET", f"/api/approvals/{approval_id}")).json()
        if detail["status"] == wanted:
            return detail
        await anyio.sleep(0.05)


async def test_an_approval_given_before_a_reload_that_names_other_approvers_never_runs_the_call(
    signoff: Any, tmp_path: Path, mode: str
) -> None:
    state = EverythingState()
    async with serving(signoff, state, guarded(["alice"]), hold="0.3s") as running:
        async with running.client("ev", mode=mode) as client:
            with anyio.fail_after(20):
                first = await client.call_tool("delete_record", {"record_id": "r-1"})
                approval_id = await wait_for_pending(running, "delete_record")
                approved = await api(running, "POST", f"/api/approvals/{approval_id}/approve", ALICE, reason="ok")
                write(tmp_path / "ev.json", guarded(["bob"]))  # v2: only bob may approve
                detail = await status_of(running, approval_id, "cancelled")
                repeat = await client.call_tool("delete_record", {"record_id": "r-1"})
        rows = await running.audit()

    assert meta(first)["outcome"] == "approval_pending" and approved.json()["status"] == "approved"
    assert detail["outcome"] == "policy_changed"
    assert detail["comment"].startswith("the policy changed: ") and "bob" in detail["comment"]
    assert repeat.is_error and meta(repeat)["outcome"] == "policy_changed"
    assert "withdrawn because the policy changed" in text(repeat) and "bob" in text(repeat)
    assert state.deleted_records == []  # alice's approval under v1 did not run it
    withdrawn = [r for r in rows if r.kind == "cancelled" and r.tool == "delete_record"]
    assert [(r.actor, r.outcome) for r in withdrawn] == [("signoff", "policy_changed")]
    assert "the policy changed: " in withdrawn[0].detail


async def test_a_held_call_is_woken_and_told_when_a_reload_denies_it(signoff: Any, tmp_path: Path, mode: str) -> None:
    state = EverythingState()
    denied = {"version": "1", "default": "allow", "tools": {"delete_record": {"action": "deny", "reason": "frozen"}}}
    async with serving(signoff, state, guarded(["alice"]), hold="20s") as running:
        async with running.client("ev", mode=mode) as client:
            results = []
            with anyio.fail_after(15):
                async with anyio.create_task_group() as tg:

                    async def call() -> None:
                        results.append(await client.call_tool("delete_record", {"record_id": "r-2"}))

                    tg.start_soon(call)
                    approval_id = await wait_for_pending(running, "delete_record")
                    write(tmp_path / "ev.json", denied)
            late = await api(running, "POST", f"/api/approvals/{approval_id}/approve", ALICE, reason="ok")
        detail = (await api(running, "GET", f"/api/approvals/{approval_id}")).json()

    assert meta(results[0])["outcome"] == "policy_changed"
    assert "denies this call" in text(results[0]) and "frozen" in text(results[0])
    assert detail["status"] == "cancelled" and "the policy changed: " in detail["comment"]
    assert late.status_code == 409  # nothing left to decide
    assert state.deleted_records == []


async def test_a_reload_that_keeps_the_rule_and_approvers_leaves_the_approval_standing(
    signoff: Any, tmp_path: Path
) -> None:
    state = EverythingState()
    async with serving(signoff, state, guarded(["alice"]), hold="0.3s") as running:
        async with running.client("ev") as client:
            with anyio.fail_after(20):
                await client.call_tool("delete_record", {"record_id": "r-3"})
                approval_id = await wait_for_pending(running, "delete_record")
                await api(running, "POST", f"/api/approvals/{approval_id}/approve", ALICE, reason="ok")
                edited = guarded(["alice"])
                edited["tools"]["add"] = {"action": "deny"}  # a new version that changes nothing for this call
                write(tmp_path / "ev.json", edited)
                while not any(r.kind == "policy_reloaded" for r in await running.audit()):  # noqa: ASYNC110
                    await anyio.sleep(0.05)  # a bounded poll of the audit log, under fail_after
                repeat = await client.call_tool("delete_record", {"record_id": "r-3"})

    assert not repeat.is_error and state.deleted_records == ["r-3"]


async def test_an_approval_nobody_uses_within_use_within_expires_audited_and_the_repeat_is_told(
    signoff: Any, mode: str
) -> None:
    state = EverythingState()
    async with serving(signoff, state, guarded(["alice"], use_within="1s"), hold="0.3s") as running:
        async with running.client("ev", mode=mode) as client:
            with anyio.fail_after(20):
                await client.call_tool("delete_record", {"record_id": "r-4"})
                approval_id = await wait_for_pending(running, "delete_record")
                approved = (await api(running, "POST", f"/api/approvals/{approval_id}/approve", ALICE)).json()
                detail = await status_of(running, approval_id, "expired")  # by the expiry job, nobody calling
                repeat = await client.call_tool("delete_record", {"record_id": "r-4"})
        rows = await running.audit()

    assert approved["status"] == "approved" and approved["use_by"] is not None
    assert detail["outcome"] == "approval_unused"
    assert repeat.is_error and meta(repeat)["outcome"] == "approval_unused"
    assert "alice approved this call" in text(repeat) and "no call used the approval" in text(repeat)
    assert state.deleted_records == []
    expired = [r for r in rows if r.kind == "expired" and r.tool == "delete_record"]
    assert [(r.actor, r.outcome) for r in expired] == [("signoff", "approval_unused")]


async def test_an_approval_used_in_time_runs_the_call(signoff: Any) -> None:
    state = EverythingState()
    async with serving(signoff, state, guarded(["alice"], use_within="30s"), hold="0.3s") as running:
        async with running.client("ev") as client:
            with anyio.fail_after(20):
                await client.call_tool("delete_record", {"record_id": "r-5"})
                approval_id = await wait_for_pending(running, "delete_record")
                await api(running, "POST", f"/api/approvals/{approval_id}/approve", ALICE)
                repeat = await client.call_tool("delete_record", {"record_id": "r-5"})

    assert not repeat.is_error and state.deleted_records == ["r-5"]


async def test_a_client_that_times_out_and_calls_again_is_not_told_cancelled_and_its_approval_runs_once(
    signoff: Any, mode: str
) -> None:
    state = EverythingState()
    async with serving(signoff, state, guarded(["alice"]), hold="20s") as running:
        async with running.client("ev", mode=mode) as client:
            with anyio.fail_after(20):
                with pytest.raises(Exception, match=r"(?i)time"):
                    await client.call_tool("delete_record", {"record_id": "r-6"}, read_timeout_seconds=0.5)
                results = []
                async with anyio.create_task_group() as tg:

                    async def again() -> None:
                        results.append(await client.call_tool("delete_record", {"record_id": "r-6"}))

                    tg.start_soon(again)
                    # An approver approves what the list shows; the courtesy cancellation may withdraw the first
                    # request in between (409), and then the repeat's own request is the one to approve.
                    while True:
                        approval_id = await wait_for_pending(running, "delete_record")
                        approve = f"/api/approvals/{approval_id}/approve"
                        if (await api(running, "POST", approve, ALICE, reason="ok")).status_code == 200:
                            break
        listing = (await api(running, "GET", "/api/approvals?tool=delete_record")).json()["approvals"]

    assert not results[0].is_error  # held again, then run: not "cancelled"
    assert state.deleted_records == ["r-6"]
    statuses = sorted(a["status"] for a in listing)
    if mode == "auto":  # 2026-07-28: the client closes its stream, which withdraws nothing: the repeat joined
        assert statuses == ["executed"]
    else:  # the handshake revisions: the SDK's courtesy cancellation withdrew it, or reached it once joined
        assert statuses in (["cancelled", "executed"], ["executed"])
