from typing import Any

import pytest

from policies import (
    Action,
    Allow,
    ApprovalSpec,
    Deny,
    Hidden,
    NeedsApproval,
    Policy,
    RateLimited,
    RateLimiter,
    Rule,
    ToolCall,
    evaluate,
    is_hidden,
    rule_for,
)
from tests.policies.helpers import T0, call, decide, policy


def doc(tools: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"version": "1", "default": "deny", "tools": tools, **top}


# -- matching and precedence ------------------------------------------------------------------------------------------


def test_exact_name_beats_any_glob() -> None:
    p = policy(doc({"delete_*": {"action": "deny"}, "delete_draft": {}, "*": {"action": "deny"}}))
    assert decide(p, "delete_draft") == Allow('tools["delete_draft"]')


def test_longer_glob_beats_shorter_glob_whatever_the_order() -> None:
    p = policy(doc({"d*": {"action": "deny"}, "delete_dr*": {}, "delete_*": {"action": "deny"}}))
    assert decide(p, "delete_draft") == Allow('tools["delete_dr*"]')
    assert decide(p, "delete_user").rule == 'tools["delete_*"]'
    assert decide(p, "drop").rule == 'tools["d*"]'


def test_globs_of_equal_length_go_to_the_first_in_the_document() -> None:
    p = policy(doc({"a?c": {"action": "deny"}, "ab?": {}}))
    assert decide(p, "abc").rule == 'tools["a?c"]'
    p = policy(doc({"ab?": {}, "a?c": {"action": "deny"}}))
    assert decide(p, "abc") == Allow('tools["ab?"]')


def test_globs_support_question_mark_and_character_classes_and_are_case_sensitive() -> None:
    p = policy(doc({"get_[abc]?": {}, "list_[!x]*": {}, "Run_[0-9]": {}}))
    assert isinstance(decide(p, "get_b1"), Allow)
    assert isinstance(decide(p, "get_d1"), Deny)
    assert isinstance(decide(p, "list_users"), Allow)
    assert isinstance(decide(p, "list_xs"), Deny)
    assert isinstance(decide(p, "Run_7"), Allow)
    assert isinstance(decide(p, "run_7"), Deny)


def test_glob_matches_whole_name_only() -> None:
    p = policy(doc({"get_*": {}}))
    assert isinstance(decide(p, "forget_it"), Deny)


def test_rule_for_returns_the_governing_rule_or_none() -> None:
    p = policy(doc({"get_*": {"reason": "reads"}, "get_one": {}}))
    found = rule_for(p, "get_two")
    assert found is not None
    assert found.pattern == "get_*"
    assert rule_for(p, "get_one") == Rule("get_one")
    assert rule_for(p, "put") is None


def test_hidden_glob_hides_matching_tools_before_any_rule() -> None:
    p = policy(doc({"debug_dump": {}}, hide=["debug_*", "*_destroy"]))
    assert is_hidden(p, "debug_dump")
    assert decide(p, "debug_dump") == Hidden('hide["debug_*"]')
    assert decide(p, "session_destroy") == Hidden('hide["*_destroy"]')
    assert not is_hidden(p, "list")


def test_hiding_star_hides_everything() -> None:
    p = policy({"version": "1", "default": "allow", "hide": ["*"]})
    assert is_hidden(p, "anything")


# -- defaults and actions ---------------------------------------------------------------------------------------------


def test_default_allow_allows_unlisted_tools() -> None:
    assert decide(policy({"version": "1", "default": "allow"}), "x") == Allow("default")


def test_default_deny_says_no_rule_allows_the_tool() -> None:
    assert decide(policy({"version": "1", "default": "deny"}), "foo") == Deny(
        "default", 'no rule allows "foo" and the policy\'s default is deny'
    )


def test_default_deny_uses_the_default_reason_when_given() -> None:
    p = policy({"version": "1", "default": "deny", "default_reason": "This server is read-only today."})
    assert decide(p, "foo") == Deny("default", "This server is read-only today.")


