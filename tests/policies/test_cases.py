import json
from typing import Any

import pytest

from policies import PolicyError, load_policy
from policies.cases import Case, CasesInvalid, load_cases, match_rule, run_cases
from policies.explain import DecisionKind
from tests.policies.helpers import catalog


def cases(*items: dict[str, Any]) -> tuple[Case, ...]:
    return load_cases(json.dumps(list(items)))


def faults(text: str) -> list[tuple[str, str]]:
    with pytest.raises(CasesInvalid) as caught:
        load_cases(text, source="demo.tests.json")
    return [(f.path, f.message) for f in caught.value.faults]


def test_cases_that_match_the_policy_pass_and_say_what_happened() -> None:
    results = run_cases(
        catalog("demo"),
        cases(
            {"name": "reads", "identity": "alice", "tool": "list_connections", "arguments": {}, "expect": "allow"},
            {"name": "system pid", "tool": "kill_connection", "arguments": {"pid": 87}, "expect": "deny"},
            {"name": "hidden", "tool": "destroy_connection", "expect": "hidden"},
            {
                "name": "drop sql",
                "tool": "execute_sql",
                "arguments": {"sql": "DROP TABLE t"},
                "expect": "require_approval",
            },
            {"name": "unknown", "tool": "rm_rf", "expect": "deny", "rule": "default"},
        ),
    )

    assert [r.passed for r in results] == [True] * 5
    assert results[1].describe().startswith('deny by tools["kill_connection"].deny_if[0]: PIDs below 100')
    assert results[2].describe() == 'hidden by hide["destroy_connection"]'
    assert results[3].got is DecisionKind.REQUIRE_APPROVAL


def test_a_case_whose_decision_differs_fails_with_what_was_expected_and_what_happened() -> None:
    [result] = run_cases(catalog("demo"), cases({"name": "n", "tool": "list_connections", "expect": "deny"}))
    assert not result.passed
    assert result.problem == "expected deny, got allow"
    assert result.describe() == 'allow by tools["list_connections"]'


@pytest.mark.parametrize(
    ("rule", "passes"),
    [
        ('tools["kill_connection"].deny_if[0]', True),
        ('tools["kill_connection"]', True),
        ("kill_connection", True),
        ('tools["kill_connection"].deny_if[1]', False),
        ('tools["kill_conn"]', False),
        ("kill_conn", False),
        ("default", False),
    ],
)
def test_rule_must_name_the_deciding_rule_or_a_leading_part_of_it(rule: str, passes: bool) -> None:
    case = {"name": "n", "tool": "kill_connection", "arguments": {"pid": 1}, "expect": "deny", "rule": rule}
    [result] = run_cases(catalog("demo"), cases(case))
    assert result.passed is passes
    if not passes:
        assert result.problem == f'expected rule {rule}, got tools["kill_connection"].deny_if[0]'


def test_match_rule_knows_the_locator_forms() -> None:
    assert match_rule('hide["x"]', 'hide["x"]')
    assert match_rule("all_tools", "all_tools.limits[0]")
    assert match_rule("x", 'tools["x"].rate_limit')
    assert not match_rule("x", 'tools["xy"]')


def test_repeat_runs_the_call_at_one_instant_to_test_limits_and_checks_the_last_decision() -> None:
    kill = {"tool": "kill_connection", "arguments": {"pid": 4121}}
    results = run_cases(
        catalog("demo"),
        cases(
            {"name": "ten pass", **kill, "expect": "allow", "repeat": 10},
            {"name": "the eleventh waits", **kill, "expect": "rate_limited", "repeat": 11},
            {"name": "wrongly expects room", **kill, "expect": "allow", "repeat": 11},
        ),
    )

    assert [r.passed for r in results] == [True, True, False]
    assert results[1].describe().endswith("(call 11 of 11; allow x10, rate_limited x1)")
    assert "retry in 1m" in results[1].describe()


