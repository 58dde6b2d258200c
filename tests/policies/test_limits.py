from typing import Any

import pytest

from policies import Allow, Limit, RateLimited, RateLimiter, Scope, ToolCall, evaluate
from policies.limits import describe_limit, format_seconds
from tests.policies.helpers import T0, call, policy


def limit_doc(scope: str, *, max_calls: int = 2, counter: str = "c") -> dict[str, Any]:
    limit = {"counter": counter, "window": "minute", "max": max_calls, "scope": scope}
    return {"version": "1", "default": "deny", "tools": {"a": {"limits": [limit]}, "b": {"limits": [limit]}}}


def run(limiter: RateLimiter, doc: dict[str, Any], tool: str, identity: str, server: str, now: float = T0) -> object:
    return evaluate(policy(doc), ToolCall(server, tool, {}, identity), limiter, now)


def test_grant_scope_counts_per_identity_per_server() -> None:
    limiter, doc = RateLimiter(), limit_doc("grant")
    assert isinstance(run(limiter, doc, "a", "alice", "s1"), Allow)
    assert isinstance(run(limiter, doc, "a", "alice", "s1"), Allow)
    assert isinstance(run(limiter, doc, "a", "alice", "s1"), RateLimited)
    assert isinstance(run(limiter, doc, "a", "alice", "s2"), Allow)
    assert isinstance(run(limiter, doc, "a", "bob", "s1"), Allow)


def test_agent_scope_counts_per_identity_across_servers() -> None:
    limiter, doc = RateLimiter(), limit_doc("agent")
    assert isinstance(run(limiter, doc, "a", "alice", "s1"), Allow)
    assert isinstance(run(limiter, doc, "a", "alice", "s2"), Allow)
    assert isinstance(run(limiter, doc, "a", "alice", "s3"), RateLimited)
    assert isinstance(run(limiter, doc, "a", "bob", "s1"), Allow)


def test_global_scope_counts_every_identity_and_server_together() -> None:
    limiter, doc = RateLimiter(), limit_doc("global")
    assert isinstance(run(limiter, doc, "a", "alice", "s1"), Allow)
    assert isinstance(run(limiter, doc, "a", "bob", "s2"), Allow)
    decision = run(limiter, doc, "a", "carol", "s3")
    assert isinstance(decision, RateLimited)
    assert decision.reason == 'counter "c" allows 2 calls per minute for all agents together; retry in 1m'


def test_tools_sharing_a_counter_share_the_budget() -> None:
    limiter, doc = RateLimiter(), limit_doc("grant")
    assert isinstance(run(limiter, doc, "a", "alice", "s"), Allow)
    assert isinstance(run(limiter, doc, "b", "alice", "s"), Allow)
    decision = run(limiter, doc, "a", "alice", "s")
    assert isinstance(decision, RateLimited)
    assert decision.counter == "c"


def test_agent_scope_reason_says_across_all_servers() -> None:
    limiter, doc = RateLimiter(), limit_doc("agent", max_calls=1)
    run(limiter, doc, "a", "alice", "s")
    decision = run(limiter, doc, "a", "alice", "s", now=T0 + 30)
    assert isinstance(decision, RateLimited)
    assert decision.reason == 'counter "c" allows 1 call per minute per agent across all servers; retry in 30s'


def test_all_tools_limits_apply_to_every_tool_and_to_the_default() -> None:
    p = policy(
        {
            "version": "1",
            "default": "allow",
            "all_tools": {"limits": [{"counter": "all", "window": "hour", "max": 3, "scope": "grant"}]},
            "tools": {"x": {}},
        }
    )
    limiter = RateLimiter()
    assert isinstance(evaluate(p, call("x"), limiter, T0), Allow)
    assert isinstance(evaluate(p, call("y"), limiter, T0), Allow)
    assert evaluate(p, call("z"), limiter, T0) == Allow("default")
    decision = evaluate(p, call("x"), limiter, T0)
    assert isinstance(decision, RateLimited)
    assert decision.rule == "all_tools.limits[0]"
    assert decision.counter == "all"


