"""What a Slack message says first, rendered directly: the summary, the tool's description, the age, the warning
when arguments were cut, and when an approved call runs."""

import json
from datetime import UTC, datetime

import pytest

from approvals.summary import arguments_summary
from integrations.slack.blocks import Card, note_modal, request_message
from tests.integrations.test_slack_blocks import view

pytestmark = pytest.mark.anyio

ASKED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
USE_BY = datetime(2026, 3, 1, 12, 10, tzinfo=UTC)


def card(**changes: object) -> Card:
    arguments = changes.pop("arguments", {"pid": 4242, "password": "[redacted]"})
    base = view(
        arguments=arguments,
        summary=arguments_summary(arguments),
        tool_description="Terminates a backend <!channel> `now`",
        requested_at=ASKED.isoformat(),
    )
    return Card.from_view({**base, **changes})


async def test_the_message_opens_with_what_the_call_does_escaped_with_its_age_and_the_tools_own_words() -> None:
    message = request_message(card(arguments={"pid": 4242, "note": "<!here> `x`"}))
    what = message.blocks[1]["text"]["text"]
    why = json.dumps(message.blocks[3])

    assert what.startswith("*What:* `note=\"&lt;!here&gt; 'x'\" pid=4242`")
    assert f"<!date^{int(ASKED.timestamp())}^{{ago}}|2026-03-01 12:00 UTC>" in what
    assert "Terminates a backend &lt;!channel&gt; `now`" in why and "<!channel>" not in why
    assert "<!here>" not in json.dumps(message.blocks) and "<!here>" not in message.text


async def test_cut_arguments_make_approve_ask_first_and_the_note_modal_warn() -> None:
    cut = card(arguments={"pid": 4242, "query": "SELECT 1;\n" * 200})
    whole = card()
    approve = next(e for b in request_message(cut).blocks if b["type"] == "actions" for e in b["elements"])

    assert approve["confirm"]["confirm"]["text"] == "Approve anyway"
    assert "The message showed only part of the arguments" in json.dumps(note_modal(cut, "C0"))
    assert "only part" not in json.dumps(note_modal(whole, "C0"))


@pytest.mark.parametrize(
    ("waiting", "says"),
    [
        (True, "The agent is waiting; it runs now."),
        (False, "The agent was told to retry; it runs when it calls again (until <!date^"),
    ],
)
async def test_an_approved_message_says_truthfully_when_the_call_runs(waiting: bool, says: str) -> None:
    approved = card(
        status="approved",
        responded_by="alice",
        responded_at=ASKED.isoformat(),
        agent_waiting=waiting,
        use_by=USE_BY.isoformat(),
    )

    assert says in json.dumps(request_message(approved).blocks)
