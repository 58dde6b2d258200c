"""A `signoff serve` killed with SIGKILL while calls wait for people loses nothing."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.server.mcpserver import MCPServer

from tests.conftest import AGENT_TOKEN, READER, connect, write_config
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http

pytestmark = pytest.mark.anyio

POLICY = {
    "version": "1",
    "default": "allow",
    "tools": {
        "delete_record": {"action": "require_approval", "approval": {"approvers": ["alice"], "timeout": "10m"}},
        "drop_table": {"action": "require_approval", "approval": {"approvers": ["alice"], "timeout": "1s"}},
    },
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve_process(config: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "ALPHA_TOKEN": AGENT_TOKEN}
    argv = [
        sys.executable,
        "-m",
        "integrations.cli",
        "--config",
        str(config),
        "serve",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


async def until_healthy(base: str) -> None:
    async with httpx2.AsyncClient(timeout=2) as http:
        while True:  # bounded by the caller's fail_after
            try:
                if (await http.get(f"{base}/healthz")).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            await anyio.sleep(0.05)


async def call(base: str, tool: str, arguments: dict[str, Any], mode: str = "legacy") -> Any:
    """One call from a fresh SDK Client, speaking the handshake (`legacy`) or 2026-07-28 (`auto`)."""
    async with connect(f"{base}/mcp/ev", AGENT_TOKEN, mode) as client:
        return await client.call_tool(tool, arguments)


async def test_sigkill_with_pending_requests_loses_none_and_expires_the_overdue(tmp_path: Path) -> None:
    state = EverythingState()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with serve_http(everything_http_app(state)) as upstream:
        config = write_config(
            tmp_path,
            [{"name": "ev", "url": f"{upstream}/mcp", "policy": POLICY}],
            gateway={"approval_hold": "0.2s"},
            approvers=True,
        )
        with anyio.fail_after(60):
            with serve_process(config, port) as process:
                await until_healthy(base)
                kept = (await call(base, "delete_record", {"record_id": "r-1"})).meta["signoff/decision"]["approval_id"]
                other = (await call(base, "delete_record", {"record_id": "r-2"})).meta["signoff/decision"][
                    "approval_id"
                ]
                short = (await call(base, "drop_table", {"name": "t"})).meta["signoff/decision"]["approval_id"]
                process.send_signal(signal.SIGKILL)
                process.wait(10)
            await anyio.sleep(1.2)  # the short request's deadline passes while signoff is down

            with serve_process(config, port):
                await until_healthy(base)
                async with httpx2.AsyncClient(base_url=base, timeout=10, headers=READER) as http:
                    statuses = {
                        i: (await http.get(f"/api/approvals/{i}")).json()["status"] for i in (kept, other, short)
                    }
                    approve = await http.post(
                        f"/api/approvals/{kept}/approve",
                        json={},
                        headers={"Authorization": "Bearer alice-approver-token"},
                    )
                collected = await call(base, "delete_record", {"record_id": "r-1"})
                refused = await call(base, "drop_table", {"name": "t"}, "auto")
        verify = await anyio.run_process(
            [sys.executable, "-m", "integrations.cli", "--config", str(config), "audit", "verify"],
            env={**os.environ, "ALPHA_TOKEN": AGENT_TOKEN},
            check=False,
        )

    assert statuses == {kept: "pending", other: "pending", short: "expired"}
    assert approve.status_code == 200
    assert not collected.is_error and state.deleted_records == ["r-1"]
    assert refused.meta["signoff/decision"]["outcome"] == "expired"
    assert state.dropped_tables == []
    assert verify.returncode == 0 and b"audit chain ok" in verify.stdout


def hanging_http_app(started: anyio.Event, ran: list[str]) -> Any:
    """An MCP server whose one destructive tool starts, says so, and never finishes: the gateway dies mid-call."""
    server = MCPServer("hanging", version="1.0.0")

    @server.tool(description="Rotate a credential; takes its time.")
    async def rotate_key(name: str) -> str:
        ran.append(name)
        started.set()
        await anyio.sleep_forever()
        return "never"

    return server.streamable_http_app(streamable_http_path="/mcp")


async def test_sigkill_while_an_approved_call_runs_fails_it_at_restart_and_every_repeat_is_told_the_result_is_unknown(
    tmp_path: Path,
) -> None:
    started, ran = anyio.Event(), list[str]()
    policy = {
        "version": "1",
        "default": "allow",
        "tools": {"rotate_key": {"action": "require_approval", "approval": {"approvers": ["alice"], "timeout": "10m"}}},
    }
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    alice = {"Authorization": "Bearer alice-approver-token"}
    async with serve_http(hanging_http_app(started, ran)) as upstream:
        config = write_config(
            tmp_path,
            [{"name": "ev", "url": f"{upstream}/mcp", "policy": policy}],
            gateway={"approval_hold": "0.2s"},
            approvers=True,
        )
        with anyio.fail_after(60):
            with serve_process(config, port) as process:
                await until_healthy(base)
                held = await call(base, "rotate_key", {"name": "prod"})
                approval = held.meta["signoff/decision"]["approval_id"]
                async with httpx2.AsyncClient(base_url=base, timeout=10) as http:
                    await http.post(f"/api/approvals/{approval}/approve", json={}, headers=alice)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(call, base, "rotate_key", {"name": "prod"})  # the repeat that runs it
                    await started.wait()
                    process.send_signal(signal.SIGKILL)  # while the approved call runs upstream
                    process.wait(10)
                    tg.cancel_scope.cancel()

            with serve_process(config, port):
                await until_healthy(base)
                async with httpx2.AsyncClient(base_url=base, timeout=10, headers=READER) as http:
                    after = (await http.get(f"/api/approvals/{approval}")).json()
                    audit = (await http.get("/api/audit", params={"tool": "rotate_key"})).json()
                first = await call(base, "rotate_key", {"name": "prod"})
                second = await call(base, "rotate_key", {"name": "prod"}, "auto")  # each revision is told
        verify = await anyio.run_process(
            [sys.executable, "-m", "integrations.cli", "--config", str(config), "audit", "verify"],
            env={**os.environ, "ALPHA_TOKEN": AGENT_TOKEN},
            check=False,
        )

    assert after["status"] == "failed" and after["outcome"] == "gateway_stopped"
    failed = [e for e in audit["events"] if e["kind"] == "failed"]
    assert len(failed) == 1 and failed[0]["outcome"] == "gateway_stopped" and "unknown" in failed[0]["detail"]
    for repeat in (first, second):
        assert repeat.is_error and repeat.meta["signoff/decision"]["outcome"] == "gateway_stopped"
        assert "whether it took effect is unknown" in repeat.content[0].text
    assert ran == ["prod"]  # it ran once, and never again
    assert verify.returncode == 0 and b"audit chain ok" in verify.stdout


@pytest.mark.parametrize("kill_at", [20, 150, 400])
async def test_sigkill_under_load_every_answered_call_has_its_audit_row(tmp_path: Path, kill_at: int) -> None:
    """Durable before answered: 16 agents call as fast as they can, allowed and denied calls mixed, and signoff is
    SIGKILLed mid-stream; every call an agent saw answered is in the audit log the killed process left."""
    state = EverythingState()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    answered: list[str] = []
    policy = {"version": "1", "default": "allow", "tools": {"drop_table": {"action": "deny"}}}
    async with serve_http(everything_http_app(state)) as upstream:
        config = write_config(tmp_path, [{"name": "ev", "url": f"{upstream}/mcp", "policy": policy}])
        with anyio.fail_after(60), serve_process(config, port) as process:
            await until_healthy(base)

            async def agent(n: int) -> None:
                try:
                    async with connect(f"{base}/mcp/ev", AGENT_TOKEN) as client:
                        for i in range(10_000):
                            key = f"a{n}-{i}"
                            if i % 4 == 3:
                                result = await client.call_tool("drop_table", {"name": key})
                            else:
                                result = await client.call_tool("echo", {"text": key})
                            assert result.is_error == (i % 4 == 3)
                            answered.append(key)  # the agent read its answer
                except Exception:  # the connection died with the process: what was answered is counted
                    return

            async with anyio.create_task_group() as tg:
                for n in range(16):
                    tg.start_soon(agent, n)
                while len(answered) < kill_at:  # noqa: ASYNC110 - polling the agents' own count
                    await anyio.sleep(0.001)
                process.send_signal(signal.SIGKILL)
    database = sqlite3.connect(tmp_path / "signoff.db")
    recorded = {
        json.loads(arguments).get("text") or json.loads(arguments).get("name")
        for (arguments,) in database.execute("SELECT arguments FROM audit_events WHERE tool IN ('echo', 'drop_table')")
    }
    database.close()

    assert len(answered) >= kill_at  # the kill came under load
    missing = sorted(set(answered) - recorded)
    assert not missing, f"{len(missing)} of {len(answered)} answered calls have no audit row: {missing[:10]}"