def test_all_tools_and_rule_limits_are_consumed_only_when_both_have_room() -> None:
    p = policy(
        {
            "version": "1",
            "default": "deny",
            "all_tools": {"limits": [{"counter": "all", "window": "minute", "max": 3}]},
            "tools": {
                "x": {"limits": [{"counter": "x", "window": "minute", "max": 1}]},
                "y": {},
            },
        }
    )
    limiter = RateLimiter()
    assert isinstance(evaluate(p, call("x"), limiter, T0), Allow)
    refused = evaluate(p, call("x"), limiter, T0)
    assert isinstance(refused, RateLimited)
    assert refused.rule == 'tools["x"].limits[0]'
    # The refused call did not spend the shared budget: two more calls of y still fit in "all".
    assert isinstance(evaluate(p, call("y"), limiter, T0), Allow)
    assert isinstance(evaluate(p, call("y"), limiter, T0), Allow)
    assert isinstance(evaluate(p, call("y"), limiter, T0), RateLimited)


def test_window_starts_at_a_multiple_of_its_length_and_retry_after_runs_to_its_end() -> None:
    p = policy(limit_doc("grant", max_calls=1))
    limiter = RateLimiter()
    assert isinstance(evaluate(p, call("a"), limiter, T0 + 59), Allow)
    assert isinstance(evaluate(p, call("a"), limiter, T0 + 60), Allow)
    decision = evaluate(p, call("a"), limiter, T0 + 60.25)
    assert isinstance(decision, RateLimited)
    assert decision.retry_after == pytest.approx(59.75)
    assert decision.reason.endswith("retry in 1m")


def test_numeric_window_in_seconds() -> None:
    p = policy(
        {"version": "1", "default": "deny", "tools": {"a": {"limits": [{"counter": "c", "window": 90, "max": 1}]}}}
    )
    limiter = RateLimiter()
    start = 1_700_000_010.0  # a multiple of 90
    assert isinstance(evaluate(p, call("a"), limiter, start), Allow)
    decision = evaluate(p, call("a"), limiter, start + 10)
    assert isinstance(decision, RateLimited)
    assert decision.retry_after == pytest.approx(80)
    assert decision.reason == 'counter "c" allows 1 call per 90 seconds per agent on this server; retry in 1m 20s'
    assert isinstance(evaluate(p, call("a"), limiter, start + 90), Allow)


def test_policylayer_rate_limit_is_one_grant_limit_named_after_the_tool() -> None:
    p = policy({"version": "1", "default": "deny", "tools": {"send": {"rate_limit": {"max": 2, "window": 60}}}})
    rule = p.rules[0]
    assert rule.rate_limit == Limit("send_rate", 60.0, 2, Scope.GRANT)
    limiter = RateLimiter()
    assert isinstance(evaluate(p, call("send"), limiter, T0), Allow)
    assert isinstance(evaluate(p, call("send", identity="other"), limiter, T0), Allow)
    assert isinstance(evaluate(p, call("send"), limiter, T0), Allow)
    decision = evaluate(p, call("send"), limiter, T0)
    assert decision == RateLimited(
        'tools["send"].rate_limit',
        "send_rate",
        60.0,
        'counter "send_rate" allows 2 calls per minute per agent on this server; retry in 1m',
    )


def test_limiter_keeps_only_the_current_window_per_key() -> None:
    limiter = RateLimiter()
    limit = Limit("c", 1.0, 5, Scope.GRANT)
    for second in range(1000):
        limiter.try_acquire(call("a"), [("l", limit)], T0 + second)
    assert limiter.key_count == 1
    assert limiter.remaining(call("a"), limit, T0 + 999) == 4


def test_prune_forgets_counters_whose_window_ended() -> None:
    limiter = RateLimiter()
    limit = Limit("c", 60.0, 5, Scope.GRANT)
    for i in range(50):
        limiter.try_acquire(call("a", identity=f"agent-{i}"), [("l", limit)], T0)
    assert limiter.key_count == 50
    limiter.prune(T0 + 30)
    assert limiter.key_count == 50
    limiter.prune(T0 + 60)
    assert limiter.key_count == 0


def test_same_counter_named_twice_in_one_call_counts_once() -> None:
    limiter = RateLimiter()
    limit = Limit("c", 60.0, 1, Scope.GLOBAL)
    assert limiter.try_acquire(call("a"), [("x", limit), ("y", limit)], T0) is None
    assert limiter.try_acquire(call("a"), [("x", limit)], T0) == ("x", limit, 60.0)


def test_describe_limit_and_wait_formatting() -> None:
    assert format_seconds(0.2) == "1s"
    assert format_seconds(12) == "12s"
    assert format_seconds(120) == "2m"
    assert format_seconds(3720) == "1h 2m"
    assert describe_limit(Limit("x_rate", 86400.0, 10, Scope.GRANT), 7200) == (
        'counter "x_rate" allows 10 calls per day per agent on this server; retry in 2h'
    )
