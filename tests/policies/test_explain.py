from typing import Any

import pytest

from policies import RateLimiter, ToolCall, evaluate
from policies.explain import DecisionKind, StepOutcome, Trace, explain_call, format_trace, kind_of
from tests.policies.helpers import T0, call, catalog, policy

LAYERED = {
    "version": "1",
    "default": "deny",
    "hide": ["debug_*", "debug_dump"],
    "all_tools": {"limits": [{"counter": "all", "window": "minute", "max": 3, "scope": "grant"}]},
    "tools": {
        "*": {"action": "deny", "reason": "unlisted"},
        "kill_*": {"action": "require_approval", "approval": {"approvers": ["alice", "group:dba"], "timeout": "15m"}},
        "kill_c*": {"deny_if": [{"arg": "pid", "op": "lt", "value": 100}]},
        "kill_s*": {},
        "kill_connection": {
            "require": [{"arg": "pid", "op": "exists", "value": True}],
            "deny_if": [{"arg": "pid", "op": "lt", "value": 100}],
            "limits": [{"counter": "kills", "window": "minute", "max": 2, "scope": "grant"}],
            "approve_if": [{"arg": "note", "op": "regex", "value": "(?i)urgent"}],
            "redact": ["note"],
        },
    },
}


def trace(doc: dict[str, Any], tool: str, limiter: RateLimiter | None = None, **arguments: Any) -> Trace:
    return explain_call(policy(doc), call(tool, **arguments), limiter or RateLimiter(), T0)


def steps(t: Trace) -> list[tuple[str, StepOutcome]]:
    return [(s.label, s.outcome) for s in t.steps]


def test_a_hidden_tool_is_decided_by_the_hide_check_and_nothing_after_it_runs() -> None:
    limiter = RateLimiter()
    t = trace(LAYERED, "debug_dump", limiter)

    assert t.kind is DecisionKind.HIDDEN
    assert t.steps[0].outcome is StepOutcome.DECIDED
    assert t.steps[0].text.startswith('hidden by hide entry "debug_dump" (also matched by "debug_*")')
    assert all(s.outcome is StepOutcome.NOT_REACHED for s in t.steps[1:])
    assert limiter.key_count == 0  # nothing was counted


def test_an_exact_key_beats_every_glob_that_also_matches_and_the_trace_names_them() -> None:
    t = trace(LAYERED, "kill_connection", pid=4121)
    text = t.steps[1].text
    assert text.startswith('tools["kill_connection"] matches "kill_connection" exactly')
    assert '"*", "kill_*", "kill_c*" (an exact name wins over any glob)' in text


def test_a_longer_glob_beats_shorter_ones_and_ties_go_to_the_earlier_key() -> None:
    t = trace(LAYERED, "kill_cx", pid=4121)
    assert t.steps[1].text == (
        'tools["kill_c*"] matches "kill_cx" as a glob; it beats "*", "kill_*" (a longer glob wins)'
    )
    tie = {"version": "1", "default": "deny", "tools": {"ab?": {}, "a?c": {"action": "deny"}}}
    assert (
        trace(tie, "abc").steps[1].text.endswith('it beats "a?c" (same length, and the earlier key in the file wins)')
    )


def test_each_condition_shows_its_test_the_actual_value_and_the_outcome() -> None:
    t = trace(LAYERED, "kill_connection", pid=87)

    assert steps(t) == [
        ("hide", StepOutcome.PASSED),
        ("tools", StepOutcome.PASSED),
        ("require[0]", StepOutcome.PASSED),
        ("deny_if[0]", StepOutcome.DECIDED),
        ("all_tools.limits[0]", StepOutcome.NOT_REACHED),
        ("limits[0]", StepOutcome.NOT_REACHED),
        ("approve_if[0]", StepOutcome.NOT_REACHED),
        ("allow", StepOutcome.NOT_REACHED),
    ]
    assert t.steps[2].text == 'pid exists: argument "pid" is 87, so it holds'
    assert t.steps[3].text == 'pid lt 100: argument "pid" is 87, so it holds, and the call is denied'
    assert t.steps[4].text.endswith("3 left; not counted")
    assert t.steps[6].text == 'note regex "(?i)urgent"'


def test_a_missing_argument_fails_closed_and_the_trace_says_so() -> None:
    t = trace(LAYERED, "kill_connection")
    assert t.deciding is not None
    assert t.deciding.label == "require[0]"
    assert t.deciding.text == 'pid exists: argument "pid" is missing, so it does not hold, and the call is denied'
    wrong_type = trace(LAYERED, "kill_connection", pid="87")
    assert wrong_type.steps[3].text.endswith("cannot be tested (fails closed), and the call is denied")


def test_redacted_arguments_are_not_shown() -> None:
    t = trace(LAYERED, "kill_connection", pid=4121, note="URGENT: customer 4411 password hunter2")
    assert t.kind is DecisionKind.REQUIRE_APPROVAL
    assert t.deciding is not None
    assert t.deciding.text.startswith('note regex "(?i)urgent": argument "note" is [redacted], so it holds')
    assert "hunter2" not in "\n".join(format_trace(t))
    assert format_trace(t)[0].endswith('with {"note": "[redacted]", "pid": 4121}')
    assert t.deciding.text.endswith("a person must approve (approvers: any configured approver; quorum 1; timeout 15m)")


