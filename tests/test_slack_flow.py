"""End to end through Slack: a real signoff posts to a loopback Slack Web API, and signed clicks come back.

Every click and modal submission is a real signed `block_actions` or `view_submission` payload built from
the blocks signoff actually posted (or the modal it actually opened), POSTed to `/slack/events`.
"""

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import anyio
import httpx2
import pytest
from mcp_types import CallToolResult, TextContent
from slack_sdk.signature import SignatureVerifier

from tests.conftest import READER, Running
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_socket import SlackSocket
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http

pytestmark = pytest.mark.anyio

SECRET = "slack-signing-secret-1"
USERS = {"alice": "U0ALICE", "bob": "U0BOB", "carol": "U0CAROL", "alpha": "U0ALPHA"}
GROUPS = {"alice": ["dba"], "bob": ["dba"], "carol": ["ops"], "alpha": []}
POLICY = {
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
            "approval": {"approvers": ["alice", "bob"], "quorum": 2, "timeout": "10m", "channel": "#db"},
        },
        "counter": {"action": "require_approval", "approval": {"approvers": ["alpha"], "timeout": "10m"}},
        "echo": {
            "approve_if": [{"arg": "text", "op": "contains", "value": "prod"}],
            "approval": {"approvers": ["alice"], "timeout": "1s"},
        },
    },
}


def slack_config(api: str) -> str:
    lines = [
        "",
        "[slack]",
        'bot_token = "xoxb-test-token"',
        f'signing_secret = "{SECRET}"',
        'channel = "#approvals"',
        f'api_url = "{api}/api/"',
        "",
    ]
    for name, user in USERS.items():
        lines += [
            "[[approvers]]",
            f'name = "{name}"',
            f'token = "{name}-approver-token"',
            f'slack_user = "{user}"',
            f"groups = {json.dumps(GROUPS[name])}",
            "",
        ]
    return "\n".join(lines)


@dataclass
class Flow:
    running: Running
    slack: FakeSlack
    state: EverythingState

    async def http(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        async with httpx2.AsyncClient(base_url=self.running.url, timeout=10) as http:
            return await http.request(method, path, **kwargs)

    async def approval(self, approval_id: str) -> dict[str, Any]:
        detail: dict[str, Any] = (await self.http("GET", f"/api/approvals/{approval_id}", headers=READER)).json()
        return detail


@asynccontextmanager
async def slack_flow(signoff: Any, hold: str = "0.3s") -> AsyncIterator[Flow]:
    slack, state = FakeSlack(), EverythingState()
    async with serve_http(slack.app) as api, serve_http(everything_http_app(state)) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": POLICY}]
        async with signoff(servers, gateway={"approval_hold": hold}, extra=slack_config(api)) as running:
            yield Flow(running, slack, state)


@dataclass(frozen=True)
class Posted:
    """A message signoff posted, as the fake Slack shows it now."""

    channel: str
    ts: str
    slack: FakeSlack

    @property
    def now(self) -> dict[str, Any]:
        return self.slack.message(self.channel, self.ts)

    @property
    def text(self) -> str:
        """Everything a reader sees: the notification text and every text in the blocks."""
        text: str = self.now["text"]
        return text + "\n" + "\n".join(_texts(self.now["blocks"]))

    def buttons(self) -> dict[str, dict[str, Any]]:
        actions = [b for b in self.now["blocks"] if b["type"] == "actions"]
        return {e["action_id"]: {**e, "block_id": a["block_id"]} for a in actions for e in a["elements"]}

    async def shows(self, *needles: str) -> None:
        await self.slack.wait_until(lambda: all(n in self.text for n in needles))


def _texts(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [value["text"]] if isinstance(value.get("text"), str) else []
        return own + [t for k, v in value.items() if k != "text" or not isinstance(v, str) for t in _texts(v)]
    if isinstance(value, list):
        return [t for item in value for t in _texts(item)]
    return []


async def posted(flow: Flow, tool: str) -> Posted:
    """The message signoff posted for `tool` (waits for it)."""

    def find() -> Posted | None:
        for (channel, ts), message in flow.slack.messages.items():
            if f"/{tool}" in message["text"]:
                return Posted(channel, ts, flow.slack)
        return None

    await flow.slack.wait_until(lambda: find() is not None)
    found = find()
    assert found is not None
    return found


def signed(body: bytes, timestamp: int | None = None, secret: str = SECRET) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body)
    assert signature is not None
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature,
    }


