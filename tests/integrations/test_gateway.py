"""The gateway over loopback: the seed policies against the demo upstream, limits, supervision, audit."""

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp_types import CallToolResult, TextContent

from tests.conftest import OTHER_TOKEN

pytestmark = pytest.mark.anyio

CATALOG = Path(__file__).resolve().parents[2] / "policies" / "catalog"
DEMO = [sys.executable, "-m", "integrations.demo"]
SEEDS = {
    "livetap": ("destroy_connection", {"connection_id": "conn-1"}),
    "leapfrog": ("session_destroy", {"session_id": "sess-1"}),
}
LIMITED = {
    "pusher-channels": ("terminate_user_connections", {"user_id": "nobody"}, 30),
    "postgres": ("PostgreSQL_kill_connection", {"pid": 999999}, 10),
    "remnawave": ("ip_control_drop_connections", {"ips": ["192.0.2.1"]}, 10),
}


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def decision(result: CallToolResult) -> dict[str, Any] | None:
    return (result.meta or {}).get("signoff/decision")


def demo_with(policy: str) -> list[dict[str, Any]]:
    return [{"name": "demo", "command": DEMO, "policy": str(CATALOG / f"{policy}.json")}]


@pytest.mark.parametrize("seed", sorted(SEEDS))
async def test_hide_seed_removes_the_tool_from_the_list_and_denies_calls_to_it(
    signoff: Any, seed: str, mode: str
) -> None:
    tool, arguments = SEEDS[seed]
    async with signoff(demo_with(seed)) as running, running.client("demo", mode=mode) as client:
        with anyio.fail_after(20):
            listed = [t.name for t in (await client.list_tools()).tools]
            hidden = await client.call_tool(tool, arguments)
            other = await client.call_tool("list_connections", {})
        rows = await running.audit()

    assert tool not in listed
    assert "list_connections" in listed  # PolicyLayer's meaning: hide removes only what it names
    assert hidden.is_error
    assert f'no tool "{tool}"' in text(hidden)
    assert decision(hidden) == {
        "tool": tool,
        "rule": f'hide["{tool}"]',
        "policy_version": rows[0].policy_version,
        "outcome": "hidden",
        "reason": "hidden by policy",
    }
    assert other.is_error
    assert "default is deny" in text(other)
    assert [(r.kind, r.tool) for r in rows[1:]] == [("hidden", tool), ("denied", "list_connections")]


@pytest.mark.parametrize("seed", sorted(LIMITED))
async def test_limit_seed_allows_max_calls_in_any_minute_and_says_exactly_when_to_retry(
    signoff: Any, seed: str
) -> None:
    tool, arguments, limit = LIMITED[seed]
    start = 1_800_000_000.0 + 15  # 15 s into a minute: where the minute turns changes nothing
    clock = Clock(start)
    async with signoff(demo_with(seed), clock=clock) as running, running.client("demo") as client:
        with anyio.fail_after(30):
            results = []
            for i in range(limit + 1):  # one a second
                clock.now = start + i
                results.append(await client.call_tool(tool, arguments))
            other = await client.call_tool("list_connections", {})
            clock.now = start + 59.5  # past the turn of the minute, but the first call is still within 60 s
            still = await client.call_tool(tool, arguments)
            clock.now = start + 60  # the first call leaves the window
            after = await client.call_tool(tool, arguments)
        rows = await running.audit()

    assert all(decision(r) is None for r in results[:limit])  # every call within the budget reached the upstream
    refused = decision(results[limit])
    assert refused is not None
    assert refused["outcome"] == "rate_limited"
    assert refused["retry_after"] == 60 - limit
    assert f"retry in {60 - limit}s" in text(results[limit])
    assert decision(other) is not None and decision(other)["outcome"] == "denied"  # type: ignore[index]
    assert decision(still) is not None and decision(still)["retry_after"] == 0.5  # type: ignore[index]
    assert decision(after) is None
    kinds = [r.kind for r in rows if r.tool == tool]
    assert kinds == ["allowed"] * limit + ["rate_limited", "rate_limited", "allowed"]


