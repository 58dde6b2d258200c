"""Hot reload of policy files over loopback: under load, with invalid edits, with calls in flight, across counters."""

import json
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult

from integrations.cli import main
from policies import load_policy
from tests.conftest import Running
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http

pytestmark = pytest.mark.anyio


def policy(echo: str, add: str, **extra: Any) -> dict[str, Any]:
    """A policy that sets echo and add to `allow` or `deny`."""
    return {
        "version": "1",
        "default": "deny",
        "tools": {"echo": {"action": echo}, "add": {"action": add}, **extra},
    }


def digest(document: dict[str, Any]) -> str:
    return load_policy(json.dumps(document)).digest


def write(path: Path, document: dict[str, Any] | str) -> None:
    # Write then rename, as editors do, so the poller never reads a half-written file (tested separately below).
    temporary = path.with_suffix(".tmp")
    temporary.write_text(document if isinstance(document, str) else json.dumps(document))
    temporary.replace(path)


def outcome(result: CallToolResult) -> tuple[str, str | None]:
    """("ok" or the refusal's outcome, the policy version a refusal names)."""
    meta = (result.meta or {}).get("signoff/decision")
    if meta is None:
        assert not result.is_error
        return "ok", None
    return meta["outcome"], meta["policy_version"]


async def health(running: Running) -> dict[str, Any]:
    async with httpx2.AsyncClient(timeout=10) as http:
        body: dict[str, Any] = (await http.get(f"{running.url}/healthz")).json()
    return body


async def serving(running: Running, server: str, version: str) -> None:
    """Until /healthz shows `version` in force for `server` (bounded by the caller's fail_after)."""
    # A bounded poll of what an operator would watch: /healthz.
    while (await health(running))["servers"][server]["policy_version"] != version:  # noqa: ASYNC110
        await anyio.sleep(0.02)


async def refusal_shown(running: Running, server: str) -> dict[str, Any]:
    while True:  # a bounded poll of /healthz, under the caller's fail_after
        detail: dict[str, Any] = (await health(running))["servers"][server]["policy"]
        if detail["error"]:
            return detail
        await anyio.sleep(0.02)


@asynccontextmanager
async def everything(signoff: Any, document: dict[str, Any], **kwargs: Any) -> AsyncIterator[Running]:
    async with serve_http(everything_http_app(EverythingState())) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": document}]
        async with signoff(servers, gateway={"policy_poll": "0.05s"}, **kwargs) as running:
            yield running


async def test_rewrites_under_load_switch_decisions_without_a_failed_call(signoff: Any, tmp_path: Path) -> None:
    versions = [policy("allow", "deny"), policy("deny", "allow"), policy("allow", "allow"), policy("deny", "deny")]
    digests = [digest(v) for v in versions]
    path = tmp_path / "ev.json"
    results: list[CallToolResult] = []
    async with everything(signoff, versions[0]) as running:
        with anyio.fail_after(60):
            async with running.client("ev") as client, anyio.create_task_group() as tg:
                stop = anyio.Event()
                wanted: list[tuple[int, anyio.Event]] = []

                async def load(tool: str, arguments: dict[str, Any]) -> None:
                    while not stop.is_set():
                        results.append(await client.call_tool(tool, arguments))
                        for count, reached in wanted:
                            if len(results) >= count:
                                reached.set()

                async def answered(more: int) -> None:
                    reached = anyio.Event()
                    wanted.append((len(results) + more, reached))
                    await reached.wait()

                for _ in range(3):
                    tg.start_soon(load, "echo", {"text": "hi"})
                    tg.start_soon(load, "add", {"a": 1, "b": 2})
                await answered(12)  # calls under the first policy too, before any edit
                for index, document in enumerate(versions[1:], start=1):
                    write(path, "{ not json")  # an invalid edit first: refused, the previous policy keeps serving
                    refused = await refusal_shown(running, "ev")
                    assert refused["version"] == digests[index - 1]
                    assert "invalid JSON" in refused["error"]
                    write(path, document)
                    await serving(running, "ev", digests[index])
                    await answered(12)  # calls made under the new policy
                stop.set()
            health_after = await health(running)
        rows = await running.audit()

    assert all(isinstance(r, CallToolResult) for r in results)  # every call got a proper answer
    outcomes = {outcome(r)[0] for r in results}
    assert outcomes <= {"ok", "denied"}
    # The last policy denies both tools: the calls after the final switch are refused under its version.
    last = [outcome(r) for r in results[-6:]]
    assert all(o == ("denied", digests[3]) for o in last)
    reloads = [r for r in rows if r.kind == "policy_reloaded"]
    assert [r.policy_version for r in reloads] == digests[1:]
    assert len([r for r in rows if r.kind == "policy_refused"]) == 3
    call_versions = {r.policy_version for r in rows if r.kind in ("allowed", "denied")}
    assert call_versions == set(digests)
    # A decision row's version says which policy decided it: allowed echo rows only under versions that allow echo.
    allowing_echo = {digests[0], digests[2]}
    assert {r.policy_version for r in rows if r.kind == "allowed" and r.tool == "echo"} <= allowing_echo
    assert health_after["servers"]["ev"]["policy"]["error"] is None
    assert health_after["servers"]["ev"]["policy"]["reloads"] == 3