def form(payload: dict[str, Any]) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


def click_payload(message: Posted, action_id: str, user: str) -> dict[str, Any]:
    """A `block_actions` payload as Slack sends it when `user` clicks the button `action_id` of `message`."""
    button = message.buttons()[action_id]
    return {
        "type": "block_actions",
        "user": {"id": USERS[user], "username": user, "name": user, "team_id": "T0SIGNOFF"},
        "api_app_id": "A0SIGNOFF",
        "token": "legacy-verification-token",
        "container": {
            "type": "message",
            "message_ts": message.ts,
            "channel_id": message.channel,
            "is_ephemeral": False,
        },
        "trigger_id": f"13345224609.738474920.{user}",
        "team": {"id": "T0SIGNOFF", "domain": "acme"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": message.channel, "name": "approvals"},
        "message": {"type": "message", "ts": message.ts, "bot_id": "B0BOT", **message.now},
        "state": {"values": {}},
        "response_url": "https://hooks.slack.invalid/actions/T0SIGNOFF/1/x",
        "actions": [
            {
                "action_id": action_id,
                "block_id": button["block_id"],
                "text": button["text"],
                "value": button["value"],
                "style": button.get("style"),
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }


async def click(flow: Flow, message: Posted, action_id: str, user: str, **headers: str) -> httpx2.Response:
    body = form(click_payload(message, action_id, user))
    return await flow.http("POST", "/slack/events", content=body, headers={**signed(body), **headers})


async def submit(flow: Flow, opened: dict[str, Any], user: str, text: str) -> httpx2.Response:
    """Submit the modal signoff opened (`views.open`'s `view`) with `text` typed into its input."""
    view = opened["view"]
    field = next(b for b in view["blocks"] if b["type"] == "input")
    payload = {
        "type": "view_submission",
        "team": {"id": "T0SIGNOFF", "domain": "acme"},
        "user": {"id": USERS[user], "username": user, "name": user, "team_id": "T0SIGNOFF"},
        "api_app_id": "A0SIGNOFF",
        "token": "legacy-verification-token",
        "trigger_id": f"13345224609.738474920.{user}.submit",
        "view": {
            **view,
            "id": "V0MODAL",
            "team_id": "T0SIGNOFF",
            "state": {
                "values": {
                    field["block_id"]: {field["element"]["action_id"]: {"type": "plain_text_input", "value": text}}
                }
            },
            "hash": "1700000000.abcdef",
            "root_view_id": "V0MODAL",
            "app_id": "A0SIGNOFF",
            "bot_id": "B0BOT",
        },
        "response_urls": [],
    }
    body = form(payload)
    return await flow.http("POST", "/slack/events", content=body, headers=signed(body))


def ephemerals(flow: Flow, user: str) -> list[str]:
    return [c.args["text"] for c in flow.slack.called("chat.postEphemeral") if c.args["user"] == USERS[user]]


async def ephemeral(flow: Flow, user: str, count: int = 1) -> str:
    await flow.slack.wait_until(lambda: len(ephemerals(flow, user)) >= count)
    return ephemerals(flow, user)[count - 1]


async def healthz_until(flow: Flow, key: str) -> dict[str, Any]:
    """/healthz once its slack detail has `key` set (the caller bounds the wait)."""
    while True:
        health: dict[str, Any] = (await flow.http("GET", "/healthz")).json()
        if health["slack"].get(key):
            return health
        await anyio.sleep(0.05)


def text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def meta(result: CallToolResult) -> dict[str, Any]:
    decision: dict[str, Any] = (result.meta or {}).get("signoff/decision", {})
    return decision


async def test_an_approve_click_runs_the_held_call_and_the_message_shows_who_and_the_outcome(signoff: Any) -> None:
    async with slack_flow(signoff, hold="20s") as flow, flow.running.client("ev") as client:
        results: list[CallToolResult] = []
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    results.append(await client.call_tool("delete_record", {"record_id": "r-17"}))

                tg.start_soon(call)
                message = await posted(flow, "delete_record")
                shown_first = message.text
                buttons = message.buttons()
                assert flow.state.deleted_records == []  # held: nothing ran yet
                response = await click(flow, message, "signoff_approve", "alice")
            await message.shows("Approved and run", "alice", "The call ran upstream: ok")
        detail = await flow.approval(buttons["signoff_approve"]["value"])
        rows = await flow.running.audit()
        health = (await flow.http("GET", "/healthz")).json()

    assert response.status_code == 200
    assert not results[0].is_error and text(results[0]) == "deleted record r-17"
    assert flow.state.deleted_records == ["r-17"]
    assert message.channel == "C0APPROVALS"  # [slack] channel, as the rule names none
    for fact in ("alpha", "ev", "delete_record", "Deletes a customer record", '"record_id": "r-17"', "deadline"):
        assert fact in shown_first
    assert {"signoff_approve", "signoff_approve_note", "signoff_reject"} <= set(buttons)
    assert buttons["signoff_open"]["url"].endswith(f"/approvals/{detail['id']}")  # the web page
    assert message.buttons() == {}  # decided: no buttons left
    assert detail["status"] == "executed" and detail["outcome"] == "ok"
    approved = next(r for r in rows if r.kind == "approved")
    assert (approved.actor, approved.channel) == ("alice", "slack")
    posts = flow.slack.called("chat.postMessage")
    assert len(posts) == 1 and posts[0].token == "xoxb-test-token"
    assert health["slack"]["posted"] == 1 and health["slack"]["updated"] >= 1 and health["slack"]["failed"] == 0


async def test_reject_opens_a_modal_and_its_reason_reaches_the_agent_and_the_message(signoff: Any, mode: str) -> None:
    async with slack_flow(signoff) as flow, flow.running.client("ev", mode=mode) as client:
        with anyio.fail_after(20):
            first = await client.call_tool("delete_record", {"record_id": "r-9"})
            message = await posted(flow, "delete_record")
            clicked = await click(flow, message, "signoff_reject", "bob")
            opened = (await flow.slack.wait_for("views.open"))[0].args
            blank = await submit(flow, opened, "bob", "   ")
            still = await flow.approval(meta(first)["approval_id"])
            submitted = await submit(flow, opened, "bob", "wrong customer")
            await message.shows("Rejected", "bob", "wrong customer")
            repeat = await client.call_tool("delete_record", {"record_id": "r-9"})

    assert clicked.status_code == 200
    assert opened["trigger_id"].endswith(".bob") and opened["view"]["type"] == "modal"
    assert blank.status_code == 200 and blank.json()["response_action"] == "errors"  # a reason is required
    assert still["status"] == "pending"
    assert submitted.status_code == 200
    assert meta(repeat)["outcome"] == "rejected" and meta(repeat)["rejected_by"] == "bob"
    assert "wrong customer" in text(repeat)
    assert message.buttons() == {}
    assert flow.state.deleted_records == []


async def test_quorum_progress_shows_in_the_message_and_a_note_is_kept(signoff: Any) -> None:
    async with slack_flow(signoff) as flow, flow.running.client("ev") as client:
        with anyio.fail_after(20):
            first = await client.call_tool("drop_table", {"name": "users"})
            message = await posted(flow, "drop_table")
            await click(flow, message, "signoff_approve", "alice")
            await message.shows("1 of 2 approvals", "alice")
            progress = await ephemeral(flow, "alice")
            buttons_after_one = set(message.buttons())
            await click(flow, message, "signoff_approve_note", "bob")
            opened = (await flow.slack.wait_for("views.open"))[0].args
            await submit(flow, opened, "bob", "ticket OPS-42")
            await message.shows("Approved", "bob", "ticket OPS-42", "2 of 2 approvals")
            dropped = await client.call_tool("drop_table", {"name": "users"})
            await message.shows("The call ran upstream")
        detail = await flow.approval(meta(first)["approval_id"])

    assert message.channel == "C0DB"  # the rule's own channel
    assert "1 of 2" in progress
    assert "signoff_approve" in buttons_after_one  # still pending after one approval
    assert not dropped.is_error and flow.state.dropped_tables == ["users"]
    assert [(d["approver"], d["comment"], d["channel"]) for d in detail["decisions"]] == [
        ("alice", "", "slack"),
        ("bob", "ticket OPS-42", "slack"),
    ]


async def test_nobody_deciding_expires_the_request_and_the_message_says_so(signoff: Any) -> None:
    async with slack_flow(signoff) as flow, flow.running.client("ev") as client:
        with anyio.fail_after(20):
            risky = await client.call_tool("echo", {"text": "restart prod"})
            message = await posted(flow, "echo")
            await message.shows("Expired", "nobody decided")

    assert meta(risky)["outcome"] in ("expired", "approval_pending")
    assert message.buttons() == {}


async def test_forged_stale_future_and_malformed_requests_get_401_and_decide_nothing(signoff: Any) -> None:
    async with slack_flow(signoff) as flow, flow.running.client("ev") as client:
        with anyio.fail_after(20):
            first = await client.call_tool("delete_record", {"record_id": "r-1"})
            message = await posted(flow, "delete_record")
            body = form(click_payload(message, "signoff_approve", "alice"))
            now = int(time.time())
            good = signed(body)
            attempts = {
                "forged": signed(body, secret="not-the-secret"),
                "stale": signed(body, timestamp=now - 400),
                "future": signed(body, timestamp=now + 400),
                "malformed timestamp": {**good, "X-Slack-Request-Timestamp": "12:00"},
                "huge timestamp": {**good, "X-Slack-Request-Timestamp": "9" * 40},
                "malformed signature": {**good, "X-Slack-Signature": "v0=not-hex"},
                "no signature": {k: v for k, v in good.items() if k != "X-Slack-Signature"},
                "no headers": {"Content-Type": "application/x-www-form-urlencoded"},
            }
            statuses = {}
            for name, headers in attempts.items():
                response = await flow.http("POST", "/slack/events", content=body, headers=headers)
                statuses[name] = response.status_code
            tampered = body.replace(b"U0ALICE", b"U0BOB__")
            statuses["tampered body"] = (
                await flow.http("POST", "/slack/events", content=tampered, headers=good)
            ).status_code
            binary = b"\xff\xfe" + body  # signed over its bytes, as SignatureVerifier cannot sign non-UTF-8
            digest = hmac.new(SECRET.encode(), f"v0:{now}:".encode() + binary, hashlib.sha256).hexdigest()
            raw = {**good, "X-Slack-Request-Timestamp": str(now), "X-Slack-Signature": f"v0={digest}"}
            statuses["not utf-8"] = (await flow.http("POST", "/slack/events", content=binary, headers=raw)).status_code
            garbage = b"payload=%7Bnot-json"
            statuses["signed garbage"] = (
                await flow.http("POST", "/slack/events", content=garbage, headers=signed(garbage))
            ).status_code
            detail = await flow.approval(meta(first)["approval_id"])
        health = (await flow.http("GET", "/healthz")).json()
        rows = await flow.running.audit()

    assert {k: v for k, v in statuses.items() if k != "signed garbage"} == dict.fromkeys(
        [*attempts, "tampered body", "not utf-8"], 401
    )
    assert statuses["signed garbage"] in (400, 404)  # signed but unreadable: refused, never a 500
    assert detail["status"] == "pending" and detail["decisions"] == []
    assert not [r for r in rows if r.kind in ("approved", "voted", "decision_refused")]
    assert flow.slack.called("chat.postEphemeral") == []
    assert health["slack"]["rejected_requests"] == len(attempts) + 2


async def test_double_clicks_slack_retries_and_replays_change_nothing_twice(signoff: Any) -> None:
    async with slack_flow(signoff) as flow, flow.running.client("ev") as client:
        with anyio.fail_after(20):
            first = await client.call_tool("delete_record", {"record_id": "r-2"})
            message = await posted(flow, "delete_record")
            # Two clicks on the same message before its update arrives, then Slack retrying the second.
            body = form(click_payload(message, "signoff_approve", "alice"))
            second = form(click_payload(message, "signoff_approve", "alice") | {"trigger_id": "2.2.alice"})
            headers = signed(body)
            once = await flow.http("POST", "/slack/events", content=body, headers=headers)
            replay = await flow.http("POST", "/slack/events", content=body, headers=headers)
            await message.shows("Approved")
            retried = {**signed(second), "X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
            updates = len(flow.slack.called("chat.update"))
            again = await flow.http("POST", "/slack/events", content=second, headers=retried)
            told = await ephemeral(flow, "alice")
            await flow.slack.wait_for("chat.update", updates + 1)  # a click on stale buttons refreshes the message
            collected = await client.call_tool("delete_record", {"record_id": "r-2"})
        rows = await flow.running.audit()

    assert (once.status_code, replay.status_code, again.status_code) == (200, 200, 200)
    assert "already approved" in told
    assert not collected.is_error and flow.state.deleted_records == ["r-2"]
    assert meta(first)["outcome"] == "approval_pending"
    assert [r.kind for r in rows if r.kind in ("approved", "decision_refused")] == ["approved", "decision_refused"]


async def test_an_unmapped_slack_user_is_told_privately_and_the_attempt_is_audited(signoff: Any) -> None:
    async with slack_flow(signoff) as flow, flow.running.client("ev") as client:
        with anyio.fail_after(20):
            first = await client.call_tool("delete_record", {"record_id": "r-3"})
            message = await posted(flow, "delete_record")
            payload = click_payload(message, "signoff_reject", "alice")
            payload["user"] = {"id": "U0MALLORY", "username": "mallory", "name": "mallory", "team_id": "T0SIGNOFF"}
            body = form(payload)
            response = await flow.http("POST", "/slack/events", content=body, headers=signed(body))
            await flow.slack.wait_for("chat.postEphemeral")
            told = flow.slack.called("chat.postEphemeral")[0].args
            detail = await flow.approval(meta(first)["approval_id"])
        rows = await flow.running.audit()

    assert response.status_code == 200
    assert told["user"] == "U0MALLORY" and told["channel"] == message.channel
    assert "not a signoff approver" in told["text"] and "slack_user" in told["text"]
    assert flow.slack.called("views.open") == []  # no reason form for someone who may not reject
    assert detail["status"] == "pending" and detail["decisions"] == []
    refused = [r for r in rows if r.kind == "decision_refused"]
    assert [(r.actor, r.channel, r.outcome) for r in refused] == [("slack:U0MALLORY", "slack", "reject")]


async def test_the_requester_and_approvers_the_rule_does_not_name_are_refused_privately(signoff: Any) -> None:
    async with slack_flow(signoff) as flow, flow.running.client("ev") as client:
        with anyio.fail_after(20):
            count = await client.call_tool("counter", {})
            drop = await client.call_tool("drop_table", {"name": "orders"})
            counter_message = await posted(flow, "counter")
            drop_message = await posted(flow, "drop_table")
            await click(flow, counter_message, "signoff_approve", "alpha")
            self_told = await ephemeral(flow, "alpha")
            await click(flow, drop_message, "signoff_reject", "carol")
            carol_told = await ephemeral(flow, "carol")
            counter_detail = await flow.approval(meta(count)["approval_id"])
            drop_detail = await flow.approval(meta(drop)["approval_id"])
        rows = await flow.running.audit()

    assert "can never approve it" in self_told and "nothing changed" in self_told
    assert "names alice, bob" in carol_told
    assert flow.slack.called("views.open") == []
    assert counter_detail["status"] == drop_detail["status"] == "pending"
    assert flow.state.counter == 0 and flow.state.dropped_tables == []
    refused = {(r.actor, r.channel) for r in rows if r.kind == "decision_refused"}
    assert refused == {("alpha", "slack"), ("carol", "slack")}


async def test_a_rate_limited_post_waits_for_retry_after_then_succeeds_and_healthz_tells(signoff: Any) -> None:
    async with slack_flow(signoff) as flow, flow.running.client("ev") as client:
        flow.slack.fail("chat.postMessage", status=429, retry_after=1)
        with anyio.fail_after(20):
            first = await client.call_tool("delete_record", {"record_id": "r-4"})
            await flow.slack.wait_for("chat.postMessage", 1)
            during = await flow.approval(meta(first)["approval_id"])
            message = await posted(flow, "delete_record")
            attempts = flow.slack.called("chat.postMessage")
            await click(flow, message, "signoff_approve", "bob")
            await message.shows("Approved")
        health = (await flow.http("GET", "/healthz")).json()

    assert during["status"] == "pending"  # the request never depended on Slack
    assert len(attempts) == 2
    assert health["slack"]["retries"] >= 1 and health["slack"]["posted"] == 1
    assert "ratelimited" in health["slack"]["last_error"]


async def test_a_bot_outside_the_channel_is_explained_in_healthz_and_retried(signoff: Any) -> None:
    async with slack_flow(signoff) as flow, flow.running.client("ev") as client:
        flow.slack.fail("chat.postMessage", error="not_in_channel")
        with anyio.fail_after(20):
            await client.call_tool("delete_record", {"record_id": "r-5"})
            await flow.slack.wait_for("chat.postMessage", 1)
            await flow.slack.wait_until(lambda: bool(flow.slack.messages))
        health = (await flow.http("GET", "/healthz")).json()

    assert "not_in_channel" in health["slack"]["last_error"]
    assert "/invite @signoff" in health["slack"]["last_error"]
    assert health["slack"]["posted"] == 1


async def test_socket_mode_takes_clicks_over_the_websocket_without_a_public_url(signoff: Any) -> None:
    slack, state, socket = FakeSlack(), EverythingState(), SlackSocket()
    async with socket.serve() as wss, serve_http(slack.app) as api, serve_http(everything_http_app(state)) as upstream:
        slack.socket_url = wss
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": POLICY}]
        extra = slack_config(api).replace(f'signing_secret = "{SECRET}"', 'app_token = "xapp-test-token"')
        async with signoff(servers, gateway={"approval_hold": "0.3s"}, extra=extra) as running:
            flow = Flow(running, slack, state)
            async with running.client("ev") as client:
                with anyio.fail_after(20):
                    first = await client.call_tool("delete_record", {"record_id": "r-6"})
                    message = await posted(flow, "delete_record")
                    body = form(click_payload(message, "signoff_approve", "alice"))
                    ack = await socket.send(click_payload(message, "signoff_approve", "carol"))
                    await message.shows("Approved", "carol")
                    collected = await client.call_tool("delete_record", {"record_id": "r-6"})
                    http_mode = await flow.http("POST", "/slack/events", content=body, headers=signed(body))
            health = (await flow.http("GET", "/healthz")).json()

    assert meta(first)["outcome"] == "approval_pending"
    assert ack["envelope_id"] and slack.called("apps.connections.open")[0].token == "xapp-test-token"
    assert not collected.is_error and state.deleted_records == ["r-6"]
    assert http_mode.status_code == 404  # no signing secret: no HTTP mode to forge requests against
    assert health["slack"]["mode"] == "socket" and health["slack"]["socket_connected"] is True


async def test_a_request_made_while_slack_was_unreachable_is_posted_when_signoff_starts_again(signoff: Any) -> None:
    state = EverythingState()
    async with serve_http(everything_http_app(state)) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": POLICY}]
        async with serve_http(FakeSlack().app) as gone:
            pass  # a port where nothing listens any more: Slack is down
        down = slack_config(gone)
        async with signoff(servers, gateway={"approval_hold": "0.3s"}, extra=down) as running:
            async with running.client("ev") as client:
                with anyio.fail_after(20):
                    first = await client.call_tool("delete_record", {"record_id": "r-7"})
                    health = await healthz_until(Flow(running, FakeSlack(), state), "last_error")
        slack = FakeSlack()
        async with serve_http(slack.app) as api, signoff(servers, extra=slack_config(api)) as running:
            flow = Flow(running, slack, state)
            with anyio.fail_after(20):
                message = await posted(flow, "delete_record")
                await click(flow, message, "signoff_approve", "alice")
                await message.shows("Approved")
            detail = await flow.approval(meta(first)["approval_id"])

    assert meta(first)["outcome"] == "approval_pending"  # the request never waited for Slack
    assert health["slack"]["posted"] == 0 and "cannot reach Slack" in health["slack"]["last_error"]
    assert detail["status"] == "approved" and detail["decisions"][0]["channel"] == "slack"


@pytest.mark.parametrize("store", ["database", "redis"])
async def test_a_slack_request_handled_on_one_replica_is_a_replay_on_another(
    signoff: Any, tmp_path: Any, request: pytest.FixtureRequest, store: str
) -> None:
    redis = request.getfixturevalue("redis_server") if store == "redis" else None
    gateway = {"approval_hold": "0.3s", **({"redis_url": redis.url} if redis else {})}
    slack, state = FakeSlack(), EverythingState()
    async with serve_http(slack.app) as api, serve_http(everything_http_app(state)) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": POLICY}]
        options = {"gateway": gateway, "extra": slack_config(api), "database_url": f"sqlite:///{tmp_path / 's.db'}"}
        async with signoff(servers, **options) as here, signoff(servers, **options) as there:
            flow, elsewhere = Flow(here, slack, state), Flow(there, slack, state)
            async with here.client("ev") as client:
                with anyio.fail_after(20):
                    await client.call_tool("delete_record", {"record_id": "r-3"})
                    message = await posted(flow, "delete_record")
                    body = form(click_payload(message, "signoff_approve", "alice"))
                    headers = signed(body)
                    once = await flow.http("POST", "/slack/events", content=body, headers=headers)
                    replayed = await elsewhere.http("POST", "/slack/events", content=body, headers=headers)
                    await message.shows("Approved")
            rows = await here.audit()
            if redis is not None:  # the store gone: refused, not risked
                redis.stop()
                anew = signed(body, timestamp=int(time.time()) - 1)  # the same click signed anew: not a replay
                unsure = await elsewhere.http("POST", "/slack/events", content=body, headers=anew)
                assert unsure.status_code == 503 and "cannot tell whether this is a replay" in unsure.text

    assert (once.status_code, replayed.status_code) == (200, 200)
    assert [r.kind for r in rows if r.kind in ("approved", "decision_refused")] == ["approved"]  # not twice
    assert slack.called("chat.postEphemeral") == []  # the replay told nobody "already approved": it did nothing