def test_each_case_starts_with_fresh_counters() -> None:
    kill = {"tool": "kill_connection", "arguments": {"pid": 4121}, "expect": "allow"}
    results = run_cases(catalog("demo"), cases(*({"name": f"n{i}", **kill, "repeat": 10} for i in range(3))))
    assert all(r.passed for r in results)


_IS_TEST_AGENT = {"caller": "agent", "op": "eq", "value": "test-agent"}


def test_identity_and_server_default_and_can_be_set() -> None:
    [case] = cases({"name": "n", "tool": "t", "expect": "allow"})
    assert (case.identity, case.server, dict(case.arguments or {}), case.repeat) == (None, "test", {}, 1)
    only_test_agent = {"version": "1", "default": "deny", "tools": {"t": {"require": [_IS_TEST_AGENT]}}}
    assert run_cases(load_policy(json.dumps(only_test_agent)), [case])[0].passed  # it called as test-agent
    [case] = cases({"name": "n", "tool": "t", "expect": "allow", "identity": "bob", "server": "pg"})
    assert (case.identity, case.server) == ("bob", "pg")


def test_a_malformed_case_file_reports_every_fault_with_its_json_path() -> None:
    text = json.dumps(
        [
            {"name": "a", "tool": "x", "expect": "allowed", "repeat": 0, "args": {}},
            3,
            {"tool": "", "expect": "deny", "arguments": [1], "identity": 7},
            {"name": "a", "tool": "z", "expect": "deny", "repeat": True},
            {"name": "b", "tool": "z", "expect": "deny", "odd key": 1},
        ]
    )
    assert faults(text) == [
        ("$[0].args", 'unknown key "args"'),
        ("$[0].expect", 'invalid expect "allowed"'),
        ("$[0].repeat", "repeat must be a whole number from 1 to 100000, got 0"),
        ("$[1]", "expected a case object, got number 3"),
        ("$[2]", 'missing required key "name"'),
        ("$[2].tool", 'expected a non-empty string, got string ""'),
        ("$[2].identity", "expected a non-empty string, got number 7"),
        ("$[2].arguments", "expected an object, got array [1]"),
        ("$[3].repeat", "repeat must be a whole number from 1 to 100000, got true"),
        ("$[3].name", 'case $[0] has the same name "a"'),
        ('$[4]["odd key"]', 'unknown key "odd key"'),
    ]


def test_the_error_message_lists_each_fault_with_the_file_name() -> None:
    with pytest.raises(CasesInvalid) as caught:
        load_cases('[{"name": "a", "tool": "x", "expect": "nope"}]', source="p.tests.json")
    message = str(caught.value)
    assert message.startswith("p.tests.json: test cases are invalid (1 error):\n")
    assert 'p.tests.json: $[0].expect: error: invalid expect "nope" (hint: use one of "allow", "deny"' in message
    assert isinstance(caught.value, PolicyError)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"name": "a"}', "expected an array of cases, got object"),
        ("[{]", "invalid JSON at line 1, column 3: Expecting property name enclosed in double quotes"),
        (b"[\xff]", "the file is not UTF-8 text (bad byte at offset 1)"),
        ("[" * 100_000 + "]" * 100_000, "the file is nested too deeply to read"),
    ],
)
def test_a_file_that_is_not_an_array_of_cases_is_refused_at_its_root(text: str | bytes, message: str) -> None:
    with pytest.raises(CasesInvalid) as caught:
        load_cases(text)
    assert [(f.path, f.message) for f in caught.value.faults] == [("$", message)]


def test_a_number_too_long_to_read_is_a_fault_in_a_case_file_as_in_a_policy() -> None:
    with pytest.raises(CasesInvalid) as caught:
        load_cases('[{"call": {"tool": "t", "arguments": {"n": ' + "9" * 5000 + "}}}]")
    (fault,) = caught.value.faults
    assert fault.path == "$" and fault.message.startswith("invalid JSON: Exceeds the limit")
    assert fault.hint == "write very long numbers as strings"


def test_an_empty_file_has_no_cases() -> None:
    assert load_cases("[]") == ()
    assert run_cases(catalog("demo"), []) == []
