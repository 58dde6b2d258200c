"""Micro-benchmark of policies.evaluate with a 1,000-rule policy mixing exact names and globs.

Run: python bench/bench_policy.py [--runs 7] [--calls 20000]
Prints the median microseconds per evaluate over the runs, for each kind of call. Target: under 20 µs.
"""

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from policies import Allow, Deny, NeedsApproval, Policy, RateLimiter, ToolCall, evaluate, load_policy

NOW = 1_700_000_040.0


def big_policy(rules: int = 1000) -> Policy:
    tools: dict[str, Any] = {}
    for i in range(rules // 2):
        tools[f"service{i}_get_item"] = {}
    for i in range(rules // 2 - 2):
        tools[f"service{i}_delete_*"] = {"action": "deny", "reason": "Deletes are done by hand"}
    tools["execute_sql"] = {
        "require": [{"arg": "sql", "op": "exists", "value": True}],
        "deny_if": [{"arg": "db", "op": "in", "value": ["prod-primary", "billing"]}],
        "approve_if": [{"arg": "sql", "op": "regex", "value": "(?i)\\b(drop|delete|truncate)\\b"}],
        "approval": {"approvers": ["alice", "group:dba"]},
    }
    tools["kill_connection"] = {
        "deny_if": [{"arg": "pid", "op": "lt", "value": 100}],
        "limits": [{"counter": "kill_rate", "window": "minute", "max": 1_000_000_000, "scope": "grant"}],
    }
    doc = {"version": "1", "default": "deny", "hide": ["debug_*", "session_destroy"], "tools": tools}
    policy = load_policy(json.dumps(doc))
    assert len(policy.rules) == rules
    return policy


def per_call_us(fn: Callable[[], object], calls: int, runs: int) -> str:
    """Median (and best) microseconds per call over `runs` runs of `calls` calls."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return f"{statistics.median(samples):6.2f} µs/call (best {min(samples):5.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()

    policy = big_policy()
    limiter = RateLimiter()

    def case(tool: str, arguments: dict[str, Any], expected: type) -> Callable[[], object]:
        call = ToolCall("srv", tool, arguments, "agent-1")
        first = evaluate(policy, call, limiter, NOW)
        assert isinstance(first, expected), (tool, first)
        return lambda: evaluate(policy, call, limiter, NOW)

    cases = {
        "exact hit (allow)": case("service250_get_item", {}, Allow),
        "glob hit (deny, 498 globs)": case("service3_delete_everything", {}, Deny),
        "default miss (deny)": case("nothing_matches_this", {}, Deny),
        "conditions: require+deny_if+regex approve_if": case(
            "execute_sql", {"sql": "DROP TABLE users", "db": "analytics"}, NeedsApproval
        ),
        "conditions + rate limit (allow)": case("kill_connection", {"pid": 4242}, Allow),
    }
    print(f"policy: {len(policy.rules)} rules; median of {args.runs} runs x {args.calls} calls")
    for name, fn in cases.items():
        print(f"  {name:48s} {per_call_us(fn, args.calls, args.runs)}")

    # Uncached: a fresh tool name every call, so the combined glob regex runs each time.
    counter = iter(range(10**9))

    def cold_miss() -> object:
        call = ToolCall("srv", f"nothing_{next(counter)}", {}, "agent-1")
        return evaluate(policy, call, limiter, NOW)

    def cold_glob() -> object:
        call = ToolCall("srv", f"service1_delete_{next(counter)}", {}, "agent-1")
        return evaluate(policy, call, limiter, NOW)

    for name, fn in [
        ("uncached default miss (new name each call)", cold_miss),
        ("uncached glob hit (new name each call)", cold_glob),
    ]:
        print(f"  {name:48s} {per_call_us(fn, args.calls, args.runs)}")

    start = time.perf_counter()
    big_policy()
    print(f"load + compile of the 1,000-rule policy: {(time.perf_counter() - start) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
