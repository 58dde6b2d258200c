"""What a request keeps for people to read at a glance: the tool's description (safe to store whatever the upstream
sent) and until when a call is held on it (so a decision can say whether the agent is still waiting)."""

import dataclasses
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session

from approvals import service
from tests.approvals.test_service import pending_call

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
REMEMBER = timedelta(minutes=10)


def test_a_hostile_description_is_stored_as_one_clean_line_and_the_view_shows_the_summary(engine: Engine) -> None:
    said = "Kills\x00 a session\ud800 \u202e" + "x" * 5000
    with Session(engine) as session:
        request, _ = service.request_approval(
            session, dataclasses.replace(pending_call(), description=said), NOW, REMEMBER
        )
        view = service.public_view(request, now=NOW)

    assert view["tool_description"].startswith("Kills\\x00 a session\\ud800 \\u202e")
    assert len(view["tool_description"]) <= service.MAX_DESCRIPTION
    assert view["summary"] == "note=[redacted] pid=4121"  # `note` is redacted: its value never shows


def test_a_request_counts_as_waited_on_until_its_last_hold_ends(engine: Engine) -> None:
    with Session(engine) as session:
        request, _ = service.request_approval(session, pending_call(), NOW, REMEMBER)
        first, second = NOW + timedelta(seconds=50), NOW + timedelta(seconds=60)
        service.hold(session, request.id, first)
        service.hold(session, request.id, second)  # a repeat of the call, held a little later
        service.let_go(session, request.id, first, NOW + timedelta(seconds=5))  # the first ends: the repeat holds
        session.refresh(request)
        while_held = service.public_view(request, now=NOW + timedelta(seconds=10))
        service.let_go(session, request.id, second, NOW + timedelta(seconds=20))
        session.refresh(request)
        after = service.public_view(request, now=NOW + timedelta(seconds=21))

    assert while_held["agent_waiting"] is True
    assert after["agent_waiting"] is False and after["held_until"] == (NOW + timedelta(seconds=20)).isoformat()
