from typing import Any

import pytest

from policies import Allow, DeferredLimits, Limit, RateLimited, RateLimiter, Scope, ToolCall, evaluate
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


def test_a_call_counts_for_exactly_one_window_after_it_was_admitted_wherever_the_clock_is() -> None:
    p = policy(limit_doc("grant", max_calls=1))
    limiter = RateLimiter()
    assert isinstance(evaluate(p, call("a"), limiter, T0 + 59), Allow)
    decision = evaluate(p, call("a"), limiter, T0 + 60)  # a fixed window would have started afresh here
    assert isinstance(decision, RateLimited)
    assert decision.retry_after == pytest.approx(59.0)
    assert decision.reason.endswith("retry in 59s")
    assert isinstance(evaluate(p, call("a"), limiter, T0 + 118.75), RateLimited)
    assert isinstance(evaluate(p, call("a"), limiter, T0 + 119), Allow)  # exactly retry_after later


def test_no_span_of_window_seconds_ever_holds_more_than_max_calls() -> None:
    p = policy(
        {"version": "1", "default": "deny", "tools": {"a": {"limits": [{"counter": "c", "window": 10, "max": 3}]}}}
    )
    limiter = RateLimiter()
    start = T0 + 9.7  # just before a multiple of 10, where fixed windows let a second burst through
    attempts = [start + i * 0.1 for i in range(300)]  # 30 s of calls, ten a second
    admitted = [t for t in attempts if isinstance(evaluate(p, call("a"), limiter, t), Allow)]
    assert admitted[:4] == pytest.approx([start, start + 0.1, start + 0.2, start + 10.0])
    for t in attempts:  # every span [t, t + 10) holds at most 3, and a refused call had 3 in the 10 s before it
        assert sum(1 for a in admitted if t <= a < t + 10 - 1e-9) <= 3
    for t in set(attempts) - set(admitted):
        assert sum(1 for a in admitted if t - 10 + 1e-9 < a <= t) == 3


def test_retry_after_is_when_the_oldest_entry_that_must_leave_does() -> None:
    limit = Limit("c", 10.0, 3, Scope.GRANT)
    limiter = RateLimiter()
    for offset in (0.0, 2.0, 5.0):
        assert limiter.try_acquire(call("a"), [("l", limit)], T0 + offset) is None
    assert limiter.try_acquire(call("a"), [("l", limit)], T0 + 6) == ("l", limit, 4.0)
    assert limiter.remaining(call("a"), limit, T0 + 6) == 0
    assert limiter.try_acquire(call("a"), [("l", limit)], T0 + 10) is None  # the entry at T0 left
    assert limiter.try_acquire(call("a"), [("l", limit)], T0 + 10.5) == ("l", limit, 1.5)
    assert limiter.remaining(call("a"), limit, T0 + 12) == 1


def test_deferred_limits_admit_and_remember_what_the_call_reached_and_nothing_for_a_refused_call() -> None:
    doc = limit_doc("grant", max_calls=1)
    doc["tools"]["a"]["deny_if"] = [{"arg": "x", "op": "eq", "value": "bad"}]
    p = policy(doc)
    reached = DeferredLimits()
    assert isinstance(evaluate(p, call("a", x="good"), reached, T0), Allow)
    assert isinstance(evaluate(p, call("a", x="good"), reached, T0), Allow)  # it counts nothing itself
    assert reached.limits == (('tools["a"].limits[0]', Limit("c", 60.0, 1, Scope.GRANT)),)
    denied = DeferredLimits()
    assert evaluate(p, call("a", x="bad"), denied, T0).rule == 'tools["a"].deny_if[0]'
    assert denied.limits == ()


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


def test_limiter_keeps_one_key_and_only_the_entries_within_its_window() -> None:
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
