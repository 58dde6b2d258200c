"""Approve with edits through the API: the edited call is checked again, runs once, and everyone can tell."""

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp_types import CallToolResult

from integrations.cli import main
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http
from tests.test_approval_flow import api, meta, text, wait_for_pending

pytestmark = pytest.mark.anyio

EDITABLE = {
    "version": "1",
    "default": "allow",
    "tools": {
        "delete_record": {
            "action": "require_approval",
            "reason": "Deletes a customer record",
            "approval": {"approvers": ["group:dba"], "timeout": "10m", "allow_edits": True},
            "deny_if": [{"arg": "record_id", "op": "starts_with", "value": "sys-"}],
        },
        "drop_table": {"action": "require_approval", "approval": {"approvers": ["alice"], "allow_edits": True}},
        "add": {
            "action": "require_approval",
            "approval": {"approvers": ["alice"], "allow_edits": True},
            "redact": ["a"],
        },
    },
}


async def approve(running: Any, approval_id: str, who: str = "alice", **body: Any) -> Any:
    return await api(running, "POST", f"/api/approvals/{approval_id}/approve", f"{who}-approver-token", **body)


def editable(signoff: Any, state: EverythingState, hold: str = "20s") -> Any:
    class Both:
        async def __aenter__(self) -> Any:
            self.upstream = serve_http(everything_http_app(state))
            url = await self.upstream.__aenter__()
            servers = [{"name": "ev", "url": f"{url}/mcp", "policy": EDITABLE}]
            self.running = signoff(servers, approvers=True, gateway={"approval_hold": hold})
            return await self.running.__aenter__()

        async def __aexit__(self, *exc: Any) -> None:
            await self.running.__aexit__(*exc)
            await self.upstream.__aexit__(*exc)

    return Both()


async def test_an_edited_approval_runs_the_edited_call_once_and_the_agent_is_told_who_changed_what(
    signoff: Any, mode: str
) -> None:
    state = EverythingState()
    async with editable(signoff, state) as running, running.client("ev", mode=mode) as client:
        results: list[CallToolResult] = []
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    results.append(await client.call_tool("delete_record", {"record_id": "r-1"}))

                tg.start_soon(call)
                approval_id = await wait_for_pending(running, "delete_record")
                response = await approve(running, approval_id, reason="wrong id", arguments={"record_id": "r-2"})
            detail = (await api(running, "GET", f"/api/approvals/{approval_id}")).json()
        rows = await running.audit()

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "approved"
    assert response.json()["edited_arguments"] == {"record_id": "r-2"}
    assert state.deleted_records == ["r-2"]  # the edited call ran, once; the original never did
    [result] = results
    assert not result.is_error
    assert text(result).splitlines()[0] == 'signoff: approved by alice with arguments changed: record_id "r-1" -> "r-2"'
    assert "deleted record r-2" in text(result)
    decision = meta(result)
    assert decision["outcome"] == "approved_with_edits" and decision["approved_by"] == "alice"
    assert decision["arguments"] == {"record_id": "r-2"}
    assert decision["changes"] == {"changed": {"record_id": {"from": "r-1", "to": "r-2"}}}
    assert detail["status"] == "executed" and detail["arguments"] == {"record_id": "r-1"}
    approved = next(r for r in rows if r.kind == "approved")
    assert approved.args_digest == decision["original_digest"]
    assert f"arguments edited from {decision['original_digest']} to {decision['edited_digest']}" in approved.detail
    assert '"changed":{"record_id":{"from":"r-1","to":"r-2"}}' in approved.detail
    assert approved.arguments == '{"record_id":"r-2"}'


async def test_a_repeat_of_the_original_call_collects_the_edited_approval_and_runs_the_edit(signoff: Any) -> None:
    state = EverythingState()
    async with editable(signoff, state, hold="0.1s") as running, running.client("ev") as client:
        with anyio.fail_after(20):
            held = await client.call_tool("delete_record", {"record_id": "r-1"})
            approval_id = meta(held)["approval_id"]
            response = await approve(running, approval_id, arguments={"record_id": "r-3"})
            repeat = await client.call_tool("delete_record", {"record_id": "r-1"})

    assert response.status_code == 200, response.text
    assert state.deleted_records == ["r-3"]
    assert 'record_id "r-1" -> "r-3"' in text(repeat) and meta(repeat)["arguments"] == {"record_id": "r-3"}


async def test_a_redacted_value_sent_back_as_redacted_keeps_its_original_and_stays_hidden(signoff: Any) -> None:
    state = EverythingState()
    async with editable(signoff, state, hold="0.1s") as running, running.client("ev") as client:
        with anyio.fail_after(20):
            held = await client.call_tool("add", {"a": 2, "b": 3})
            approval_id = meta(held)["approval_id"]
            shown = (await api(running, "GET", f"/api/approvals/{approval_id}")).json()
            response = await approve(running, approval_id, arguments={**shown["arguments"], "b": 40})
            repeat = await client.call_tool("add", {"a": 2, "b": 3})
        rows = await running.audit()

    assert shown["arguments"] == {"a": "[redacted]", "b": 3}
    assert response.status_code == 200, response.text
    assert response.json()["edited_arguments"] == {"a": "[redacted]", "b": 40}
    assert "42" in text(repeat)  # 2 + 40: the hidden value was kept, not replaced by the text "[redacted]"
    assert text(repeat).splitlines()[0] == "signoff: approved by alice with arguments changed: b 3 -> 40"
    assert meta(repeat)["arguments"] == {"a": "[redacted]", "b": 40}
    approved = next(r for r in rows if r.kind == "approved")
    assert approved.arguments == '{"a":"[redacted]","b":40}' and '"2"' not in approved.detail


