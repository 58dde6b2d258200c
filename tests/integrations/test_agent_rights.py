"""Per-agent rights over loopback: the servers an agent may reach, its own policies, conditions on the caller."""

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp_types import CallToolResult, TextContent
from sqlmodel import Session, select
from starlette.types import ASGIApp, Receive, Scope, Send

from approvals.models import ToolPin
from integrations.cli import main
from integrations.errors import ConfigError
from integrations.settings import load_settings
from policies import load_policy
from tests.conftest import AGENT_TOKEN, OTHER_TOKEN
from tests.fakes.upstreams import everything_http_app, serve_http

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]

SERVER_POLICY = {
    "version": "1",
    "default": "deny",
    "hide": ["drop_table"],
    "tools": {
        "echo": {},
        "add": {},
        "counter": {"limits": [{"counter": "calls", "window": "minute", "max": 1, "scope": "global"}]},
    },
}
ALPHAS_OWN: dict[
    str, Any
] = {  # alpha's own policy for ev: other hides, another deny, the same limit in a budget of its own
    "version": "1",
    "default": "deny",
    "hide": ["echo"],
    "tools": {
        "add": {"action": "deny", "reason": "alpha adds nothing"},
        "drop_table": {},
        "counter": {"limits": [{"counter": "calls", "window": "minute", "max": 1, "scope": "global"}]},
    },
}
BY_CALLER = {  # one policy for everyone on `other`, with exceptions by who calls
    "version": "1",
    "default": "allow",
    "tools": {
        "delete_record": {"require": [{"caller": "groups", "op": "contains", "value": "automation"}]},
        "drop_table": {"deny_if": [{"caller": "agent", "op": "ne", "value": "alpha"}]},
    },
}
AGENTS = {
    "alpha": {"groups": ["automation"], "servers": ["ev", "other"], "policies": {"ev": ALPHAS_OWN}},
    "bravo": {"groups": ["ops"]},
}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
HANDSHAKE = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


