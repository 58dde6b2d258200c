import json
from typing import Any

from policies import ApprovalSpec, Escalation, Threshold, check_policy, load_policy

CONFIGURED = frozenset({"alice", "bob", "group:dba", "group:admin", "group:oncall"})
ANY_OF = {"any_of": [{"count": 1, "approvers": ["group:admin"]}, {"count": 2, "approvers": ["group:dba"]}]}


def doc(approval: dict[str, Any]) -> str:
    return json.dumps(
        {"version": "1", "default": "deny", "tools": {"x": {"action": "require_approval", "approval": approval}}}
    )


def errors(approval: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f.path, f.message) for f in check_policy(doc(approval), approvers=CONFIGURED) if f.severity == "error"]


def test_thresholds_escalations_and_reminders_load_into_the_approval_spec() -> None:
    approval = {
        "quorum": ANY_OF,
        "timeout": "30m",
        "escalate": [{"after": "10m", "approvers": ["group:oncall"], "channel": "#oncall"}],
        "remind": "5m",
    }
    spec = load_policy(doc(approval), approvers=CONFIGURED).rules[0].approval

    assert spec == ApprovalSpec(
        approvers=("group:admin", "group:dba"),
        quorum=1,
        timeout_seconds=1800.0,
        thresholds=(Threshold(1, ("group:admin",)), Threshold(2, ("group:dba",))),
        escalate=(Escalation(600.0, ("group:oncall",), "#oncall"),),
        remind_seconds=300.0,
    )


def test_a_plain_quorum_still_loads_as_one_threshold() -> None:
    spec = load_policy(doc({"approvers": ["alice", "bob"], "quorum": 2})).rules[0].approval

    assert spec is not None and spec.thresholds == () and spec.any_of == (Threshold(2, ("alice", "bob")),)


def test_threshold_faults_name_the_entry_and_key() -> None:
    bad = {"any_of": [{"count": 1, "approvers": ["group:admin"]}, {"count": 0, "approvers": ["group:dbaa"]}]}

    assert errors({"quorum": bad}) == [
        ('$.tools["x"].approval.quorum.any_of[1].approvers[0]', '"group:dbaa" names no configured approver or group'),
        ('$.tools["x"].approval.quorum.any_of[1].count', "count must be a whole number of at least 1, got 0"),
    ]
    assert errors({"quorum": {"any_of": [{"count": 3, "approvers": ["alice", "bob"]}]}}) == [
        (
            '$.tools["x"].approval.quorum.any_of[0].count',
            "count 3 is more than the 2 named approvers, so this entry could never be met",
        )
    ]
    assert errors({"quorum": ANY_OF, "approvers": ["alice"]}) == [
        ('$.tools["x"].approval.approvers', "with quorum.any_of, approvers are named in its entries")
    ]


def test_escalation_and_reminder_faults_say_why_they_could_never_come() -> None:
    approval = {
        "timeout": "15m",
        "escalate": [{"after": "20m", "approvers": ["group:oncal"]}, {"approvers": []}],
        "remind": "15m",
    }

    assert errors(approval) == [
        (
            '$.tools["x"].approval.escalate[0].after',
            'after "20m" is not before the timeout, so this escalation could never come',
        ),
        ('$.tools["x"].approval.escalate[0].approvers[0]', '"group:oncal" names no configured approver or group'),
        ('$.tools["x"].approval.escalate[1]', 'missing required key "after"'),
        ('$.tools["x"].approval.escalate[1].approvers', "names nobody"),
        (
            '$.tools["x"].approval.remind',
            'remind "15m" is not shorter than the timeout, so no reminder could ever be sent',
        ),
    ]