async def test_an_edit_the_policy_would_deny_is_refused_with_the_reason_and_the_request_stays_pending(
    signoff: Any,
) -> None:
    state = EverythingState()
    async with editable(signoff, state, hold="0.1s") as running, running.client("ev") as client:
        with anyio.fail_after(20):
            await client.list_tools()  # the gateway pins the tool's definition, its input schema with it
            held = await client.call_tool("delete_record", {"record_id": "r-1"})
            approval_id = meta(held)["approval_id"]
            denied = await approve(running, approval_id, arguments={"record_id": "sys-1"})
            dropping = meta(await client.call_tool("drop_table", {"name": "t1"}))["approval_id"]
            mistyped = await approve(running, dropping, arguments={"name": 5})
            not_an_object = await approve(running, approval_id, arguments=["r-2"])
            detail = (await api(running, "GET", f"/api/approvals/{approval_id}")).json()
        rows = await running.audit()

    assert denied.status_code == 422
    assert denied.json()["error"].startswith(
        'The edited call was refused: the policy would deny the edited call (rule tools["delete_record"].deny_if[0]:'
    )
    assert denied.json()["error"].endswith("; nothing was decided")
    assert mistyped.status_code == 422
    assert "the tool's input schema refuses name: 5 is not of type 'string'" in mistyped.json()["error"]
    assert not_an_object.status_code == 422 and '"arguments" must be a JSON object' in not_an_object.json()["error"]
    assert detail["status"] == "pending" and detail["decisions"] == [] and detail["edited_arguments"] is None
    assert state.deleted_records == []
    refused = [r.detail for r in rows if r.kind == "decision_refused"]
    assert len(refused) == 3 and all("edited arguments refused" in d for d in refused)


async def test_an_edit_by_someone_the_rule_does_not_name_is_refused_and_decides_nothing(signoff: Any) -> None:
    state = EverythingState()
    async with editable(signoff, state, hold="0.1s") as running, running.client("ev") as client:
        with anyio.fail_after(20):
            held = await client.call_tool("delete_record", {"record_id": "r-1"})
            approval_id = meta(held)["approval_id"]
            carol = await approve(running, approval_id, "carol", arguments={"record_id": "r-2"})
            detail = (await api(running, "GET", f"/api/approvals/{approval_id}")).json()

    assert carol.status_code == 403
    assert 'the rule tools["delete_record"] names group:dba as approvers' in carol.json()["error"]
    assert detail["status"] == "pending" and state.deleted_records == []


async def test_an_edit_after_the_policy_changed_is_refused(signoff: Any, tmp_path: Path) -> None:
    state = EverythingState()
    async with editable(signoff, state, hold="0.1s") as running, running.client("ev") as client:
        with anyio.fail_after(20):
            held = await client.call_tool("delete_record", {"record_id": "r-1"})
            approval_id = meta(held)["approval_id"]
            changed = json.loads(json.dumps(EDITABLE))
            changed["tools"]["delete_record"]["reason"] = "Deletes a customer record, for good"
            (tmp_path / "ev.json").write_text(json.dumps(changed))
            reload = await api(running, "POST", "/api/policies/reload", "alice-approver-token")
            refused = await approve(running, approval_id, arguments={"record_id": "r-2"})
            detail = (await api(running, "GET", f"/api/approvals/{approval_id}")).json()

    assert reload.status_code == 200, reload.text
    assert refused.status_code == 422
    assert refused.json()["error"] == (
        "The edited call was refused: the policy changed since the request; decide on the original or let the "
        "agent call again; nothing was decided"
    )
    assert detail["status"] == "pending" and state.deleted_records == []


async def test_a_rejection_takes_no_arguments(signoff: Any) -> None:
    state = EverythingState()
    async with editable(signoff, state, hold="0.1s") as running, running.client("ev") as client:
        with anyio.fail_after(20):
            held = await client.call_tool("delete_record", {"record_id": "r-1"})
            approval_id = meta(held)["approval_id"]
            path = f"/api/approvals/{approval_id}/reject"
            refused = await api(running, "POST", path, "alice-approver-token", reason="no", arguments={})

    assert refused.status_code == 422
    assert refused.json()["error"] == (
        'unknown key(s) "arguments": this decision takes "reason" and "grant"; nothing was decided'
    )


async def test_signoff_approve_with_arguments_edits_the_call_and_bad_json_decides_nothing(signoff: Any) -> None:
    state = EverythingState()
    async with editable(signoff, state, hold="0.1s") as running, running.client("ev") as client:
        with anyio.fail_after(20):
            held = await client.call_tool("delete_record", {"record_id": "r-1"})
            approval_id = meta(held)["approval_id"]
            argv = ["approve", approval_id, "--url", running.url, "--token", "alice-approver-token", "--arguments"]
            broken = await anyio.to_thread.run_sync(main, [*argv, '{"record_id": '])
            still = (await api(running, "GET", f"/api/approvals/{approval_id}")).json()["status"]
            code = await anyio.to_thread.run_sync(main, [*argv, '{"record_id": "r-4"}'])
            repeat = await client.call_tool("delete_record", {"record_id": "r-1"})

    assert broken != 0 and still == "pending"
    assert code == 0
    assert state.deleted_records == ["r-4"] and 'record_id "r-1" -> "r-4"' in text(repeat)