class Recorded:
    """An upstream app that notes every HTTP request that reaches it, then serves it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.requests: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.requests.append(scope["method"])
        await self.app(scope, receive, send)


@asynccontextmanager
async def upstreams() -> AsyncIterator[tuple[list[dict[str, Any]], Recorded]]:
    """Three everything servers: ev (recorded; its tool lists say "public"), other, and locked (recorded), which
    alpha may not reach."""
    ev, locked = Recorded(everything_http_app(public_lists=True)), Recorded(everything_http_app())
    async with serve_http(ev) as ev_url, serve_http(everything_http_app()) as other_url, serve_http(locked) as lk:
        yield (
            [
                {"name": "ev", "url": f"{ev_url}/mcp", "policy": SERVER_POLICY},
                {"name": "other", "url": f"{other_url}/mcp", "policy": BY_CALLER},
                {"name": "locked", "url": f"{lk}/mcp", "policy": SERVER_POLICY},
            ],
            locked,
        )


def text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def outcome(result: CallToolResult) -> str:
    meta = (result.meta or {}).get("signoff/decision")
    return "ok" if meta is None else str(meta["outcome"])


async def test_an_agents_own_policy_replaces_the_servers_for_its_list_calls_and_limits(signoff: Any, mode: str) -> None:
    async with upstreams() as (servers, _), signoff(servers, agents=AGENTS) as running:
        async with running.client("ev", AGENT_TOKEN, mode) as alpha, running.client("ev", OTHER_TOKEN, mode) as bravo:
            with anyio.fail_after(20):
                alphas, bravos = await alpha.list_tools(), await bravo.list_tools()
                alpha_add = await alpha.call_tool("add", {"a": 1, "b": 2})
                bravo_add = await bravo.call_tool("add", {"a": 1, "b": 2})
                hidden_echo = await alpha.call_tool("echo", {"text": "hi"})
                counted = [await bravo.call_tool("counter", {}), await alpha.call_tool("counter", {})]
                bravo_again = await bravo.call_tool("counter", {})
                alpha_again = await alpha.call_tool("counter", {})

    alpha_sees, bravo_sees = {t.name for t in alphas.tools}, {t.name for t in bravos.tools}
    assert "drop_table" in alpha_sees - bravo_sees  # each policy hides its own
    assert "echo" in bravo_sees - alpha_sees
    assert alpha_sees | {"echo"} == bravo_sees | {"drop_table"}
    if mode == "auto":  # 2026-07-28: the list is the caller's own, so no shared cache may hand it to another
        assert alphas.cache_scope == bravos.cache_scope == "private"
        assert alphas.ttl_ms == 60_000  # the upstream's, kept
    assert alpha_add.is_error and "alpha adds nothing" in text(alpha_add)
    assert not bravo_add.is_error and text(bravo_add) == "3"
    assert hidden_echo.is_error and outcome(hidden_echo) == "hidden"
    # One call each in its own budget, though both policies name a global counter "calls" with room for one.
    assert [outcome(r) for r in counted] == ["ok", "ok"]
    assert bravo_again.is_error and alpha_again.is_error


async def test_an_agent_outside_a_servers_list_gets_403_naming_what_it_may_reach_and_nothing_goes_upstream(
    signoff: Any,
) -> None:
    async with upstreams() as (servers, locked), signoff(servers, agents=AGENTS) as running:
        alpha = {"Authorization": f"Bearer {AGENT_TOKEN}", **HANDSHAKE}
        async with httpx2.AsyncClient(timeout=10, headers=alpha) as http:
            url = running.mcp_url("locked")
            posted = await http.post(url, json=INITIALIZE)
            got = await http.get(url, headers={"Accept": "text/event-stream"})
            deleted = await http.delete(url, headers={"Mcp-Session-Id": "whatever"})
            bravo = await http.post(url, json=INITIALIZE, headers={"Authorization": f"Bearer {OTHER_TOKEN}"})
        rows = [r for r in await running.audit() if r.kind == "server_refused"]

    for refused in (posted, got, deleted):
        assert refused.status_code == 403
        assert refused.json()["error"] == {
            "code": -32600,
            "message": "Forbidden: agent 'alpha' may not reach server 'locked'; it may reach: ev, other",
            "data": {"agent": "alpha", "server": "locked", "reachable": ["ev", "other"]},
        }
    assert bravo.status_code == 200  # bravo may reach every server
    assert locked.requests == ["POST"]  # bravo's initialize; none of alpha's three
    assert [(r.server, r.identity, r.outcome) for r in rows] == [("locked", "alpha", "refused")] * 3
    assert [r.detail.split(":")[0] for r in rows] == ["POST", "GET", "DELETE"]


async def test_conditions_on_the_caller_decide_by_its_name_and_groups(signoff: Any, mode: str) -> None:
    async with upstreams() as (servers, _), signoff(servers, agents=AGENTS) as running:
        async with (
            running.client("other", AGENT_TOKEN, mode) as alpha,
            running.client("other", OTHER_TOKEN, mode) as bravo,
        ):
            with anyio.fail_after(20):
                alpha_delete = await alpha.call_tool("delete_record", {"record_id": "r1"})
                bravo_delete = await bravo.call_tool("delete_record", {"record_id": "r2"})
                alpha_drop = await alpha.call_tool("drop_table", {"name": "t"})
                bravo_drop = await bravo.call_tool("drop_table", {"name": "t"})

    assert text(alpha_delete) == "deleted record r1"
    assert bravo_delete.is_error
    assert 'the caller\'s groups are ["ops"], but require[0] requires that they include "automation"' in text(
        bravo_delete
    )
    assert text(alpha_drop) == "dropped table t"
    assert bravo_drop.is_error and 'the caller is "bravo", which is ne "alpha"' in text(bravo_drop)


async def test_an_agents_own_policy_is_audited_shown_in_healthz_and_hot_reloads(signoff: Any, tmp_path: Path) -> None:
    edited = {**ALPHAS_OWN, "hide": [], "tools": {**ALPHAS_OWN["tools"], "echo": {}}}
    async with upstreams() as (servers, _), signoff(servers, agents=AGENTS, approvers=True) as running:
        reader = {"Authorization": "Bearer carol-approver-token"}
        async with httpx2.AsyncClient(base_url=running.url, timeout=10, headers=reader) as http:
            before = (await http.get("/healthz")).json()["servers"]["ev"]
            (tmp_path / "ev-alpha.json").write_text(json.dumps(edited))
            reloaded = await http.post("/api/policies/reload")
            after = (await http.get("/healthz")).json()["servers"]["ev"]
        async with running.client("ev") as alpha:
            with anyio.fail_after(20):
                listed = {t.name for t in (await alpha.list_tools()).tools}
                echoed = await alpha.call_tool("echo", {"text": "hi"})
        rows = [(r.kind, r.server, r.identity, r.policy_version) for r in await running.audit()]

    old, new = load_policy(json.dumps(ALPHAS_OWN)).digest, load_policy(json.dumps(edited)).digest
    assert before["policy"]["version"] == after["policy"]["version"] == load_policy(json.dumps(SERVER_POLICY)).digest
    assert before["agent_policies"]["alpha"]["version"] == old
    assert after["agent_policies"]["alpha"] == {**after["agent_policies"]["alpha"], "version": new, "reloads": 1}
    assert reloaded.status_code == 200
    assert reloaded.json()["servers"]["ev"]["agent_policies"]["alpha"]["result"] == "reloaded"
    assert "echo" in listed
    assert text(echoed) == "hi"
    assert ("policy_loaded", "ev", "alpha", old) in rows
    assert ("policy_reloaded", "ev", "alpha", new) in rows


def config_with(tmp_path: Path, agent: str) -> Path:
    (tmp_path / "p.json").write_text(json.dumps(SERVER_POLICY))
    config = tmp_path / "signoff.toml"
    config.write_text(
        f'[[agents]]\nname = "ci-bot"\ntoken = "ci-bot-token-0123456789"\n{agent}\n'
        '[[servers]]\nname = "postgres"\nurl = "http://127.0.0.1:9/mcp"\npolicy = "p.json"\n'
        '[[servers]]\nname = "memory"\nurl = "http://127.0.0.1:9/mcp"\npolicy = "p.json"\n'
    )
    return config


@pytest.mark.parametrize(
    ("agent", "fault"),
    [
        (
            'servers = ["postgress"]',
            """agents[0].servers[0]: 'postgress' names no configured server (did you mean "postgres"? configured:"""
            " postgres, memory)",
        ),
        (
            'policies = { memroy = "p.json" }',
            """agents[0].policies.memroy: 'memroy' names no configured server (did you mean "memory"? configured:"""
            " postgres, memory)",
        ),
        (
            'servers = ["postgres"]\npolicies = { memory = "p.json" }',
            "agents[0].policies.memory: agent 'ci-bot' may not reach server 'memory' (its servers: postgres), so this"
            " policy would never apply; add 'memory' to its servers or remove the policy",
        ),
    ],
)
def test_a_config_naming_servers_an_agent_cannot_have_is_refused_at_the_key(
    tmp_path: Path, agent: str, fault: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(config_with(tmp_path, agent))

    assert f"invalid configuration:\n  {fault}" in str(refused.value)


def test_an_agents_own_policy_file_is_checked_at_start_with_the_servers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_with(tmp_path, 'policies = { postgres = "ci.json" }')
    (tmp_path / "ci.json").write_text('{"version": "1", "default": "dney"}')

    assert main(["--config", str(config), "serve"]) == 2
    err = capsys.readouterr().err
    assert "agents[0].policies.postgres (ci-bot) is invalid:" in err
    assert 'ci.json: $.default: error: invalid default "dney"' in err


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_policy_explain_and_test_and_check_take_an_agent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = config_with(
        tmp_path, 'groups = ["automation"]\nservers = ["postgres", "memory"]\npolicies = { postgres = "ci.json" }'
    )
    (tmp_path / "ci.json").write_text(json.dumps(ALPHAS_OWN))
    (tmp_path / "by-caller.json").write_text(json.dumps(BY_CALLER))
    cases = [
        {"name": "the agent may delete", "tool": "delete_record", "expect": "allow"},
        {"name": "ops may not", "tool": "delete_record", "identity": "bob", "groups": ["ops"], "expect": "deny"},
    ]
    (tmp_path / "by-caller.tests.json").write_text(json.dumps(cases))
    (tmp_path / "ci.tests.json").write_text(json.dumps([{"name": "no adding", "tool": "add", "expect": "deny"}]))
    base = ["--config", str(config), "policy"]

    code, out, err = cli([*base, "explain", "--agent", "ci-bot", "--server", "postgres", "--tool", "add"], capsys)
    assert code == 0
    assert err == f"using ci-bot's own policy for postgres: {tmp_path / 'ci.json'}\n"
    assert out.splitlines()[0] == 'call: "add" by "ci-bot" (groups "automation") on server "postgres" with {}'
    assert out.splitlines()[-1] == 'decision: deny, by tools["add"]: alpha adds nothing'

    explain = [*base, "explain", str(tmp_path / "by-caller.json"), "--agent", "ci-bot", "--tool", "delete_record"]
    code, out, _ = cli(explain, capsys)
    assert 'caller.groups contains "automation": the caller\'s groups are ["automation"], so it holds' in out
    assert out.splitlines()[-1] == 'decision: allow, by tools["delete_record"]'

    code, out, _ = cli([*base, "test", str(tmp_path / "by-caller.json"), "--agent", "ci-bot"], capsys)
    assert (code, out.splitlines()[:2]) == (0, ["PASS  the agent may delete", "PASS  ops may not"])
    code, out, _ = cli([*base, "test", "--agent", "ci-bot", "--server", "postgres"], capsys)
    assert (code, out.splitlines()[0]) == (0, "PASS  no adding")

    code, out, _ = cli([*base, "check", "--agent", "ci-bot"], capsys)
    assert code == 0
    assert f"agent ci-bot on postgres: its own policy {tmp_path / 'ci.json'}" in out.splitlines()
    assert f"agent ci-bot on memory: the server's policy {tmp_path / 'p.json'}" in out.splitlines()

    code, _, err = cli([*base, "explain", "--agent", "ci-bot", "--server", "nope", "--tool", "add"], capsys)
    assert code == 2 and "no server named 'nope' (configured: postgres, memory)" in err
    code, _, err = cli([*base, "explain", "--agent", "nobody", "--server", "postgres", "--tool", "add"], capsys)
    assert code == 2 and "no agent named 'nobody' (configured: ci-bot)" in err


def test_explain_as_an_agent_refuses_a_server_it_may_not_reach(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_with(tmp_path, 'servers = ["postgres"]')

    code, _, err = cli(
        ["--config", str(config), "policy", "explain", "--agent", "ci-bot", "--server", "memory", "--tool", "add"],
        capsys,
    )

    assert code == 2
    assert err == "signoff: agent 'ci-bot' may not reach server 'memory'; it may reach: postgres\n"


def test_serve_says_at_start_which_servers_each_agent_may_reach(tmp_path: Path) -> None:
    config = config_with(
        tmp_path, 'groups = ["automation"]\nservers = ["postgres"]\npolicies = { postgres = "p.json" }'
    )
    with config.open("a") as more:
        more.write('[[agents]]\nname = "claude-desktop"\ntoken = "claude-desktop-token-0123"\n')
    command = [sys.executable, "-m", "integrations.cli", "--config", str(config), "serve", "--port", "0"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    with subprocess.Popen(
        command, cwd=tmp_path, env={**clean, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            # Printed before uvicorn starts, after the summary of where each server is served.
            lines = iter(process.stdout.readline, "")
            next(line for line in lines if line == "agents and the servers each may reach:\n")
            banner = ["agents and the servers each may reach:\n", next(lines), next(lines)]
        finally:
            process.kill()

    assert banner == [
        "agents and the servers each may reach:\n",
        "  ci-bot         : postgres (its own policy)   groups: automation\n",
        "  claude-desktop : postgres, memory\n",
    ]


async def test_tools_an_agent_lists_under_its_own_policy_are_pinned_under_the_servers_policy(signoff: Any) -> None:
    async with upstreams() as (servers, _), signoff(servers, agents=AGENTS) as running:
        async with running.client("ev") as alpha:
            with anyio.fail_after(20):
                await alpha.list_tools()
        await running.app.state.signoff.tools.flush()
        with Session(running.app.state.signoff.database) as db:
            versions = {pin.policy_version for pin in db.exec(select(ToolPin)).all()}

    # The server's next start re-checks pins whose version is not its policy's: alpha's would accept any drift.
    assert versions == {load_policy(json.dumps(SERVER_POLICY)).digest}


def test_policy_check_with_a_config_warns_of_caller_names_no_agent_has(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_with(tmp_path, 'groups = ["automation"]')
    typo = {
        "version": "1",
        "default": "allow",
        "tools": {
            "drop_table": {"deny_if": [{"caller": "agent", "op": "in", "value": ["ci-bto", "ci-bot"]}]},
            "delete_record": {"require": [{"caller": "groups", "op": "contains", "value": "automaton"}]},
        },
    }
    (tmp_path / "typo.json").write_text(json.dumps(typo))

    code, out, _ = cli(["--config", str(config), "policy", "check", str(tmp_path / "typo.json")], capsys)

    path = tmp_path / "typo.json"
    assert code == 0  # warnings; --strict would fail
    assert out.splitlines()[1:] == [
        f'{path}: $.tools["drop_table"].deny_if[0].value: warning: "ci-bto" names no configured agent'
        ' (hint: did you mean "ci-bot"? configured: ci-bot)',
        f'{path}: $.tools["delete_record"].require[0].value: warning: no configured agent is in group "automaton"'
        ' (hint: did you mean "automation"? configured: automation)',
        "0 error(s), 2 warning(s) in 1 file(s)",
    ]
