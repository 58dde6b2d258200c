"""The approval lifecycle on a real database (SQLite, and PostgreSQL under `-m postgres`)."""

import dataclasses
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from approvals import service
from approvals.audit import verify_chain
from approvals.errors import AlreadyDecided, ApprovalNotFound, InvalidReason, NotAllowed
from approvals.models import ApprovalStatus, AuditEvent, Verdict
from policies import ApprovalSpec, ToolCall

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
REMEMBER = timedelta(minutes=10)
ALICE = service.Approver("alice", ("dba",))
BOB = service.Approver("bob", ("dba",))
MALLORY = service.Approver("mallory")


def pending_call(
    pid: int = 4121, *, quorum: int = 1, approvers: tuple[str, ...] = ("group:dba",), identity: str = "agent-1"
) -> service.CallForApproval:
    return service.CallForApproval(
        call=ToolCall(server="pg", tool="kill_connection", arguments={"pid": pid, "note": "secret"}, identity=identity),
        rule='tools["kill_connection"]',
        policy_version="v1",
        reason="Kills a live session",
        spec=ApprovalSpec(approvers=approvers, quorum=quorum, timeout_seconds=900),
        redact=("note",),
    )


def at_once(fn: Callable[[], None], times: int) -> None:
    """Run `fn` in `times` threads at once, as racing callers (replicas, clicks, waking calls) would."""
    threads = [threading.Thread(target=fn) for _ in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)


def audit_kinds(session: Session) -> list[str]:
    return list(session.exec(select(AuditEvent.kind).order_by(col(AuditEvent.id))).all())