def test_default_require_approval_needs_approval_with_default_spec() -> None:
    decision = decide(policy({"version": "1", "default": "require_approval"}), "foo")
    assert decision == NeedsApproval(
        "default", 'no rule covers "foo" and the policy\'s default is require_approval', ApprovalSpec()
    )


def test_entry_without_action_allows_the_tool() -> None:
    assert decide(policy(doc({"list": {}})), "list") == Allow('tools["list"]')


def test_action_deny_uses_the_rule_reason() -> None:
    p = policy(doc({"delete_*": {"action": "deny", "reason": "Deletes are done by hand"}}))
    assert decide(p, "delete_user") == Deny('tools["delete_*"]', "Deletes are done by hand")


def test_action_deny_without_reason_says_which_rule_denies() -> None:
    assert decide(policy(doc({"drop": {"action": "deny"}})), "drop") == Deny(
        'tools["drop"]', 'tools["drop"] denies every call to "drop"'
    )


def test_action_require_approval_returns_the_rule_approval_spec() -> None:
    p = policy(
        doc(
            {
                "PostgreSQL_kill_connection": {
                    "action": "require_approval",
                    "reason": "Kills a live database session and aborts its transaction",
                    "approval": {
                        "approvers": ["alice", "group:dba"],
                        "quorum": 1,
                        "timeout": "15m",
                        "channel": "#db-approvals",
                    },
                }
            }
        )
    )
    assert decide(p, "PostgreSQL_kill_connection", pid=4242) == NeedsApproval(
        'tools["PostgreSQL_kill_connection"]',
        "Kills a live database session and aborts its transaction",
        ApprovalSpec(("alice", "group:dba"), 1, 900.0, "#db-approvals", False),
    )


def test_action_require_approval_without_reason_says_a_person_must_approve() -> None:
    decision = decide(policy(doc({"pay": {"action": "require_approval"}})), "pay")
    assert decision == NeedsApproval(
        'tools["pay"]', 'tools["pay"] requires a person to approve every call to "pay"', ApprovalSpec()
    )


# -- evaluation order -------------------------------------------------------------------------------------------------


def test_deny_if_is_checked_before_require_approval() -> None:
    p = policy(
        doc(
            {
                "kill": {
                    "action": "require_approval",
                    "approval": {"approvers": ["alice"]},
                    "deny_if": [{"arg": "pid", "op": "lt", "value": 100}],
                }
            }
        )
    )
    assert decide(p, "kill", pid=5) == Deny('tools["kill"].deny_if[0]', 'argument "pid" is 5, which is lt 100')
    assert isinstance(decide(p, "kill", pid=500), NeedsApproval)


def test_require_is_checked_before_deny_if() -> None:
    p = policy(
        doc(
            {
                "t": {
                    "require": [{"arg": "a", "op": "exists", "value": True}],
                    "deny_if": [{"arg": "b", "op": "eq", "value": 1}],
                }
            }
        )
    )
    assert decide(p, "t", b=1).rule == 'tools["t"].require[0]'
    assert decide(p, "t", a=1, b=1).rule == 'tools["t"].deny_if[0]'


def test_refused_call_consumes_no_budget() -> None:
    p = policy(
        doc(
            {
                "t": {
                    "deny_if": [{"arg": "x", "op": "eq", "value": "bad"}],
                    "limits": [{"counter": "c", "window": "minute", "max": 1}],
                }
            }
        )
    )
    limiter = RateLimiter()
    assert isinstance(decide(p, "t", limiter=limiter, x="bad"), Deny)
    assert isinstance(decide(p, "t", limiter=limiter, x="good"), Allow)
    assert isinstance(decide(p, "t", limiter=limiter, x="good"), RateLimited)


def test_rate_limit_is_checked_before_approval_and_approval_consumes_budget() -> None:
    p = policy(
        doc(
            {
                "t": {
                    "action": "require_approval",
                    "approval": {"approvers": ["alice"]},
                    "limits": [{"counter": "c", "window": "minute", "max": 1}],
                }
            }
        )
    )
    limiter = RateLimiter()
    assert isinstance(decide(p, "t", limiter=limiter), NeedsApproval)
    assert isinstance(decide(p, "t", limiter=limiter), RateLimited)


