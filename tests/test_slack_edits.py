"""Edit and approve in Slack: the button, the modal holding the arguments as JSON, its errors, and the decision.

Every click and submission is a real signed payload built from what signoff posted and opened, as in
tests/test_slack_flow.py.
"""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest

from tests.fakes.slack_api import FakeSlack
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http
from tests.test_approval_edits import EDITABLE
from tests.test_slack_flow import (
    POLICY,
    USERS,
    Flow,
    click,
    ephemeral,
    form,
    meta,
    posted,
    signed,
    slack_config,
    text,
)

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def edit_flow(signoff: Any, policy: dict[str, Any] = EDITABLE) -> AsyncIterator[Flow]:
    slack, state = FakeSlack(), EverythingState()
    async with serve_http(slack.app) as api, serve_http(everything_http_app(state)) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": policy}]
        async with signoff(servers, gateway={"approval_hold": "0.2s"}, extra=slack_config(api)) as running:
            yield Flow(running, slack, state)


async def submit(flow: Flow, opened: dict[str, Any], user: str, values: dict[str, str]) -> httpx2.Response:
    """Submit the modal signoff opened with `values` (block_id -> text) typed into its inputs."""
    view = opened["view"]
    inputs = {b["block_id"]: b["element"]["action_id"] for b in view["blocks"] if b["type"] == "input"}
    state = {block: {inputs[block]: {"type": "plain_text_input", "value": value}} for block, value in values.items()}
    payload = {
        "type": "view_submission",
        "team": {"id": "T0SIGNOFF", "domain": "acme"},
        "user": {"id": USERS[user], "username": user, "name": user, "team_id": "T0SIGNOFF"},
        "api_app_id": "A0SIGNOFF",
        "token": "legacy-verification-token",
        "trigger_id": f"13345224609.738474920.{user}.submit",
        "view": {**view, "id": "V0MODAL", "team_id": "T0SIGNOFF", "state": {"values": state}, "app_id": "A0SIGNOFF"},
        "response_urls": [],
    }
    body = form(payload)
    return await flow.http("POST", "/slack/events", content=body, headers=signed(body))


async def test_edit_and_approve_in_slack_checks_the_json_and_the_policy_then_runs_the_edited_call(
    signoff: Any,
) -> None:
    async with edit_flow(signoff) as flow, flow.running.client("ev") as client:
        with anyio.fail_after(20):
            first = await client.call_tool("delete_record", {"record_id": "r-1"})
            approval_id = meta(first)["approval_id"]
            message = await posted(flow, "delete_record")
            buttons = message.buttons()
            clicked = await click(flow, message, "signoff_edit", "alice")
            opened = (await flow.slack.wait_for("views.open"))[0].args
            field = next(b for b in opened["view"]["blocks"] if b.get("block_id") == "signoff_arguments")
            broken = await submit(flow, opened, "alice", {"signoff_arguments": '{"record_id": '})
            denied = await submit(flow, opened, "alice", {"signoff_arguments": '{"record_id": "sys-1"}'})
            still = await flow.approval(approval_id)
            done = await submit(
                flow, opened, "alice", {"signoff_arguments": '{"record_id": "r-2"}', "signoff_reason": "typo"}
            )
            await message.shows("alice")
            repeat = await client.call_tool("delete_record", {"record_id": "r-1"})
        rows = await flow.running.audit()

    assert buttons["signoff_edit"]["text"]["text"] == "Edit and approve…"
    assert clicked.status_code == 200 and opened["view"]["callback_id"] == "signoff_edit_view"
    assert json.loads(field["element"]["initial_value"]) == {"record_id": "r-1"}
    assert field["element"]["multiline"] is True
    assert broken.json()["response_action"] == "errors"
    assert broken.json()["errors"]["signoff_arguments"].startswith("Not valid JSON")
    assert denied.json()["response_action"] == "errors"
    assert denied.json()["errors"]["signoff_arguments"].startswith(
        "Refused, nothing was decided: the policy would deny the edited call"
    )
    assert still["status"] == "pending" and still["decisions"] == []
    assert (done.status_code == 200 and done.content in (b"", b"{}")) or "errors" not in done.text
    assert flow.state.deleted_records == ["r-2"]
    assert 'signoff: approved by alice with arguments changed: record_id "r-1" -> "r-2"' in text(repeat)
    approved = next(r for r in rows if r.kind == "approved")
    assert (approved.actor, approved.channel) == ("alice", "slack") and "arguments edited from" in approved.detail


async def test_slack_offers_no_edit_button_when_the_rule_does_not_allow_edits(signoff: Any) -> None:
    async with edit_flow(signoff, POLICY) as flow, flow.running.client("ev") as client:
        with anyio.fail_after(20):
            await client.call_tool("delete_record", {"record_id": "r-1"})
            message = await posted(flow, "delete_record")

    assert "signoff_approve" in message.buttons() and "signoff_edit" not in message.buttons()


async def test_an_edit_by_someone_the_rule_does_not_name_is_refused_privately(signoff: Any) -> None:
    async with edit_flow(signoff) as flow, flow.running.client("ev") as client:
        with anyio.fail_after(20):
            first = await client.call_tool("delete_record", {"record_id": "r-1"})
            message = await posted(flow, "delete_record")
            await click(flow, message, "signoff_edit", "carol")
            told = await ephemeral(flow, "carol")
            detail = await flow.approval(meta(first)["approval_id"])

    assert flow.slack.called("views.open") == []
    assert told.startswith("You can't decide this request, so nothing changed")
    assert detail["status"] == "pending" and flow.state.deleted_records == []
