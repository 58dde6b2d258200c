"""Signed Slack payloads with missing or mistyped fields, POSTed to `/slack/events` of a real signoff.

Each is really signed (slack_sdk's SignatureVerifier) and must get a 2xx ack or a 4xx, never a 500, with no
traceback in the log; a real click right after must still decide its request.
"""

import json
import logging
from typing import Any
from urllib.parse import urlencode

import anyio
import pytest

from tests.test_slack_flow import click, click_payload, form, meta, posted, signed, slack_flow

pytestmark = pytest.mark.anyio


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    ours = ("integrations", "approvals", "uvicorn", "starlette", "slack_bolt", "slack_sdk")
    return [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info and r.name.startswith(ours)]


def malformed(good: dict[str, Any]) -> dict[str, bytes]:
    """Bodies a buggy or hostile signer could send, built from a real click's payload `good`."""
    action = good["actions"][0]
    view_submission = {
        "type": "view_submission",
        "user": good["user"],
        "view": {"type": "modal", "callback_id": "signoff_reject"},
    }
    payloads: dict[str, Any] = {
        "no actions": {k: v for k, v in good.items() if k != "actions"},
        "actions not a list": {**good, "actions": "signoff_approve"},
        "action not an object": {**good, "actions": [5]},
        "empty actions": {**good, "actions": []},
        "value not a request id": {**good, "actions": [{**action, "value": "not-a-uuid"}]},
        "value not a string": {**good, "actions": [{**action, "value": {"id": 1}}]},
        "no user": {k: v for k, v in good.items() if k != "user"},
        "user not an object": {**good, "user": "U0ALICE"},
        "user id not a string": {**good, "user": {"id": ["U0ALICE"]}},
        "unknown action_id": {**good, "actions": [{**action, "action_id": "signoff_explode"}]},
        "team a number": {**good, "team": 5e-324},
        "channel a number": {**good, "channel": 7},
        "authorizations a number": {**good, "authorizations": 3},
        "a list": [good],
        "a string": "block_actions",
        "no type": {k: v for k, v in good.items() if k != "type"},
        "view_submission without state": view_submission,
        "view_submission without view": {k: v for k, v in view_submission.items() if k != "view"},
        "view_submission with a list view": {**view_submission, "view": []},
        "view_submission without a view type": {**view_submission, "view": {"callback_id": "signoff_reject"}},
        "view_submission with state not an object": {**view_submission, "view": {"callback_id": "x", "state": 1}},
        "note submission with bad metadata": {
            **view_submission,
            "view": {"type": "modal", "callback_id": "signoff_note", "private_metadata": "[1]", "state": {}},
        },
    }
    bodies = {name: form(payload) for name, payload in payloads.items()}
    bodies["payload not JSON"] = urlencode({"payload": "{not json"}).encode()
    bodies["no payload field"] = b"something=else"
    bodies["empty body"] = b""
    bodies["event callback without event"] = json.dumps({"type": "event_callback"}).encode()
    return bodies


async def test_signed_payloads_with_missing_or_mistyped_fields_get_an_ack_or_a_4xx_and_no_traceback(
    signoff: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with slack_flow(signoff) as flow, flow.running.client("ev") as client:
        with anyio.fail_after(20):
            first = await client.call_tool("delete_record", {"record_id": "r-1"})
            message = await posted(flow, "delete_record")
            statuses = {}
            for name, body in malformed(click_payload(message, "signoff_approve", "alice")).items():
                headers = signed(body)
                if name == "event callback without event":
                    headers["Content-Type"] = "application/json"
                response = await flow.http("POST", "/slack/events", content=body, headers=headers)
                statuses[name] = response.status_code
            stamp = {**signed(b"payload=%7B%7D"), "X-Slack-Request-Timestamp": "soon"}
            statuses["non-numeric timestamp"] = (
                await flow.http("POST", "/slack/events", content=b"payload=%7B%7D", headers=stamp)
            ).status_code
            clicked = await click(flow, message, "signoff_approve", "alice")
            await message.shows("Approved")
            detail = await flow.approval(meta(first)["approval_id"])

    unexpected = {name: status for name, status in statuses.items() if not (200 <= status < 300 or 400 <= status < 500)}
    assert unexpected == {}
    assert statuses["non-numeric timestamp"] == 401
    assert tracebacks(caplog) == []
    assert clicked.status_code == 200
    assert detail["status"] in ("approved", "executed")