def test_approve_if_asks_for_approval_when_any_condition_holds() -> None:
    p = policy(
        doc(
            {
                "execute_sql": {
                    "approval": {"approvers": ["alice"]},
                    "approve_if": [
                        {"arg": "sql", "op": "regex", "value": "(?i)\\b(drop|delete|truncate)\\b"},
                        {"arg": "rows", "op": "gt", "value": 1000},
                    ],
                }
            }
        )
    )
    assert decide(p, "execute_sql", sql="select 1", rows=5) == Allow('tools["execute_sql"]')
    decision = decide(p, "execute_sql", sql="select 1", rows=5000)
    assert decision == NeedsApproval(
        'tools["execute_sql"].approve_if[1]',
        'argument "rows" is 5000, which is gt 1000, so a person must approve the call',
        ApprovalSpec(("alice",)),
    )


def test_approve_if_reason_names_the_matching_regex() -> None:
    p = policy(doc({"q": {"approve_if": [{"arg": "sql", "op": "regex", "value": "(?i)drop"}]}}))
    decision = decide(p, "q", sql="DROP TABLE t")
    assert isinstance(decision, NeedsApproval)
    assert decision.reason == (
        'argument "sql" is "DROP TABLE t", which matches regex "(?i)drop", so a person must approve the call'
    )
    assert decision.approval == ApprovalSpec()


# -- ops ---------------------------------------------------------------------------------------------------------------

HOLDS = [
    ("eq", 5, 5),
    ("eq", "a", "a"),
    ("eq", 1.0, 1),
    ("eq", None, None),
    ("ne", 5, 6),
    ("lt", 5, 10),
    ("le", 10, 10),
    ("gt", 11, 10),
    ("ge", 10, 10),
    ("lt", "abc", "abd"),
    ("in", "b", ["a", "b"]),
    ("not_in", "c", ["a", "b"]),
    ("regex", "DROP table", "(?i)drop"),
    ("regex", "xx drop", "drop"),
    ("not_regex", "select", "drop"),
    ("contains", "hello world", "lo w"),
    ("contains", ["10.0.0.1", "10.0.0.2"], "10.0.0.2"),
    ("contains", {"force": True}, "force"),
    ("starts_with", "prod-db", "prod"),
    ("ends_with", "prod-db", "-db"),
]

FAILS = [
    ("eq", 5, 6),
    ("ne", "a", "a"),
    ("lt", 10, 10),
    ("le", 11, 10),
    ("gt", 10, 10),
    ("ge", 9, 10),
    ("in", "c", ["a", "b"]),
    ("not_in", "a", ["a", "b"]),
    ("regex", "select", "drop"),
    ("not_regex", "drop", "drop"),
    ("contains", "hello", "xyz"),
    ("contains", ["a"], "b"),
    ("starts_with", "dev-db", "prod"),
    ("ends_with", "prod-db", "-cache"),
]

# Values the op cannot be applied to: they fail closed.
MISMATCHED = [
    ("eq", "5", 5),
    ("eq", True, 1),
    ("ne", "5", 5),
    ("lt", "5", 100),
    ("lt", True, 100),
    ("gt", None, 1),
    ("ge", [1], 1),
    ("in", "1", [1, 2]),
    ("not_in", 1, ["a", "b"]),
    ("regex", 5, "5"),
    ("not_regex", ["drop"], "drop"),
    ("contains", 5, "5"),
    ("starts_with", 5, "5"),
    ("ends_with", None, "x"),
]


def cond_policy(op: str, value: Any, where: str) -> Policy:
    return policy(doc({"t": {where: [{"arg": "a", "op": op, "value": value}]}}))


@pytest.mark.parametrize(("op", "actual", "value"), HOLDS)
def test_deny_if_denies_when_the_op_holds(op: str, actual: Any, value: Any) -> None:
    assert isinstance(decide(cond_policy(op, value, "deny_if"), "t", a=actual), Deny)


@pytest.mark.parametrize(("op", "actual", "value"), FAILS)
def test_deny_if_allows_when_the_op_does_not_hold(op: str, actual: Any, value: Any) -> None:
    assert isinstance(decide(cond_policy(op, value, "deny_if"), "t", a=actual), Allow)


