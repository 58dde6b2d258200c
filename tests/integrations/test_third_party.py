"""Real third-party MCP servers behind signoff, over stdio, as a user would configure them.

`mcp-server-time` comes from PyPI (a test dependency in pyproject) and runs under this interpreter.
`@modelcontextprotocol/server-memory` comes from npm through `npx`, pinned to one version; the module
fixture fetches it into npm's cache once (network on the first run only) and the tests skip when
`npx` is not installed.
"""

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp_types import CallToolResult, TextContent

from approvals.models import AuditKind
from integrations.settings import child_environment
from tests.conftest import OTHER_TOKEN, Running

pytestmark = pytest.mark.anyio

Start = Callable[..., AbstractAsyncContextManager[Running]]

# A minute-aligned instant plus 30 s: rate-limit windows are fixed minutes, so a retry is 30 s away.
NOW = 1_800_000_000.0 + 30
TIME_SERVER = [sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"]
TIME_POLICY = {
    "version": "1",
    "default": "deny",
    "hide": ["convert_time"],
    "tools": {
        "get_current_time": {
            "deny_if": [{"arg": "timezone", "op": "starts_with", "value": "Antarctica/"}],
            "limits": [{"counter": "time_lookups", "window": "minute", "max": 2, "scope": "grant"}],
        }
    },
}

MEMORY_PACKAGE = "@modelcontextprotocol/server-memory@2026.8.31"
MEMORY_POLICY = {
    "version": "1",
    "default": "allow",
    "hide": ["delete_entities"],
    "tools": {
        "delete_relations": {
            "action": "deny",
            "reason": "relations in the team's knowledge graph are removed by a person, not an agent",
        }
    },
}


def text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def decision(result: CallToolResult) -> dict[str, Any]:
    meta: dict[str, Any] = (result.meta or {}).get("signoff/decision", {})
    return meta


# -- mcp-server-time (PyPI) ---------------------------------------------------------------------------


async def test_time_server_through_signoff_hides_denies_and_rate_limits_by_policy(signoff: Start) -> None:
    server = {"name": "time", "command": TIME_SERVER, "policy": TIME_POLICY}
    async with signoff([server], clock=lambda: NOW) as running, running.client("time") as client:
        with anyio.fail_after(30):
            listed = [tool.name for tool in (await client.list_tools()).tools]
            utc = await client.call_tool("get_current_time", {"timezone": "UTC"})
            denied = await client.call_tool("get_current_time", {"timezone": "Antarctica/Troll"})
            tokyo = await client.call_tool("get_current_time", {"timezone": "Asia/Tokyo"})
            limited = await client.call_tool("get_current_time", {"timezone": "UTC"})
            hidden = await client.call_tool(
                "convert_time", {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}
            )
        rows = await running.audit()

    assert listed == ["get_current_time"]

    assert not utc.is_error
    answer = json.loads(text(utc))
    assert answer["timezone"] == "UTC"
    assert datetime.fromisoformat(answer["datetime"]).utcoffset() == timedelta(0)

    assert denied.is_error
    assert 'denied this call to "get_current_time"' in text(denied)
    assert 'tools["get_current_time"].deny_if[0]' in text(denied)
    assert "Antarctica/Troll" in text(denied)

    # The denied call did not use up the budget: the second allowed call still got through.
    assert not tokyo.is_error
    assert json.loads(text(tokyo))["datetime"].endswith("+09:00")

    assert limited.is_error
    assert 'rate-limited this call to "get_current_time"' in text(limited)
    assert 'counter "time_lookups" allows 2 calls per minute' in text(limited)
    assert "retry in 1m" in text(limited)  # every call came at NOW: the first leaves the window a minute later
    assert decision(limited)["retry_after"] == 60.0
    assert decision(limited)["counter"] == "time_lookups"

    assert hidden.is_error
    assert 'there is no tool "convert_time"' in text(hidden)

    kinds = [(row.kind, row.tool, row.outcome) for row in rows if row.kind != AuditKind.POLICY_LOADED]
    assert kinds == [
        (AuditKind.ALLOWED, "get_current_time", "ok"),
        (AuditKind.DENIED, "get_current_time", "refused"),
        (AuditKind.ALLOWED, "get_current_time", "ok"),
        (AuditKind.RATE_LIMITED, "get_current_time", "refused"),
        (AuditKind.HIDDEN, "convert_time", "refused"),
    ]


async def test_time_server_budget_is_per_agent_and_refills_a_minute_after_the_first_call(signoff: Start) -> None:
    now = [NOW]
    server = {"name": "time", "command": TIME_SERVER, "policy": TIME_POLICY}
    async with signoff([server], clock=lambda: now[0]) as running:
        with anyio.fail_after(30):
            async with running.client("time") as alpha, running.client("time", token=OTHER_TOKEN) as bravo:
                spent = [await alpha.call_tool("get_current_time", {"timezone": "UTC"}) for _ in range(3)]
                bravo_first = await bravo.call_tool("get_current_time", {"timezone": "UTC"})
                now[0] += 59.5  # the minute on the clock turned, but the first calls are still within 60 s
                alpha_too_soon = await alpha.call_tool("get_current_time", {"timezone": "Europe/Paris"})
                now[0] += 0.5
                alpha_next_minute = await alpha.call_tool("get_current_time", {"timezone": "Europe/Paris"})

    assert [result.is_error for result in spent] == [False, False, True]
    assert not bravo_first.is_error
    assert alpha_too_soon.is_error and "retry in 1s" in text(alpha_too_soon)
    assert not alpha_next_minute.is_error
    assert json.loads(text(alpha_next_minute))["timezone"] == "Europe/Paris"


# -- @modelcontextprotocol/server-memory (npm) ------------------------------------------------------------


@pytest.fixture(scope="module")
def npx(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The path of `npx`, with the memory server fetched into npm's cache (the one network step)."""
    found = shutil.which("npx")
    if found is None:
        pytest.skip("npx is not installed (needs Node.js 18+ and npm) to run @modelcontextprotocol/server-memory")
    scratch = tmp_path_factory.mktemp("npx-warmup")
    # The server exits when its stdin closes, so this installs it and returns.
    warmup = subprocess.run(
        [found, "-y", MEMORY_PACKAGE],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=300,
        check=False,
        env=child_environment({"MEMORY_FILE_PATH": str(scratch / "memory.jsonl")}),
        cwd=scratch,
    )
    if warmup.returncode != 0:
        pytest.fail(f"npx could not fetch {MEMORY_PACKAGE}: {warmup.stderr.decode(errors='replace')[-2000:]}")
    return found


def memory_server(npx: str, memory_file: Path) -> tuple[dict[str, Any], str]:
    """The server entry and the `extra` TOML that gives it its own MEMORY_FILE_PATH.

    `extra` is appended after the last `[[servers]]` table, so its key belongs to this server.
    """
    server = {"name": "memory", "command": [npx, "-y", "--prefer-offline", MEMORY_PACKAGE], "policy": MEMORY_POLICY}
    return server, f"env.MEMORY_FILE_PATH = {json.dumps(str(memory_file))}\n"


async def test_memory_server_through_signoff_keeps_entities_and_refuses_deletes(
    signoff: Start, npx: str, tmp_path: Path
) -> None:
    memory_file = tmp_path / "memory.jsonl"
    server, extra = memory_server(npx, memory_file)
    entities = [
        {"name": "signoff", "entityType": "project", "observations": ["an MCP gateway with human sign-off"]},
        {"name": "alice", "entityType": "person", "observations": ["reviews approvals"]},
    ]
    relation = {"from": "alice", "to": "signoff", "relationType": "maintains"}
    async with signoff([server], extra=extra) as running, running.client("memory") as client:
        with anyio.fail_after(30):
            listed = {tool.name for tool in (await client.list_tools()).tools}
            created = await client.call_tool("create_entities", {"entities": entities})
            related = await client.call_tool("create_relations", {"relations": [relation]})
            found = await client.call_tool("search_nodes", {"query": "sign-off"})
            hidden = await client.call_tool("delete_entities", {"entityNames": ["alice"]})
            denied = await client.call_tool("delete_relations", {"relations": [relation]})
            graph = await client.call_tool("read_graph", {})
        rows = await running.audit()

    assert "create_entities" in listed
    assert "read_graph" in listed
    assert "delete_relations" in listed  # denied, not hidden: the agent sees it and is told no
    assert "delete_entities" not in listed

    assert not created.is_error
    assert not related.is_error
    assert not found.is_error
    assert [node["name"] for node in json.loads(text(found))["entities"]] == ["signoff"]

    assert hidden.is_error
    assert 'there is no tool "delete_entities"' in text(hidden)
    assert denied.is_error
    assert "relations in the team's knowledge graph are removed by a person" in text(denied)
    assert decision(denied)["rule"] == 'tools["delete_relations"]'

    # Neither refused call reached the server: both entities and the relation are still there.
    stored = json.loads(text(graph))
    assert sorted(entity["name"] for entity in stored["entities"]) == ["alice", "signoff"]
    assert stored["relations"] == [relation]
    assert re.search(r'"name"\s*:\s*"alice"', memory_file.read_text())

    kinds = [(row.kind, row.tool) for row in rows if row.kind != AuditKind.POLICY_LOADED]
    assert kinds == [
        (AuditKind.ALLOWED, "create_entities"),
        (AuditKind.ALLOWED, "create_relations"),
        (AuditKind.ALLOWED, "search_nodes"),
        (AuditKind.HIDDEN, "delete_entities"),
        (AuditKind.DENIED, "delete_relations"),
        (AuditKind.ALLOWED, "read_graph"),
    ]