def test_a_repeat_of_the_same_call_joins_its_pending_request(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        first, created = service.request_approval(session, pending_call(), NOW, REMEMBER)
        again, created_again = service.request_approval(session, pending_call(), NOW, REMEMBER)
        other, created_other = service.request_approval(session, pending_call(pid=4122), NOW, REMEMBER)
        requested = session.exec(select(AuditEvent).where(col(AuditEvent.kind) == "requested")).all()

    assert created and not created_again and created_other
    assert again.id == first.id and other.id != first.id
    assert first.deadline.replace(tzinfo=UTC) == NOW + timedelta(minutes=15)
    assert '"note":"[redacted]"' in (requested[0].arguments or "")


@pytest.mark.parametrize(
    ("verdict", "reason", "why"),
    [
        (Verdict.REJECT, "  ", "A rejection needs a reason: the agent and the audit log will show it"),
        (Verdict.APPROVE, "x" * 2001, "The reason is too long: at most 2000 characters"),
        (Verdict.APPROVE, "ok\x00", "The reason must be text: it contains a NUL character"),
        (Verdict.REJECT, "no \ud800", "The reason must be text: it contains a lone surrogate (\\ud800)"),
    ],
)
def test_a_reason_no_channel_may_send_is_refused_by_the_domain_and_nothing_is_decided(
    engine: Engine, verdict: Verdict, reason: str, why: str
) -> None:
    with Session(engine, expire_on_commit=False) as session:
        request, _ = service.request_approval(session, pending_call(), NOW, REMEMBER)
        with pytest.raises(InvalidReason) as refused:
            service.decide(session, request.id, BOB, verdict, reason, "slack", NOW)
        after = service.get_request(session, request.id)

    assert str(refused.value) == why
    assert after.status == ApprovalStatus.PENDING


def test_a_rejection_settles_at_once_and_later_votes_are_refused_and_audited(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        request, _ = service.request_approval(session, pending_call(), NOW, REMEMBER)
        result = service.decide(session, request.id, BOB, Verdict.REJECT, "not during business hours", "api", NOW)
        with pytest.raises(AlreadyDecided):
            service.decide(session, request.id, ALICE, Verdict.APPROVE, "", "slack", NOW)
        repeat, created = service.request_approval(session, pending_call(), NOW + timedelta(minutes=5), REMEMBER)
        fresh, created_later = service.request_approval(session, pending_call(), NOW + timedelta(minutes=20), REMEMBER)
        kinds = audit_kinds(session)

    assert result.settled and result.request.status == ApprovalStatus.REJECTED
    assert result.request.responded_by == "bob" and result.request.comment == "not during business hours"
    assert not created and repeat.id == request.id  # within `remember`, a repeat is told the outcome
    assert created_later and fresh.id != request.id  # later, the same call asks anew
    assert kinds == ["requested", "rejected", "decision_refused", "requested"]


def test_quorum_needs_distinct_approvers_and_the_requester_never_approves(engine: Engine) -> None:
    requester = service.Approver("agent-1", ("dba",))
    with Session(engine, expire_on_commit=False) as session:
        request, _ = service.request_approval(session, pending_call(quorum=2), NOW, REMEMBER)
        with pytest.raises(NotAllowed):
            service.decide(session, request.id, requester, Verdict.APPROVE, "", "api", NOW)
        with pytest.raises(NotAllowed):
            service.decide(session, request.id, MALLORY, Verdict.APPROVE, "", "api", NOW)
        one = service.decide(session, request.id, ALICE, Verdict.APPROVE, "", "api", NOW)
        after_one = one.request.status
        same = service.decide(session, request.id, ALICE, Verdict.APPROVE, "", "slack", NOW)
        two = service.decide(session, request.id, BOB, Verdict.APPROVE, "", "api", NOW)
        decisions = service.decisions_for(session, request.id)

    assert (one.settled, one.approvals, after_one) == (False, 1, "pending")
    assert (same.settled, same.approvals) == (False, 1)
    assert (two.settled, two.approvals, two.request.status) == (True, 2, "approved")
    assert [d.approver for d in decisions] == ["alice", "bob"]


def test_self_approval_is_allowed_only_when_the_policy_says_so(engine: Engine) -> None:
    call = pending_call(identity="alice", approvers=("alice",))
    allowed = dataclasses.replace(call, spec=ApprovalSpec(approvers=("alice",), allow_self_approval=True))
    with Session(engine, expire_on_commit=False) as session:
        request, _ = service.request_approval(session, allowed, NOW, REMEMBER)
        result = service.decide(session, request.id, ALICE, Verdict.APPROVE, "my own", "api", NOW)

    assert result.request.status == ApprovalStatus.APPROVED


def test_an_approved_request_runs_exactly_once(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        request, _ = service.request_approval(session, pending_call(), NOW, REMEMBER)
        service.decide(session, request.id, ALICE, Verdict.APPROVE, "", "api", NOW)

    wins: list[bool] = []

    def claim() -> None:
        with Session(engine) as own:
            wins.append(service.claim_execution(own, request.id))

    at_once(claim, 8)
    with Session(engine, expire_on_commit=False) as session:
        service.finish_execution(session, request.id, True, "ok", 12.5, NOW)
        service.finish_execution(session, request.id, False, "error", 1.0, NOW)  # a late second report changes nothing
        final = service.get_request(session, request.id)
        kinds = audit_kinds(session)

    assert wins.count(True) == 1
    assert final.status == ApprovalStatus.EXECUTED and final.outcome == "ok"
    assert kinds == ["requested", "approved", "executed"]


def test_overdue_requests_expire_and_a_late_decision_loses(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        overdue, _ = service.request_approval(session, pending_call(1), NOW - timedelta(hours=1), REMEMBER)
        current, _ = service.request_approval(session, pending_call(2), NOW, REMEMBER)
        racing, _ = service.request_approval(session, pending_call(3), NOW - timedelta(hours=1), REMEMBER)
        with pytest.raises(AlreadyDecided) as late:
            service.decide(session, racing.id, ALICE, Verdict.APPROVE, "", "api", NOW)
        expired = service.expire_overdue(session, NOW)
        again = service.expire_overdue(session, NOW)
        statuses = {r.id: r.status for r in service.list_requests(session)}
        report = verify_chain(session)

    assert late.value.status == "expired" and late.value.expired_now
    assert expired == [overdue.id] and again == []
    assert statuses == {overdue.id: "expired", current.id: "pending", racing.id: "expired"}
    assert report.ok


def test_cancel_withdraws_only_a_pending_request(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        request, _ = service.request_approval(session, pending_call(), NOW, REMEMBER)
        first = service.cancel(session, request.id, NOW, "the agent cancelled the call")
        second = service.cancel(session, request.id, NOW, "again")
        with pytest.raises(ApprovalNotFound):
            service.get_request(session, uuid.UUID(int=0))

    assert (first, second) == (True, False)


def test_public_view_hides_redacted_arguments(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        request, _ = service.request_approval(session, pending_call(), NOW, REMEMBER)
        view = service.public_view(request)

    assert view["arguments"] == {"pid": 4121, "note": "[redacted]"}
    assert view["agent"] == "agent-1" and view["status"] == "pending" and view["approvers"] == ["group:dba"]


def test_standing_reads_a_request_and_claims_it_for_exactly_one_of_many_callers_once_approved(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        request, _ = service.request_approval(session, pending_call(), NOW, REMEMBER)
        waiting = service.standing(session, request.id)
        service.decide(session, request.id, ALICE, Verdict.APPROVE, "", "api", NOW)
        with pytest.raises(ApprovalNotFound):
            service.standing(session, uuid.uuid4())

    seen: list[service.Standing] = []

    def wake() -> None:  # held calls waking on the same decision, in several threads
        with Session(engine) as own:
            seen.append(service.standing(own, request.id, "", NOW))  # the clock the approval was given by

    at_once(wake, 8)

    assert (waiting.status, waiting.claimed, waiting.deadline) == ("pending", False, NOW + timedelta(minutes=15))
    assert [s.claimed for s in seen].count(True) == 1
    assert {s.status for s in seen} == {ApprovalStatus.EXECUTING}


def test_the_next_deadline_is_the_earliest_among_pending_requests_only(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        assert service.next_deadline(session) is None
        early, _ = service.request_approval(session, pending_call(1), NOW, REMEMBER)
        service.request_approval(session, pending_call(2), NOW + timedelta(minutes=5), REMEMBER)
        first = service.next_deadline(session)
        service.decide(session, early.id, ALICE, Verdict.REJECT, "no", "api", NOW)
        then = service.next_deadline(session)

    assert first == NOW + timedelta(minutes=15)
    assert then == NOW + timedelta(minutes=20)  # the rejected one no longer waits for a deadline


def test_decided_since_lists_the_requests_voted_on_after_a_given_decision_row(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        one, _ = service.request_approval(session, pending_call(1, quorum=2), NOW, REMEMBER)
        two, _ = service.request_approval(session, pending_call(2), NOW, REMEMBER)
        start, nothing = service.decided_since(session, None)
        service.decide(session, one.id, ALICE, Verdict.APPROVE, "", "api", NOW)  # a vote towards a quorum
        service.decide(session, two.id, BOB, Verdict.REJECT, "no", "api", NOW)
        newest, voted = service.decided_since(session, start)
        later, none_since = service.decided_since(session, newest)

    assert nothing == [] and none_since == []
    assert set(voted) == {one.id, two.id}
    assert newest > start and later == newest


def test_an_approval_unused_for_ten_minutes_expires_from_the_row_alone_as_after_a_restart(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        request, _ = service.request_approval(session, pending_call(), NOW, REMEMBER)  # timeout 15m: use within 10m
        service.decide(session, request.id, ALICE, Verdict.APPROVE, "", "api", NOW)
    with Session(engine, expire_on_commit=False) as fresh:  # a new process knows only the row
        early = service.expire_overdue(fresh, NOW + timedelta(minutes=9))
        due = service.next_deadline(fresh)
        late = service.expire_overdue(fresh, NOW + timedelta(minutes=10, seconds=1))
        after = service.get_request(fresh, request.id)

    assert early == [] and due == NOW + timedelta(minutes=10)
    assert late == [request.id]
    assert (after.status, after.outcome) == (ApprovalStatus.EXPIRED, service.APPROVAL_UNUSED)
