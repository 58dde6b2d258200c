"""Block Kit rendering of approval requests: pure functions, called directly."""

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from integrations.slack.blocks import (
    APPROVE,
    APPROVE_NOTE,
    MAX_ARGUMENTS,
    NOTE_VIEW,
    REASON_BLOCK,
    REJECT,
    REJECT_VIEW,
    Card,
    Message,
    note_modal,
    reject_modal,
    request_message,
)

pytestmark = pytest.mark.anyio

DEADLINE = datetime(2026, 3, 1, 12, 15, tzinfo=UTC)


def view(**changes: Any) -> dict[str, Any]:
    """A request as the API (and so the notifier) shows it."""
    base: dict[str, Any] = {
        "id": "0b7e3f9a-1111-4c2d-9e8f-123456789abc",
        "status": "pending",
        "server": "postgres",
        "tool": "PostgreSQL_kill_connection",
        "agent": "claude-desktop",
        "arguments": {"pid": 4242, "password": "[redacted]"},
        "rule": 'tools["PostgreSQL_kill_connection"]',
        "reason": "Kills a live database session and aborts its transaction",
        "approvers": ["alice", "group:dba"],
        "quorum": 1,
        "channel": "#db-approvals",
        "deadline": DEADLINE.isoformat(),
        "responded_at": None,
        "responded_by": None,
        "comment": None,
        "outcome": None,
        "decisions": [],
        "url": "https://signoff.example.com/approvals/0b7e3f9a-1111-4c2d-9e8f-123456789abc",
    }
    return {**base, **changes}


def rendered(message: Message) -> str:
    return json.dumps(message.blocks, ensure_ascii=False)


def actions(message: Message) -> list[str]:
    return [e["action_id"] for b in message.blocks if b["type"] == "actions" for e in b["elements"]]


async def test_a_pending_request_shows_the_call_the_reason_the_deadline_and_the_buttons() -> None:
    message = request_message(Card.from_view(view()))
    shown = rendered(message)

    assert message.text == "Approval needed: claude-desktop wants to run postgres/PostgreSQL_kill_connection"
    assert message.blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Approval needed: PostgreSQL_kill_connection", "emoji": True},
    }
    for fact in ("claude-desktop", "postgres", "`PostgreSQL_kill_connection`", "Kills a live database session"):
        assert fact in shown
    assert '\\"pid\\": 4242' in shown
    assert "[redacted]" in shown  # the API's redaction stands: the secret itself never reaches Slack
    assert f"<!date^{int(DEADLINE.timestamp())}^" in shown  # each reader sees it in their own time zone
    assert "alice, group:dba · needs 1 approval" in shown
    assert actions(message) == [APPROVE, APPROVE_NOTE, REJECT, "signoff_open"]
    approve = message.blocks[-2]["elements"][0]
    assert approve["value"] == view()["id"] and approve["style"] == "primary"


async def test_agent_controlled_text_cannot_ping_the_channel_or_break_the_code_block() -> None:
    card = Card.from_view(view(arguments={"sql": "```<!channel> & <@U123>```"}, reason="<!here> now", tool="x<y>"))
    shown = rendered(request_message(card))

    assert "<!channel>" not in shown and "<!here>" not in shown and "<@U123>" not in shown
    assert "&lt;!channel&gt; &amp; &lt;@U123&gt;" in shown
    assert "&lt;!here&gt; now" in shown
    arguments = next(b["text"]["text"] for b in request_message(card).blocks if "Arguments" in str(b))
    assert arguments.count("```") == 2  # only the block's own fences


async def test_long_arguments_are_truncated_with_a_link_to_the_web_page() -> None:
    card = Card.from_view(view(arguments={"sql": "SELECT 1;\n" * 2000}))
    message = request_message(card)
    arguments = next(b["text"]["text"] for b in message.blocks if "Arguments" in str(b))

    assert len(arguments) < MAX_ARGUMENTS + 300
    assert f"<{card.url}|see all arguments on the web page>" in arguments
    assert all(len(b.get("text", {}).get("text", "")) <= 3000 for b in message.blocks)


async def test_quorum_progress_names_who_approved_so_far() -> None:
    decisions = [{"approver": "alice", "verdict": "approve", "comment": "", "channel": "slack", "at": "x"}]
    message = request_message(Card.from_view(view(quorum=2, decisions=decisions)))

    assert "*1 of 2 approvals* (alice)" in rendered(message)
    assert APPROVE in actions(message)


async def test_each_final_state_says_what_happened_and_has_no_buttons() -> None:
    decided = {"responded_by": "bob", "responded_at": "2026-03-01T12:05:00+00:00"}
    states = {
        "approved": view(status="approved", comment="ticket OPS-12", **decided),
        "executed": view(status="executed", outcome="ok", **decided),
        "failed": view(status="failed", outcome="connection refused", **decided),
        "rejected": view(status="rejected", comment="wrong customer", **decided),
        "expired": view(status="expired"),
        "cancelled": view(status="cancelled", comment="the agent cancelled the call"),
    }
    shown = {name: request_message(Card.from_view(v)) for name, v in states.items()}

    assert all(actions(m) == [] for m in shown.values())
    assert "*Approved* by bob" in rendered(shown["approved"]) and "> ticket OPS-12" in rendered(shown["approved"])
    assert "The call ran upstream: ok" in rendered(shown["executed"])
    assert shown["executed"].text == "Approved and run (bob): claude-desktop's postgres/PostgreSQL_kill_connection"
    assert "The call failed upstream: connection refused" in rendered(shown["failed"])
    assert "*Rejected* by bob" in rendered(shown["rejected"]) and "> wrong customer" in rendered(shown["rejected"])
    assert "*Expired*: nobody decided" in rendered(shown["expired"])
    assert "*Withdrawn*: the agent cancelled the call" in rendered(shown["cancelled"])


async def test_the_reject_modal_requires_a_reason_and_the_note_modal_does_not() -> None:
    card = Card.from_view(view())
    reject = reject_modal(card, "C0DB")
    note = note_modal(card, "C0DB")
    reject_input = next(b for b in reject["blocks"] if b["type"] == "input")
    note_input = next(b for b in note["blocks"] if b["type"] == "input")

    assert (reject["type"], reject["callback_id"], note["callback_id"]) == ("modal", REJECT_VIEW, NOTE_VIEW)
    assert json.loads(reject["private_metadata"]) == {"id": card.id, "channel": "C0DB"}
    assert reject_input["block_id"] == note_input["block_id"] == REASON_BLOCK
    assert reject_input["optional"] is False and note_input["optional"] is True
    assert all(len(m[k]["text"]) <= 24 for m in (reject, note) for k in ("title", "submit", "close"))