async def test_a_call_in_flight_keeps_the_policy_it_started_with(signoff: Any, tmp_path: Path) -> None:
    entered, release = anyio.Event(), anyio.Event()
    upstream = MCPServer("slow")

    @upstream.tool(description="Wait until the test releases the call.")
    async def wait() -> str:
        entered.set()
        await release.wait()
        return "released"

    first = {"version": "1", "default": "allow"}
    second = {"version": "1", "default": "deny"}
    async with serve_http(upstream.streamable_http_app(streamable_http_path="/mcp")) as url:
        servers = [{"name": "slow", "url": f"{url}/mcp", "policy": first}]
        async with signoff(servers, gateway={"policy_poll": "0.05s"}) as running, running.client("slow") as client:
            results: list[CallToolResult] = []
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:

                    async def call() -> None:
                        results.append(await client.call_tool("wait", {}))

                    tg.start_soon(call)
                    await entered.wait()
                    write(tmp_path / "slow.json", second)
                    await serving(running, "slow", digest(second))
                    release.set()
                after = await client.call_tool("wait", {})
            rows = await running.audit()

    assert not results[0].is_error and outcome(after)[0] == "denied"
    loaded = next(r for r in rows if r.kind == "policy_loaded")
    in_flight = next(r for r in rows if r.kind == "allowed")
    assert in_flight.policy_version == loaded.policy_version and in_flight.outcome == "ok"


async def test_rate_limit_counters_survive_a_reload(signoff: Any, tmp_path: Path) -> None:
    limited = {"limits": [{"counter": "adds", "window": "hour", "max": 2}]}
    first = {"version": "1", "default": "allow", "tools": {"add": limited}}
    changed = {"version": "1", "default": "allow", "tools": {"add": limited, "echo": {"action": "deny"}}}
    async with everything(signoff, first) as running, running.client("ev") as client:
        with anyio.fail_after(20):
            before = [await client.call_tool("add", {"a": 1, "b": 1}) for _ in range(2)]
            write(tmp_path / "ev.json", changed)
            await serving(running, "ev", digest(changed))
            after = await client.call_tool("add", {"a": 1, "b": 1})

    assert [outcome(r)[0] for r in before] == ["ok", "ok"]
    assert outcome(after) == ("rate_limited", digest(changed))


async def test_sighup_api_and_cli_reload_at_once_and_report_refusals(
    signoff: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serve_http(everything_http_app(EverythingState())) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": policy("allow", "deny")}]
        # A poll this slow never fires during the test: only the API, the CLI and SIGHUP reload.
        async with signoff(servers, approvers=True, gateway={"policy_poll": "1h"}) as running:
            path = tmp_path / "ev.json"
            headers = {"Authorization": "Bearer alice-approver-token"}
            with anyio.fail_after(20):
                async with httpx2.AsyncClient(base_url=running.url, timeout=10) as http:
                    write(path, policy("allow", "allow") | {"shadw": True})
                    refused = await http.post("/api/policies/reload", headers=headers)
                    anonymous = await http.post("/api/policies/reload")
                    write(path, policy("allow", "allow"))
                    argv = ["policy", "reload", "--url", running.url, "--token", "alice-approver-token"]
                    code = await anyio.to_thread.run_sync(main, argv)
                    after_cli = (await health(running))["servers"]["ev"]["policy_version"]
                    write(path, policy("deny", "deny"))
                    os.kill(os.getpid(), signal.SIGHUP)
                    await serving(running, "ev", digest(policy("deny", "deny")))

    assert refused.status_code == 422
    body = refused.json()["servers"]["ev"]
    assert (
        body["result"] == "refused"
        and 'unknown key "shadw"' in body["error"]
        and 'did you mean "shadow"' in body["error"]
    )
    assert anonymous.status_code == 401
    assert code == 0 and after_cli == digest(policy("allow", "allow"))
    assert f"ev: reloaded, policy {after_cli}" in capsys.readouterr().out


async def test_a_reloaded_policy_naming_an_unknown_approver_is_refused_and_the_previous_keeps_serving(
    signoff: Any, tmp_path: Path
) -> None:
    first = policy("allow", "deny")
    approval = {"action": "require_approval", "approval": {"approvers": ["alice", "group:dbaa"]}}
    async with serve_http(everything_http_app(EverythingState())) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": first}]
        async with signoff(servers, approvers=True, gateway={"policy_poll": "1h"}) as running:
            path = tmp_path / "ev.json"
            headers = {"Authorization": "Bearer alice-approver-token"}
            with anyio.fail_after(20):
                async with httpx2.AsyncClient(base_url=running.url, timeout=10) as http:
                    write(path, policy("allow", "deny", kill=approval))
                    refused = await http.post("/api/policies/reload", headers=headers)
                    serving_after = (await health(running))["servers"]["ev"]["policy_version"]
                    async with running.client("ev") as client:
                        echoed = await client.call_tool("echo", {"text": "hi"})

    assert refused.status_code == 422
    assert refused.json()["servers"]["ev"]["error"] == (
        f'{path}: $.tools["kill"].approval.approvers[1]: error: "group:dbaa" names no configured approver or group'
        ' (hint: did you mean "group:dba"? configured: alice, alpha, bob, carol, group:dba, group:ops)'
    )
    assert serving_after == digest(first)
    assert outcome(echoed) == ("ok", None)