@pytest.mark.parametrize(("op", "actual", "value"), HOLDS)
def test_require_allows_when_the_op_holds(op: str, actual: Any, value: Any) -> None:
    assert isinstance(decide(cond_policy(op, value, "require"), "t", a=actual), Allow)


@pytest.mark.parametrize(("op", "actual", "value"), FAILS)
def test_require_denies_when_the_op_does_not_hold(op: str, actual: Any, value: Any) -> None:
    assert isinstance(decide(cond_policy(op, value, "require"), "t", a=actual), Deny)


@pytest.mark.parametrize(("op", "actual", "value"), MISMATCHED)
def test_deny_if_fails_closed_on_type_mismatch(op: str, actual: Any, value: Any) -> None:
    decision = decide(cond_policy(op, value, "deny_if"), "t", a=actual)
    assert isinstance(decision, Deny)
    assert "cannot be tested" in decision.reason


@pytest.mark.parametrize(("op", "actual", "value"), MISMATCHED)
def test_require_fails_closed_on_type_mismatch(op: str, actual: Any, value: Any) -> None:
    decision = decide(cond_policy(op, value, "require"), "t", a=actual)
    assert isinstance(decision, Deny)
    assert decision.reason.endswith("(required by require[0])")


@pytest.mark.parametrize(("op", "actual", "value"), MISMATCHED)
def test_approve_if_fails_closed_on_type_mismatch(op: str, actual: Any, value: Any) -> None:
    assert isinstance(decide(cond_policy(op, value, "approve_if"), "t", a=actual), NeedsApproval)


@pytest.mark.parametrize("where", ["deny_if", "approve_if"])
def test_missing_argument_counts_as_holding_for_deny_if_and_approve_if(where: str) -> None:
    decision = decide(cond_policy("lt", 100, where), "t")
    assert not isinstance(decision, Allow)
    assert decision.reason == f'argument "a" is missing, so {where}[0] (is lt 100) counts as met' + (  # type: ignore[union-attr]
        ", so a person must approve the call" if where == "approve_if" else ""
    )


def test_missing_argument_fails_require() -> None:
    assert decide(cond_policy("eq", 1, "require"), "t") == Deny(
        'tools["t"].require[0]', 'argument "a" is missing (required by require[0])'
    )


def test_exists_true_and_false() -> None:
    present = cond_policy("exists", True, "require")
    assert isinstance(decide(present, "t", a=None), Allow)
    assert isinstance(decide(present, "t"), Deny)
    absent = cond_policy("exists", False, "require")
    assert isinstance(decide(absent, "t"), Allow)
    assert decide(absent, "t", a=1) == Deny(
        'tools["t"].require[0]', 'argument "a" is present, but require[0] requires it to be absent'
    )


def test_exists_false_in_deny_if_denies_a_missing_argument() -> None:
    p = cond_policy("exists", False, "deny_if")
    assert decide(p, "t") == Deny('tools["t"].deny_if[0]', 'argument "a" is absent, which deny_if[0] forbids')
    assert isinstance(decide(p, "t", a="x"), Allow)


def test_exists_without_value_means_present() -> None:
    p = policy(doc({"t": {"require": [{"arg": "a", "op": "exists"}]}}))
    assert isinstance(decide(p, "t", a=1), Allow)
    assert isinstance(decide(p, "t"), Deny)


def test_dotted_arg_path_reaches_into_objects_and_lists() -> None:
    p = policy(doc({"t": {"deny_if": [{"arg": "target.ips.1", "op": "starts_with", "value": "10."}]}}))
    assert isinstance(decide(p, "t", target={"ips": ["1.1.1.1", "10.0.0.1"]}), Deny)
    assert isinstance(decide(p, "t", target={"ips": ["1.1.1.1", "8.8.8.8"]}), Allow)
    # Index past the end, or a path through a scalar, is a missing argument: deny_if fails closed.
    assert isinstance(decide(p, "t", target={"ips": ["1.1.1.1"]}), Deny)
    assert isinstance(decide(p, "t", target="10.0.0.1"), Deny)


