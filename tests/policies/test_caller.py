"""Conditions on who calls (`"caller": "agent"` or `"groups"`), and the budget an agent's own policy counts in."""

import dataclasses
import json
from typing import Any

import pytest

from policies import Allow, Deny, NeedsApproval, PolicyInvalid, RateLimited, RateLimiter, ToolCall, evaluate
from policies.cases import load_cases, run_cases
from policies.explain import explain_call, format_trace
from policies.model import Caller
from tests.policies.helpers import T0, policy

ONE_POLICY_FEW_EXCEPTIONS = {
    "version": "1",
    "default": "deny",
    "tools": {
        "execute_sql": {
            "require": [{"caller": "groups", "op": "in", "value": ["dba", "automation"]}],
            "approve_if": [{"caller": "agent", "op": "ne", "value": "ci-bot"}],
        },
        "kill_connection": {"deny_if": [{"caller": "groups", "op": "contains", "value": "automation"}]},
    },
}


def by(name: str, *groups: str, tool: str = "execute_sql") -> ToolCall:
    return ToolCall("pg", tool, {}, name, groups)


def test_a_caller_condition_decides_by_the_agent_name_and_its_groups() -> None:
    p = policy(ONE_POLICY_FEW_EXCEPTIONS)

    assert evaluate(p, by("ci-bot", "automation"), RateLimiter(), T0) == Allow('tools["execute_sql"]')
    needs = evaluate(p, by("alice", "dba"), RateLimiter(), T0)
    assert isinstance(needs, NeedsApproval)
    assert needs.reason == 'the caller is "alice", which is ne "ci-bot", so a person must approve the call'
    denied = evaluate(p, by("eve"), RateLimiter(), T0)
    assert denied == Deny(
        'tools["execute_sql"].require[0]',
        'the caller is in no group, but require[0] requires that they include any of ["dba", "automation"]',
    )
    assert isinstance(evaluate(p, by("ci-bot", "automation", tool="kill_connection"), RateLimiter(), T0), Deny)
    assert isinstance(evaluate(p, by("alice", "dba", tool="kill_connection"), RateLimiter(), T0), Allow)


def test_explain_shows_the_caller_and_what_each_caller_condition_found() -> None:
    trace = explain_call(policy(ONE_POLICY_FEW_EXCEPTIONS), by("ci-bot", "automation"), RateLimiter(), T0)

    lines = format_trace(trace)
    assert lines[0] == 'call: "execute_sql" by "ci-bot" (groups "automation") on server "pg" with {}'
    assert 'caller.groups in ["dba", "automation"]: the caller\'s groups are ["automation"], so it holds' in lines[3]
    assert 'caller.agent ne "ci-bot": the caller is "ci-bot", so it does not hold' in lines[4]
    assert lines[-1] == 'decision: allow, by tools["execute_sql"]'


@pytest.mark.parametrize(
    ("condition", "path", "message"),
    [
        ({"caller": "team", "op": "eq", "value": "x"}, ".caller", 'invalid caller field "team"'),
        ({"caller": "groups", "op": "eq", "value": "x"}, ".op", 'invalid op on the caller\'s groups "eq"'),
        ({"caller": "agent", "op": "in", "value": "ci-bot"}, ".value", "expected an array"),
        ({"caller": "agent", "arg": "pid", "op": "eq", "value": "x"}, "", "not both"),
        ({"caller": "agent", "op": "regex", "value": "("}, ".value", "invalid regular expression"),
    ],
)
def test_a_malformed_caller_condition_is_refused_at_its_json_path(
    condition: dict[str, Any], path: str, message: str
) -> None:
    doc = {"version": "1", "default": "deny", "tools": {"t": {"deny_if": [condition]}}}

    with pytest.raises(PolicyInvalid) as raised:
        policy(doc)
    errors = [f for f in raised.value.faults if f.severity == "error"]
    assert errors[0].path == f'$.tools["t"].deny_if[0]{path}'
    assert message in errors[0].message


def test_an_agents_own_policy_counts_its_limits_in_its_own_budget() -> None:
    doc = {
        "version": "1",
        "default": "allow",
        "all_tools": {"limits": [{"counter": "all", "window": "minute", "max": 1, "scope": "global"}]},
    }
    shared, own = policy(doc), dataclasses.replace(policy(doc), counters="agent:ci-bot")
    limiter = RateLimiter()

    assert isinstance(evaluate(shared, by("alice"), limiter, T0), Allow)
    assert isinstance(evaluate(own, by("ci-bot"), limiter, T0), Allow)  # the server policy's call did not count
    assert isinstance(evaluate(own, by("ci-bot"), limiter, T0), RateLimited)
    assert isinstance(evaluate(shared, by("bob"), limiter, T0), RateLimited)


def test_cases_run_as_the_given_agent_unless_they_name_one() -> None:
    cases = load_cases(
        json.dumps(
            [
                {"name": "as the agent", "tool": "execute_sql", "expect": "allow"},
                {"name": "as alice", "tool": "execute_sql", "identity": "alice", "groups": ["dba"], "expect": "allow"},
            ]
        )
    )

    as_bot = run_cases(policy(ONE_POLICY_FEW_EXCEPTIONS), cases, Caller("ci-bot", ("automation",)))
    assert [r.got for r in as_bot] == ["allow", "require_approval"]
    anonymous = run_cases(policy(ONE_POLICY_FEW_EXCEPTIONS), cases)
    assert [r.got for r in anonymous] == ["deny", "require_approval"]
