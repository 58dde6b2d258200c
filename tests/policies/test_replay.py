"""Replaying recorded calls against a candidate policy (pure; the CLI test replays a real audit log)."""

from typing import Any

from policies.explain import DecisionKind
from policies.replay import RecordedCall, format_replay, replay
from tests.policies.helpers import T0, policy

ALLOW, DENY, APPROVAL, LIMITED = (
    DecisionKind.ALLOW,
    DecisionKind.DENY,
    DecisionKind.REQUIRE_APPROVAL,
    DecisionKind.RATE_LIMITED,
)


def recorded(
    tool: str, decision: DecisionKind, at: float = T0, redacted: bool = False, **arguments: Any
) -> RecordedCall:
    return RecordedCall(at, "srv", tool, "alpha", arguments, decision, f'tools["{tool}"]', redacted, f"row@{at:g}")


def test_each_tool_counts_old_to_new_decisions_with_examples_of_each_change() -> None:
    candidate = policy(
        {
            "version": "1",
            "default": "deny",
            "tools": {
                "list": {},
                "kill": {"deny_if": [{"arg": "pid", "op": "lt", "value": 100}], "action": "require_approval"},
            },
        }
    )
    calls = [
        recorded("list", ALLOW),
        recorded("kill", ALLOW, pid=50),
        recorded("kill", ALLOW, pid=4000),
        recorded("kill", ALLOW, pid=4001),
        recorded("drop", ALLOW),
    ]

    report = replay(candidate, calls)

    assert (report.calls, report.changed) == (5, 4)
    kill = report.tools["kill"]
    assert dict(kill.transitions) == {(ALLOW, DENY): 1, (ALLOW, APPROVAL): 2}
    assert [e.new_rule for e in kill.examples[(ALLOW, DENY)]] == ['tools["kill"].deny_if[0]']
    assert report.tools["list"].changed == 0
    lines = format_replay(report)
    assert lines[0] == f"replayed 5 call(s) against policy {candidate.digest}: 4 would change"
    assert "kill: 3 call(s), 3 would change" in lines
    assert "  allow -> require_approval: 2" in lines
    assert any(
        line.startswith("    e.g. row@") and '{"pid": 50}: allow by tools["kill"] -> deny' in line for line in lines
    )
    assert not any(line.startswith("list:") for line in lines)  # unchanged tools are left out unless asked for
    assert "list: 1 call(s), 0 would change" in format_replay(report, all_tools=True)


def test_rate_limits_replay_on_fresh_counters_at_the_recorded_instants() -> None:
    candidate = policy({"version": "1", "default": "deny", "tools": {"kill": {"rate_limit": {"max": 2, "window": 60}}}})
    calls = [recorded("kill", ALLOW, at=T0 + i) for i in range(3)] + [recorded("kill", ALLOW, at=T0 + 61)]

    report = replay(candidate, calls)

    assert dict(report.tools["kill"].transitions) == {(ALLOW, ALLOW): 3, (ALLOW, LIMITED): 1}


def test_redacted_arguments_are_counted_and_said_to_be_unfaithful() -> None:
    candidate = policy({"version": "1", "default": "allow", "tools": {}})
    report = replay(candidate, [recorded("sql", DENY, redacted=True, q="[redacted]"), recorded("sql", ALLOW)])

    assert report.redacted == 1
    lines = format_replay(report)
    assert "sql: 2 call(s) (1 with redacted arguments), 1 would change" in lines
    assert lines[-1].startswith('note: 1 call(s) had redacted arguments, stored as "[redacted]"')
