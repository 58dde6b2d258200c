"""End to end: thresholds by group, escalation and reminders on the approvals clock, and Slack mentions."""

import json
from datetime import timedelta
from typing import Any

import anyio
import pytest

from approvals.models import utcnow
from tests.fakes.slack_api import FakeSlack
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.test_approval_flow import api, meta
from tests.test_slack_flow import SECRET, Flow, posted, slack_config

pytestmark = pytest.mark.anyio

POLICY = {
    "version": "1",
    "default": "allow",
    "tools": {
        "delete_record": {
            "action": "require_approval",
            "approval": {
                "quorum": {"any_of": [{"count": 1, "approvers": ["carol"]}, {"count": 2, "approvers": ["group:dba"]}]},
                "timeout": "10m",
            },
        },
        "drop_table": {
            "action": "require_approval",
            "approval": {
                "approvers": ["alice"],
                "timeout": "30m",
                "escalate": [{"after": "10m", "approvers": ["carol"], "channel": "#oncall"}],
                "remind": "4m",
            },
        },
    },
}
HOOKS = '\n[[webhooks]]\nurl = "{}/hook"\nsecret = "hook-secret-1"\n'


async def test_one_from_the_first_threshold_settles_while_the_second_needs_two_dbas(signoff: Any) -> None:
    state = EverythingState()
    async with serve_http(everything_http_app(state)) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": POLICY}]
        async with signoff(servers, approvers=True, gateway={"approval_hold": "0.2s"}) as running:
            async with running.client("ev") as client:
                with anyio.fail_after(20):
                    by_dbas = meta(await client.call_tool("delete_record", {"record_id": "r-1"}))["approval_id"]
                    by_carol = meta(await client.call_tool("delete_record", {"record_id": "r-2"}))["approval_id"]
                    one_dba = await api(running, "POST", f"/api/approvals/{by_dbas}/approve", "alice-approver-token")
                    two_dbas = await api(running, "POST", f"/api/approvals/{by_dbas}/approve", "bob-approver-token")
                    carol = await api(running, "POST", f"/api/approvals/{by_carol}/approve", "carol-approver-token")
                    agent = await api(running, "POST", f"/api/approvals/{by_carol}/approve", "alpha-approver-token")

    assert one_dba.json()["status"] == "pending" and not one_dba.json()["settled"]
    assert one_dba.json()["thresholds"]["any_of"] == [
        {"count": 1, "approvers": ["carol"], "approved_by": [], "met": False},
        {"count": 2, "approvers": ["group:dba"], "approved_by": ["alice"], "met": False},
    ]
    assert two_dbas.json()["status"] == "approved" and two_dbas.json()["settled"]
    assert two_dbas.json()["thresholds"]["any_of"][1]["approved_by"] == ["alice", "bob"]
    assert carol.json()["status"] == "approved" and carol.json()["thresholds"]["any_of"][0]["met"]
    assert agent.status_code == 403 and "can never approve" in agent.json()["error"]  # the requester never counts


async def test_an_escalation_comes_after_its_time_once_across_restarts_and_reminders_follow(signoff: Any) -> None:
    state, receiver = EverythingState(), WebhookReceiver(secret="hook-secret-1")
    start = utcnow()
    clock = [start]
    async with serve_http(receiver.app) as hooks, serve_http(everything_http_app(state)) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": POLICY}]
        options: dict[str, Any] = {
            "approvers": True,
            "gateway": {"approval_hold": "0.2s"},
            "extra": HOOKS.format(hooks),
            "now": lambda: clock[0],
        }
        async with signoff(servers, **options) as running, running.client("ev") as client:
            with anyio.fail_after(20):
                approval_id = meta(await client.call_tool("drop_table", {"name": "t"}))["approval_id"]
                await receiver.wait_for(1)
                clock[0] = start + timedelta(minutes=1)
                too_soon = await api(running, "POST", f"/api/approvals/{approval_id}/approve", "carol-approver-token")
        clock[0] = start + timedelta(minutes=11)  # signoff was down when the escalation came due
        async with signoff(servers, **options) as running:
            with anyio.fail_after(20):
                after_restart = await receiver.wait_for(2)
                view = (await api(running, "GET", f"/api/approvals/{approval_id}")).json()
        clock[0] = start + timedelta(minutes=16)  # 5 minutes after the escalation: a reminder is due
        async with signoff(servers, **options) as running, running.client("ev") as client:
            with anyio.fail_after(20):
                await receiver.wait_for(3)
                carol = await api(running, "POST", f"/api/approvals/{approval_id}/approve", "carol-approver-token")
                ran = await client.call_tool("drop_table", {"name": "t"})
                await receiver.wait_for(5)
                audit = (await api(running, "GET", "/api/audit?kind=escalated")).json()

    assert too_soon.status_code == 403 and "once the request escalates to you" in too_soon.json()["error"]
    escalated = after_restart[1].json()
    assert escalated["event"] == "approval.escalated"
    assert escalated["request"]["notice"]["approvers"] == ["carol"]
    assert escalated["request"]["notice"]["channel"] == "#oncall"
    assert view["approvers"] == ["alice", "carol"] and view["escalate"][0]["announced"]
    events = [d.json()["event"] for d in receiver.deliveries]
    assert events.count("approval.escalated") == 1  # the third start did not announce it again
    assert events[2] == "approval.reminded"
    assert events[2:].count("approval.reminded") == 1
    assert carol.json()["status"] == "approved" and not ran.is_error and state.dropped_tables == ["t"]
    assert [e["kind"] for e in audit["events"]].count("escalated") == 1


async def test_slack_mentions_approvers_and_groups_and_the_escalation_replies_in_the_thread(signoff: Any) -> None:
    state, slack = EverythingState(), FakeSlack(channels={"#approvals": "C0APPROVALS", "#oncall": "C0ONCALL"})
    start = utcnow()
    clock = [start]
    policy = json.loads(json.dumps(POLICY))
    policy["tools"]["drop_table"]["approval"]["approvers"] = ["alice", "group:ops"]
    async with serve_http(slack.app) as slack_api, serve_http(everything_http_app(state)) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": policy}]
        mapped = 'channel = "#approvals"\ngroups = {ops = "S0OPS"}'  # group:ops is a Slack user group
        extra = slack_config(slack_api).replace('channel = "#approvals"', mapped)
        options: dict[str, Any] = {"gateway": {"approval_hold": "0.2s"}, "extra": extra, "now": lambda: clock[0]}
        async with signoff(servers, **options) as running, running.client("ev") as client:
            flow = Flow(running, slack, state)
            with anyio.fail_after(20):
                await client.call_tool("drop_table", {"name": "t"})
                message = await posted(flow, "drop_table")
                first = message.text
        clock[0] = start + timedelta(minutes=11)
        async with signoff(servers, **options) as running:
            with anyio.fail_after(20):
                await slack.wait_until(lambda: len(slack.called("chat.postMessage")) >= 3)
                await message.shows("<@U0CAROL>")  # carol may decide now: named, and pinged

    assert "<@U0ALICE>" in first and "<!subteam^S0OPS>" in first  # pushes for alice and everyone in ops
    assert "<@U0ALICE>" in message.now["text"]  # the notification text itself carries the mention
    notes = slack.called("chat.postMessage")[1:]
    thread = next(c for c in notes if c.args.get("thread_ts") == message.ts)
    assert "Escalated to <@U0CAROL>" in thread.args["text"] and thread.args["channel"] == message.channel
    assert any(c.args["channel"] == "#oncall" and "<@U0CAROL>" in c.args["text"] for c in notes)
    assert SECRET not in json.dumps([c.args for c in slack.calls])