async def test_grant_scope_gives_each_agent_its_own_budget(signoff: Any) -> None:
    policy = {
        "version": "1",
        "default": "deny",
        "tools": {"list_connections": {"limits": [{"counter": "reads", "window": "hour", "max": 1, "scope": "grant"}]}},
    }
    servers = [{"name": "demo", "command": DEMO, "policy": policy}]
    async with signoff(servers, clock=Clock()) as running:
        with anyio.fail_after(20):
            async with running.client("demo") as alpha:
                first = await alpha.call_tool("list_connections", {})
                second = await alpha.call_tool("list_connections", {})
            async with running.client("demo", token=OTHER_TOKEN) as bravo:
                other_agent = await bravo.call_tool("list_connections", {})

    assert not first.is_error
    assert decision(second) is not None
    assert not other_agent.is_error


async def test_demo_policy_lets_reads_through_and_refuses_what_it_should(signoff: Any, mode: str) -> None:
    async with signoff(demo_with("demo")) as running, running.client("demo", mode=mode) as client:
        with anyio.fail_after(20):
            before = text(await client.call_tool("list_connections", {}))
            system_pid = await client.call_tool("kill_connection", {"pid": 87})
            killed = await client.call_tool("kill_connection", {"pid": 4121})
            after = text(await client.call_tool("list_connections", {}))
            risky_sql = await client.call_tool("execute_sql", {"sql": "DROP TABLE users"})

    assert "conn-1" in before and "conn-1" not in after
    assert system_pid.is_error and 'tools["kill_connection"].deny_if[0]' in text(system_pid)
    assert "Terminated conn-1" in text(killed)
    assert risky_sql.is_error and "requires human approval" in text(risky_sql)


async def test_crashed_stdio_upstream_fails_the_call_in_flight_and_is_restarted(signoff: Any, mode: str) -> None:
    servers = [
        {
            "name": "crashy",
            "command": [sys.executable, "-m", "tests.fakes.crashy"],
            "policy": {"version": "1", "default": "allow"},
        }
    ]
    async with signoff(servers) as running, running.client("crashy", mode=mode) as client:
        with anyio.fail_after(30):
            first_pid = (await client.call_tool("pid", {})).structured_content
            crashed = await client.call_tool("crash", {})
            async with httpx2.AsyncClient() as http:
                # a bounded poll of what an operator would watch: /healthz, under the fail_after above
                while not (await http.get(f"{running.url}/healthz")).json()["servers"]["crashy"]["ready"]:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
                health = (await http.get(f"{running.url}/healthz")).json()["servers"]["crashy"]
            echoed = await client.call_tool("echo", {"text": "still here"})
            second_pid = (await client.call_tool("pid", {})).structured_content
        rows = await running.audit()

    assert crashed.is_error
    assert "exited with code 3" in text(crashed)
    assert decision(crashed) is not None and decision(crashed)["outcome"] == "upstream_failure"  # type: ignore[index]
    assert health["restarts"] == 1
    assert text(echoed) == "still here"
    assert first_pid != second_pid
    assert [r.outcome for r in rows if r.tool == "crash"] == ["upstream_failure"]


async def test_audit_rows_record_arguments_digest_and_policy_version(signoff: Any) -> None:
    policy = {
        "version": "1",
        "default": "allow",
        "tools": {"get_connection": {"redact": ["connection_id"]}},
    }
    async with signoff([{"name": "demo", "command": DEMO, "policy": policy}]) as running:
        async with running.client("demo") as client:
            with anyio.fail_after(20):
                await client.call_tool("get_connection", {"connection_id": "conn-2"})
        rows = await running.audit()

    loaded, call = rows
    assert loaded.kind == "policy_loaded" and loaded.server == "demo"
    assert call.kind == "allowed" and call.identity == "alpha" and call.outcome == "ok"
    assert call.policy_version == loaded.policy_version
    assert json.loads(call.arguments or "{}") == {"connection_id": "[redacted]"}
    assert len(call.args_digest) == 64
    assert call.latency_ms is not None and call.latency_ms > 0