def test_require_reason_says_what_the_value_should_be() -> None:
    p = policy(doc({"t": {"require": [{"arg": "env", "op": "in", "value": ["dev", "staging"]}]}}))
    assert decide(p, "t", env="prod") == Deny(
        'tools["t"].require[0]', 'argument "env" is "prod", but require[0] requires that it be in ["dev", "staging"]'
    )


def test_rule_reason_replaces_the_generated_condition_reason() -> None:
    p = policy(doc({"t": {"reason": "Only small refunds", "deny_if": [{"arg": "amount", "op": "gt", "value": 100}]}}))
    assert decide(p, "t", amount=500) == Deny('tools["t"].deny_if[0]', "Only small refunds")


def test_redacted_argument_value_is_not_shown_in_reasons() -> None:
    p = policy(
        doc(
            {
                "login": {
                    "redact": ["credentials.password"],
                    "deny_if": [{"arg": "credentials.password", "op": "regex", "value": "^hunter"}],
                }
            }
        )
    )
    decision = decide(p, "login", credentials={"password": "hunter2"})
    assert isinstance(decision, Deny)
    assert "hunter2" not in decision.reason
    assert decision.reason == 'argument "credentials.password" is [redacted], which matches regex "^hunter"'


def test_rule_exposes_redact_paths() -> None:
    p = policy(doc({"login": {"redact": ["password", "token.value"]}}))
    found = rule_for(p, "login")
    assert found is not None
    assert found.redact == ("password", "token.value")


# -- never raises -----------------------------------------------------------------------------------------------------


def test_evaluate_fails_closed_instead_of_raising_on_odd_arguments() -> None:
    class Weird(dict[str, Any]):
        def get(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("boom")

    p = policy(doc({"t": {"deny_if": [{"arg": "a", "op": "eq", "value": 1}]}}))
    decision = evaluate(p, ToolCall("s", "t", Weird(), "me"), RateLimiter(), T0)
    assert isinstance(decision, Deny)
    assert decision.rule == "error"


def test_hand_built_policy_with_bad_regex_fails_closed() -> None:
    from policies import Condition

    p = Policy(default=Action.ALLOW, rules=(Rule("t", deny_if=(Condition("a", "regex", "("),)),))
    assert isinstance(evaluate(p, call("t", a="x"), RateLimiter(), T0), Deny)


def test_resolution_cache_stays_bounded() -> None:
    p = policy(doc({"get_*": {}}))
    for i in range(10_000):
        decide(p, f"get_{i}")
    assert len(p.resolved) <= 4096


def test_arguments_may_be_any_mapping_with_tuples_inside() -> None:
    from types import MappingProxyType

    p = policy(doc({"t": {"deny_if": [{"arg": "ips.0", "op": "in", "value": ["10.0.0.1"]}]}}))
    arguments = MappingProxyType({"ips": ("10.0.0.1",)})
    assert isinstance(evaluate(p, ToolCall("s", "t", arguments, "me"), RateLimiter(), T0), Deny)
    arguments = MappingProxyType({"ips": ("8.8.8.8",)})
    assert isinstance(evaluate(p, ToolCall("s", "t", arguments, "me"), RateLimiter(), T0), Allow)


def test_long_argument_values_are_shortened_in_reasons() -> None:
    p = policy(doc({"q": {"deny_if": [{"arg": "sql", "op": "contains", "value": "drop"}]}}))
    decision = decide(p, "q", sql="drop " + "x" * 500)
    assert isinstance(decision, Deny)
    assert len(decision.reason) < 200
    assert "…" in decision.reason


def test_default_require_approval_is_rate_limited_by_all_tools_limits() -> None:
    p = policy(
        {
            "version": "1",
            "default": "require_approval",
            "all_tools": {"limits": [{"counter": "all", "window": "minute", "max": 1, "scope": "global"}]},
        }
    )
    limiter = RateLimiter()
    assert isinstance(decide(p, "x", limiter=limiter), NeedsApproval)
    decision = decide(p, "y", limiter=limiter)
    assert isinstance(decision, RateLimited)
    assert decision.rule == "all_tools.limits[0]"
