import json

import pytest

from policies import Allow, Deny, Hidden, NeedsApproval, RateLimited, RateLimiter, check_policy, evaluate, is_hidden
from tests.policies.helpers import CATALOG, T0, call, catalog

SEEDS = {
    "livetap": {"version": "1", "default": "deny", "hide": ["destroy_connection"]},
    "leapfrog": {"version": "1", "default": "deny", "hide": ["session_destroy"]},
    "pusher-channels": {
        "version": "1",
        "default": "deny",
        "tools": {
            "terminate_user_connections": {
                "limits": [
                    {"counter": "terminate_user_connections_rate", "window": "minute", "max": 30, "scope": "grant"}
                ]
            }
        },
    },
    "postgres": {
        "version": "1",
        "default": "deny",
        "tools": {
            "PostgreSQL_kill_connection": {
                "limits": [
                    {"counter": "postgresql_kill_connection_rate", "window": "minute", "max": 10, "scope": "grant"}
                ]
            }
        },
    },
    "remnawave": {
        "version": "1",
        "default": "deny",
        "tools": {
            "ip_control_drop_connections": {
                "limits": [
                    {"counter": "ip_control_drop_connections_rate", "window": "minute", "max": 10, "scope": "grant"}
                ]
            }
        },
    },
}

RATE_LIMITED_SEEDS = [
    ("pusher-channels", "terminate_user_connections", "terminate_user_connections_rate", 30),
    ("postgres", "PostgreSQL_kill_connection", "postgresql_kill_connection_rate", 10),
    ("remnawave", "ip_control_drop_connections", "ip_control_drop_connections_rate", 10),
]


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_catalog_file_holds_the_seed_policy_verbatim(name: str) -> None:
    assert json.loads((CATALOG / f"{name}.json").read_text()) == SEEDS[name]


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_loads_without_errors(name: str) -> None:
    faults = check_policy((CATALOG / f"{name}.json").read_text())
    assert [f for f in faults if f.severity == "error"] == []
    assert len(catalog(name).digest) == 16


@pytest.mark.parametrize(("name", "tool"), [("livetap", "destroy_connection"), ("leapfrog", "session_destroy")])
def test_hide_only_seed_hides_its_tool_and_denies_everything_else(name: str, tool: str) -> None:
    p = catalog(name)
    limiter = RateLimiter()
    assert is_hidden(p, tool)
    assert evaluate(p, call(tool), limiter, T0) == Hidden(f'hide["{tool}"]')
    assert not is_hidden(p, "list_connections")
    assert evaluate(p, call("list_connections"), limiter, T0) == Deny(
        "default", 'no rule allows "list_connections" and the policy\'s default is deny'
    )


@pytest.mark.parametrize("name", ["livetap", "leapfrog"])
def test_hide_only_seed_warns_that_it_allows_nothing(name: str) -> None:
    faults = check_policy((CATALOG / f"{name}.json").read_text())
    assert [(f.path, f.severity, f.message) for f in faults] == [
        ("$", "warning", "default is deny and no rule allows any tool: this policy allows nothing")
    ]


@pytest.mark.parametrize(("name", "tool", "counter", "most"), RATE_LIMITED_SEEDS)
def test_rate_limited_seed_allows_exactly_max_calls_per_minute_then_again_next_minute(
    name: str, tool: str, counter: str, most: int
) -> None:
    p = catalog(name)
    limiter = RateLimiter()
    locator = f'tools["{tool}"]'
    for i in range(most):
        assert evaluate(p, call(tool), limiter, T0 + i * 0.5) == Allow(locator)
    refused = evaluate(p, call(tool), limiter, T0 + 48)
    assert isinstance(refused, RateLimited)
    assert refused.rule == f"{locator}.limits[0]"
    assert refused.counter == counter
    assert refused.retry_after == pytest.approx(12.0)
    assert refused.reason == (
        f'counter "{counter}" allows {most} calls per minute per agent on this server; retry in 12s'
    )
    assert evaluate(p, call(tool), limiter, T0 + 60) == Allow(locator)


@pytest.mark.parametrize(("name", "tool", "counter", "most"), RATE_LIMITED_SEEDS)
def test_rate_limited_seed_denies_every_other_tool_by_default(name: str, tool: str, counter: str, most: int) -> None:
    decision = evaluate(catalog(name), call("something_else"), RateLimiter(), T0)
    assert decision == Deny("default", 'no rule allows "something_else" and the policy\'s default is deny')


@pytest.mark.parametrize(("name", "tool", "counter", "most"), RATE_LIMITED_SEEDS)
def test_rate_limited_seed_counts_each_agent_separately(name: str, tool: str, counter: str, most: int) -> None:
    p = catalog(name)
    limiter = RateLimiter()
    for _ in range(most):
        evaluate(p, call(tool, identity="a"), limiter, T0)
    assert isinstance(evaluate(p, call(tool, identity="a"), limiter, T0), RateLimited)
    assert isinstance(evaluate(p, call(tool, identity="b"), limiter, T0), Allow)


def test_demo_policy_allows_reads_hides_destructive_tools_and_denies_the_rest() -> None:
    p = catalog("demo")
    limiter = RateLimiter()
    assert evaluate(p, call("list_connections"), limiter, T0) == Allow('tools["list_connections"]')
    assert evaluate(p, call("get_connection", id="c1"), limiter, T0) == Allow('tools["get_connection"]')
    assert is_hidden(p, "destroy_connection")
    assert is_hidden(p, "session_destroy")
    assert isinstance(evaluate(p, call("unknown_tool"), limiter, T0), Deny)


def test_demo_policy_refuses_to_kill_system_pids_with_its_reason() -> None:
    p = catalog("demo")
    decision = evaluate(p, call("kill_connection", pid=5), RateLimiter(), T0)
    assert isinstance(decision, Deny)
    assert decision.rule == 'tools["kill_connection"].deny_if[0]'
    assert "PIDs below 100" in decision.reason
    assert evaluate(p, call("kill_connection", pid=4242), RateLimiter(), T0) == Allow('tools["kill_connection"]')


def test_demo_policy_limits_kill_connection_to_ten_a_minute() -> None:
    p = catalog("demo")
    limiter = RateLimiter()
    outcomes = [evaluate(p, call("kill_connection", pid=500 + i), limiter, T0) for i in range(11)]
    assert all(isinstance(d, Allow) for d in outcomes[:10])
    assert isinstance(outcomes[10], RateLimited)


def test_demo_policy_sends_destructive_sql_for_approval_and_runs_selects() -> None:
    p = catalog("demo")
    limiter = RateLimiter()
    assert evaluate(p, call("execute_sql", sql="select 1"), limiter, T0) == Allow('tools["execute_sql"]')
    decision = evaluate(p, call("execute_sql", sql="DROP TABLE users"), limiter, T0)
    assert isinstance(decision, NeedsApproval)
    assert decision.rule == 'tools["execute_sql"].approve_if[0]'
    missing = evaluate(p, call("execute_sql"), limiter, T0)
    assert missing == Deny('tools["execute_sql"].require[0]', 'argument "sql" is missing (required by require[0])')
