"""Grants and tool pins on a real database (SQLite, and PostgreSQL under `-m postgres`)."""

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from approvals import grants, pins, service
from approvals.audit import verify_chain
from approvals.errors import GrantEnded, GrantNotAllowed, GrantNotFound
from approvals.models import ApprovalStatus, AuditEvent, GrantStatus, ToolPin, Verdict
from policies import ApprovalSpec, ToolCall

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
REMEMBER = timedelta(minutes=10)
ALICE = service.Approver("alice", ("dba",))


def pending_call(grant_max: float | None = 1800.0, quorum: int = 1) -> service.CallForApproval:
    return service.CallForApproval(
        call=ToolCall(server="pg", tool="kill_connection", arguments={"pid": 4121}, identity="agent-1"),
        rule='tools["kill_connection"]',
        policy_version="v1",
        reason="Kills a live session",
        spec=ApprovalSpec(approvers=("alice", "bob"), quorum=quorum, timeout_seconds=900),
        grant_max=grant_max,
    )


def kinds(session: Session) -> list[str]:
    return list(session.exec(select(AuditEvent.kind).order_by(col(AuditEvent.id))).all())


# -- grants -----------------------------------------------------------------------------------------------------------


def test_an_approval_with_a_grant_settles_the_request_and_records_the_grant_together(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        request, _ = service.request_approval(session, pending_call(), NOW, REMEMBER)
        result = service.decide(session, request.id, ALICE, Verdict.APPROVE, "maintenance", "api", NOW, 900.0)
        active = grants.active_grants(session, NOW + timedelta(minutes=14))
        later = grants.active_grants(session, NOW + timedelta(minutes=15))
        audited = kinds(session)
        detail = session.exec(select(AuditEvent.detail).where(col(AuditEvent.kind) == "grant_created")).one()

    assert result.settled and result.request.status == ApprovalStatus.APPROVED
    grant = result.grant
    assert grant is not None
    assert (grant.server, grant.tool, grant.identity, grant.granted_by) == ("pg", "kill_connection", "agent-1", "alice")
    assert grant.expires_at.replace(tzinfo=UTC) == NOW + timedelta(minutes=15)
    assert [g.id for g in active] == [grant.id] and later == []
    assert audited == ["requested", "approved", "grant_created"]
    assert f"grant {grant.id} for 15m" in detail and "maintenance" in detail


@pytest.mark.parametrize(
    ("grant_max", "quorum", "seconds", "why"),
    [
        (None, 1, 60.0, "allows no grants"),
        (1800.0, 1, 3600.0, "longer than the rule's grant_max of 30m"),
        (1800.0, 2, 60.0, "needs 2 approvers"),
    ],
)
def test_a_grant_beyond_what_the_rule_allows_is_refused_and_nothing_is_decided(
    engine: Engine, grant_max: float | None, quorum: int, seconds: float, why: str
) -> None:
    with Session(engine, expire_on_commit=False) as session:
        request, _ = service.request_approval(session, pending_call(grant_max, quorum), NOW, REMEMBER)
        with pytest.raises(GrantNotAllowed) as refused:
            service.decide(session, request.id, ALICE, Verdict.APPROVE, "", "api", NOW, seconds)
        after = service.get_request(session, request.id)
        audited = kinds(session)

    assert why in refused.value.why
    assert after.status == ApprovalStatus.PENDING
    assert audited == ["requested"]


def test_a_rejection_cannot_come_with_a_grant(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        request, _ = service.request_approval(session, pending_call(), NOW, REMEMBER)
        with pytest.raises(GrantNotAllowed):
            service.decide(session, request.id, ALICE, Verdict.REJECT, "no", "api", NOW, 60.0)


def test_revoking_ends_a_grant_once_and_expiry_is_recorded_once(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        first, _ = service.request_approval(session, pending_call(), NOW, REMEMBER)
        one = service.decide(session, first.id, ALICE, Verdict.APPROVE, "", "api", NOW, 600.0).grant
        other = dataclasses.replace(
            pending_call(), call=ToolCall(server="pg", tool="kill_connection", arguments={"pid": 1}, identity="agent-1")
        )
        second, _ = service.request_approval(session, other, NOW, REMEMBER)
        two = service.decide(session, second.id, ALICE, Verdict.APPROVE, "", "api", NOW, 60.0).grant
        assert one is not None and two is not None

        revoked = grants.revoke_grant(session, one.id, "bob", "done early", "cli", NOW + timedelta(minutes=1))
        with pytest.raises(GrantEnded):
            grants.revoke_grant(session, one.id, "bob", "", "cli", NOW + timedelta(minutes=2))
        with pytest.raises(GrantNotFound):
            grants.get_grant(session, second.id)  # an approval's id is not a grant's
        expired = grants.expire_overdue_grants(session, NOW + timedelta(minutes=5))
        again = grants.expire_overdue_grants(session, NOW + timedelta(minutes=6))
        view = grants.grant_view(grants.get_grant(session, two.id), NOW + timedelta(minutes=6))
        listed = [g.status for g in grants.list_grants(session)]
        audited = [k for k in kinds(session) if k.startswith("grant_")]
        chain = verify_chain(session)

    assert revoked.status == GrantStatus.REVOKED and revoked.ended_by == "bob" and revoked.end_reason == "done early"
    assert expired == [two.id] and again == []
    assert view["status"] == "expired" and view["remaining_seconds"] == 0
    assert sorted(listed) == ["expired", "revoked"]
    assert audited == ["grant_created", "grant_created", "grant_revoked", "grant_expired"]
    assert chain.ok


def test_a_grant_past_its_time_shows_expired_before_the_sweep_and_cannot_be_revoked(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        request, _ = service.request_approval(session, pending_call(), NOW, REMEMBER)
        grant = service.decide(session, request.id, ALICE, Verdict.APPROVE, "", "api", NOW, 60.0).grant
        assert grant is not None
        shown = grants.grant_view(grant, NOW + timedelta(minutes=2))
        with pytest.raises(GrantEnded) as ended:
            grants.revoke_grant(session, grant.id, "bob", "", "api", NOW + timedelta(minutes=2))

    assert shown["status"] == "expired"
    assert ended.value.status == "expired"


# -- pins -------------------------------------------------------------------------------------------------------------


def test_a_tool_is_pinned_once_and_its_drift_is_recorded_and_audited(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        first = pins.record_pin(session, "srv", "echo", "a" * 64, '{"description":"Echo"}', "v1", NOW)
        second = pins.record_pin(session, "srv", "echo", "b" * 64, "{}", "v1", NOW)
        pins.record_drift(session, "srv", "echo", "a" * 64, "c" * 64, '{"description":"Evil"}', "v1", "deny", NOW)
        (pin,) = pins.load_pins(session)
        drift = session.exec(select(AuditEvent).where(col(AuditEvent.kind) == "tool_drift")).one()

    assert first and not second
    assert (pin.digest, pin.drift_digest, pin.policy_version) == ("a" * 64, "c" * 64, "v1")
    assert drift.outcome == "deny"
    assert drift.detail == f"definition changed from {'a' * 16} to {'c' * 16}; on_drift deny"


def test_accepting_drift_pins_what_is_seen_now_for_one_tool_or_all(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        for tool in ("echo", "add", "steady"):
            pins.record_pin(session, "srv", tool, "a" * 64, "{}", "v1", NOW)
        for tool in ("echo", "add"):
            pins.record_drift(session, "srv", tool, "a" * 64, "b" * 64, '{"new":1}', "v1", "require_approval", NOW)
        one = pins.accept_drift(session, "srv", "echo", "alice", "api", "v1", NOW)
        rest = pins.accept_drift(session, "srv", None, "alice", "cli", "v1", NOW)
        none = pins.accept_drift(session, "srv", None, "alice", "cli", "v1", NOW)
        rows = {p.tool: p for p in pins.load_pins(session)}
        accepted = session.exec(select(AuditEvent).where(col(AuditEvent.kind) == "drift_accepted")).all()

    assert (one, rest, none) == (["echo"], ["add"], [])
    assert rows["echo"].digest == "b" * 64 and rows["echo"].drift_digest is None
    assert rows["echo"].definition == '{"new":1}'
    assert [(a.tool, a.actor, a.channel) for a in accepted] == [("echo", "alice", "api"), ("add", "alice", "cli")]


def test_a_new_policy_version_re_checks_every_pin_of_its_server_only(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        pins.record_pin(session, "srv", "echo", "a" * 64, "{}", "v1", NOW)
        pins.record_pin(session, "other", "echo", "a" * 64, "{}", "v1", NOW)
        for server in ("srv", "other"):
            pins.record_drift(session, server, "echo", "a" * 64, "b" * 64, "{}", "v1", "deny", NOW)
        accepted = pins.recheck_pins(session, "srv", "v2", NOW)
        unchanged = pins.recheck_pins(session, "srv", "v2", NOW)
        rows = {(p.server, p.tool): p for p in session.exec(select(ToolPin)).all()}

    assert accepted == ["echo"] and unchanged == []
    assert rows[("srv", "echo")].policy_version == "v2" and rows[("srv", "echo")].drift_digest is None
    assert rows[("other", "echo")].drift_digest == "b" * 64