def test_limits_show_the_budget_before_and_after_and_which_one_ran_out() -> None:
    limiter = RateLimiter()
    first = trace(LAYERED, "kill_connection", limiter, pid=4121, note="routine")
    trace(LAYERED, "kill_connection", limiter, pid=4121, note="routine")
    third = trace(LAYERED, "kill_connection", limiter, pid=4121, note="routine")

    assert first.kind is DecisionKind.ALLOW
    assert first.steps[4].text == (
        'counter "all" allows 3 calls per minute (scope grant): 3 left before this call, 2 after'
    )
    assert first.steps[5].text.endswith("2 left before this call, 1 after")
    assert third.kind is DecisionKind.RATE_LIMITED
    assert third.steps[4].outcome is StepOutcome.PASSED
    assert third.steps[4].text.endswith("1 left; not counted, because another limit is exhausted")
    assert third.steps[5].outcome is StepOutcome.DECIDED
    assert third.steps[5].text == (
        'counter "kills" allows 2 calls per minute (scope grant): none left, so the call is rate-limited; retry in 1m'
    )


def test_require_approval_by_action_names_who_may_approve() -> None:
    t = trace(LAYERED, "kill_process")
    assert t.deciding is not None
    assert (t.deciding.label, t.deciding.locator) == ("action", 'tools["kill_*"]')
    assert t.deciding.text.startswith("action is require_approval: a person must approve (approvers: alice, group:dba")


def test_a_deny_action_decides_before_any_condition_or_limit() -> None:
    t = trace(LAYERED, "whatever")
    assert steps(t)[2:] == [
        ("action", StepOutcome.DECIDED),
        ("all_tools.limits[0]", StepOutcome.NOT_REACHED),
        ("allow", StepOutcome.NOT_REACHED),
    ]
    assert format_trace(t)[-1] == 'decision: deny, by tools["*"]: unlisted'


@pytest.mark.parametrize(
    ("default", "kind"),
    [("deny", DecisionKind.DENY), ("allow", DecisionKind.ALLOW), ("require_approval", DecisionKind.REQUIRE_APPROVAL)],
)
def test_a_tool_no_key_matches_is_decided_by_the_default(default: str, kind: DecisionKind) -> None:
    doc = {"version": "1", "default": default, "all_tools": {"limits": [{"counter": "c", "window": 60, "max": 5}]}}
    t = trace(doc, "anything")
    assert t.kind is kind
    assert t.steps[1].text == f'no tools key matches "anything", so the default applies ({default})'
    assert t.deciding is not None and t.deciding.label == "default"
    # The default deny refuses before any limit; the others count the call against all_tools.
    counted = [s.label for s in t.steps if s.label.startswith("all_tools")]
    assert counted == ([] if default == "deny" else ["all_tools.limits[0]"])


def test_format_trace_prints_the_call_each_step_and_the_decision() -> None:
    lines = format_trace(explain_call(catalog("demo"), call("kill_connection", pid=87), RateLimiter(), T0))
    assert lines[0] == 'call: "kill_connection" by "agent-1" on server "srv" with {"pid": 87}'
    assert lines[3].split()[:2] == ["deny_if[0]", "decided"]
    assert lines[-1].startswith('decision: deny, by tools["kill_connection"].deny_if[0]: PIDs below 100')


CALLS: list[tuple[str, dict[str, Any]]] = [
    ("kill_connection", {"pid": 87}),
    ("kill_connection", {"pid": 4121}),
    ("kill_connection", {}),
    ("PostgreSQL_kill_connection", {"pid": 12345}),
    ("execute_sql", {"sql": "DROP TABLE users"}),
    ("execute_sql", {"sql": "select 1"}),
    ("destroy_connection", {"connection_id": "conn-1"}),
    ("terminate_user_connections", {"user_id": "bob"}),
    ("unknown_tool", {}),
]


@pytest.mark.parametrize("name", ["demo", "postgres", "livetap", "leapfrog", "pusher-channels", "remnawave"])
def test_the_trace_always_agrees_with_evaluate_and_exactly_one_step_decides(name: str) -> None:
    p = catalog(name)
    traced, evaluated = RateLimiter(), RateLimiter()
    for _ in range(12):  # long enough to run every limit in the catalogue dry
        for tool, arguments in CALLS:
            c = ToolCall("srv", tool, arguments, "agent-1")
            t = explain_call(p, c, traced, T0)
            assert t.decision == evaluate(p, c, evaluated, T0)
            deciding = [s for s in t.steps if s.outcome is StepOutcome.DECIDED]
            assert len(deciding) == 1
            assert deciding[0].locator == t.decision.rule
            assert kind_of(t.decision) is t.kind


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("debug_dump", {}),
        ("kill_connection", {}),
        ("kill_connection", {"pid": 87}),
        ("kill_connection", {"pid": 4121}),
        ("kill_connection", {"pid": 4121, "note": "URGENT"}),
        ("kill_connection", {"pid": "4121"}),
        ("kill_cx", {"pid": 12}),
        ("kill_session", {}),
        ("unlisted", {}),
    ],
)
def test_the_trace_is_evaluations_own_walk_one_step_decides_and_every_later_one_was_not_reached(
    tool: str, arguments: dict[str, Any]
) -> None:
    for calls in range(4):  # the fourth call of a tool meets exhausted limits
        explained, evaluated = RateLimiter(), RateLimiter()
        for _ in range(calls):
            trace(LAYERED, tool, explained, **arguments)
            evaluate(policy(LAYERED), call(tool, **arguments), evaluated, T0)
        t = trace(LAYERED, tool, explained, **arguments)
        decision = evaluate(policy(LAYERED), call(tool, **arguments), evaluated, T0)

        assert t.decision == decision
        outcomes = [s.outcome for s in t.steps]
        decided = outcomes.index(StepOutcome.DECIDED)
        assert outcomes.count(StepOutcome.DECIDED) == 1
        assert t.steps[decided].locator == decision.rule
        assert set(outcomes[:decided]) <= {StepOutcome.PASSED}
        assert set(outcomes[decided + 1 :]) <= {StepOutcome.NOT_REACHED}
