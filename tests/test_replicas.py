"""Three replicas on one PostgreSQL behind a round-robin HAProxy, tried as production would try them.

Each replica is its own `signoff serve` process (tests/cluster.py); the agent and the approvers talk to the load
balancer, or to one replica when the test needs to know which one holds a call.
"""

import contextlib
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp_types import CallToolResult
from sqlmodel import Session, col, select

from approvals.models import AuditEvent
from integrations.cli import main
from integrations.database import create_database_engine
from tests.cluster import Cluster, cluster
from tests.conftest import AGENT_TOKEN, connect
from tests.fakes.redis_server import RedisServer
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

POLICY = {
    "version": "1",
    "default": "allow",
    "tools": {
        "delete_record": {
            "action": "require_approval",
            "reason": "Deletes a customer record",
            "approval": {"approvers": ["group:dba"], "timeout": "10m"},
        },
        "drop_table": {"action": "require_approval", "approval": {"approvers": ["alice"], "timeout": "2s"}},
    },
}
ALICE = {"Authorization": "Bearer alice-approver-token"}


@pytest.fixture
def database_url(postgres_url: str) -> str:
    return postgres_url


def config_text(folder: Path, database_url: str, upstream: str, policy: dict[str, Any], gateway: str = "") -> str:
    (folder / "ev.json").write_text(json.dumps(policy))
    return f"""
[gateway]
database_url = "{database_url}"
public_url = "{{public_url}}"
approval_hold = "20s"
{gateway}

[[agents]]
name = "alpha"
token = "{AGENT_TOKEN}"

[[approvers]]
name = "alice"
token = "alice-approver-token"
groups = ["dba"]

[[approvers]]
name = "bob"
token = "bob-approver-token"
groups = ["dba"]

[[servers]]
name = "ev"
url = "{upstream}/mcp"
policy = "{folder / "ev.json"}"
"""


@pytest.fixture(params=["postgres", "redis"])
def store(request: pytest.FixtureRequest) -> RedisServer | None:
    """What the replicas share besides PostgreSQL: nothing, or a Redis of the test's own (`[gateway] redis_url`)."""
    if request.param == "postgres":
        return None
    server: RedisServer = request.getfixturevalue("redis_server")
    return server


@asynccontextmanager
async def replicas(
    tmp_path: Path, database_url: str, store: RedisServer | None, policy: dict[str, Any] = POLICY
) -> AsyncIterator[tuple[Cluster, EverythingState]]:
    """The everything server in this process, three replicas and HAProxy in theirs (started off the event loop,
    which serves the upstream meanwhile)."""
    state = EverythingState()
    gateway = f'redis_url = "{store.url}"' if store is not None else ""
    async with serve_http(everything_http_app(state)) as upstream:
        text = config_text(tmp_path, database_url, upstream, policy, gateway)
        manager = cluster(tmp_path, text)
        running = await anyio.to_thread.run_sync(manager.__enter__)
        try:
            yield running, state
        finally:
            await anyio.to_thread.run_sync(manager.__exit__, None, None, None)


async def pending_id(url: str, tool: str) -> str:
    async with httpx2.AsyncClient(base_url=url, headers=ALICE, timeout=5) as http:
        while True:  # bounded by the caller's fail_after
            listing = (await http.get(f"/api/approvals?status=pending&tool={tool}")).json()["approvals"]
            if listing:
                return str(listing[0]["id"])
            await anyio.sleep(0.02)


def audit_rows(database_url: str) -> list[AuditEvent]:
    engine = create_database_engine(database_url, migrate=False)
    try:
        with Session(engine) as session:
            return list(session.exec(select(AuditEvent).order_by(col(AuditEvent.id))).all())
    finally:
        engine.dispose()


async def test_a_call_held_on_one_replica_is_approved_through_another_and_runs_once(
    tmp_path: Path, database_url: str, store: RedisServer | None
) -> None:
    async with replicas(tmp_path, database_url, store) as (running, state):
        here, there = running.replicas[0], running.replicas[1]
        results: list[CallToolResult] = []
        async with connect(f"{here.url}/mcp/ev") as client:
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:

                    async def call() -> None:
                        results.append(await client.call_tool("delete_record", {"record_id": "r-1"}))

                    tg.start_soon(call)
                    approval_id = await pending_id(running.url, "delete_record")
                    async with httpx2.AsyncClient(base_url=there.url, headers=ALICE, timeout=5) as http:
                        decided = await http.post(f"/api/approvals/{approval_id}/approve", json={"reason": "ok"})
                    clicked = anyio.current_time()
            answered = anyio.current_time()

    assert decided.status_code == 200 and decided.json()["status"] == "approved"
    assert not results[0].is_error and state.deleted_records == ["r-1"]
    assert answered - clicked < 1  # the bus woke it: not the 2-s poll, nor the 20-s hold
    kinds = [r.kind for r in audit_rows(database_url) if r.tool == "delete_record"]
    assert kinds.count("approved") == 1 and kinds.count("executed") == 1


async def test_a_timeout_fires_once_although_every_replica_sweeps(
    tmp_path: Path, database_url: str, store: RedisServer | None
) -> None:
    async with replicas(tmp_path, database_url, store) as (running, state):
        async with connect(f"{running.url}/mcp/ev") as client:
            with anyio.fail_after(30):
                result = await client.call_tool("drop_table", {"name": "users"})
        await anyio.sleep(1.5)  # every replica's sweep has had its turn at the expired request

    assert result.is_error and "before its deadline" in "".join(getattr(b, "text", "") for b in result.content)
    assert state.dropped_tables == []
    rows = [r for r in audit_rows(database_url) if r.tool == "drop_table"]
    assert [r.kind for r in rows].count("expired") == 1


async def test_the_audit_chain_verifies_with_every_replica_writing(
    tmp_path: Path, database_url: str, store: RedisServer | None
) -> None:
    async with replicas(tmp_path, database_url, store) as (running, _):
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for worker in range(6):

                    async def calls(worker: int = worker) -> None:
                        async with connect(f"{running.url}/mcp/ev") as client:
                            for i in range(10):
                                await client.call_tool("echo", {"text": f"{worker}-{i}"})

                    tg.start_soon(calls)
        served = []
        for replica in running.replicas:
            metrics = httpx2.get(f"{replica.url}/metrics", timeout=5).text
            served.append(int(sum(float(n) for n in re.findall(r'decision="allowed",server="ev"\} (\S+)', metrics))))
        # Stopped (SIGTERM): each replica writes what it still holds before it exits.
        await anyio.to_thread.run_sync(running.stop)
        verified = await anyio.to_thread.run_sync(main, ["--config", str(running.config), "audit", "verify"])

    assert all(count > 0 for count in served) and sum(served) == 60  # all three served calls, and wrote rows
    assert verified == 0
    echoed = [r for r in audit_rows(database_url) if r.tool == "echo" and r.kind == "allowed"]
    assert len(echoed) == 60


async def test_a_replica_killed_with_sigkill_loses_no_approval(
    tmp_path: Path, database_url: str, store: RedisServer | None
) -> None:
    async with replicas(tmp_path, database_url, store) as (running, state):
        doomed = running.replicas[2]
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    # The replica dies under the call: its client ends with a transport error.
                    with contextlib.suppress(Exception):
                        async with connect(f"{doomed.url}/mcp/ev") as client:
                            await client.call_tool("delete_record", {"record_id": "r-2"})

                tg.start_soon(call)
                approval_id = await pending_id(running.url, "delete_record")
                await anyio.to_thread.run_sync(running.kill, 2)
            await anyio.sleep(1)  # HAProxy's health check takes the dead replica out
            async with httpx2.AsyncClient(base_url=running.url, headers=ALICE, timeout=5) as http:
                still = (await http.get(f"/api/approvals/{approval_id}")).json()
                decided = await http.post(f"/api/approvals/{approval_id}/approve", json={"reason": "after the crash"})
            async with connect(f"{running.url}/mcp/ev") as client:
                repeat = await client.call_tool("delete_record", {"record_id": "r-2"})

    assert still["status"] == "pending"  # the request outlived the replica that held its call
    assert decided.status_code == 200
    assert not repeat.is_error and state.deleted_records == ["r-2"]  # the agent's repeat collects it, once
    kinds = [r.kind for r in audit_rows(database_url) if r.tool == "delete_record"]
    assert kinds.count("requested") == 1 and kinds.count("approved") == 1 and kinds.count("executed") == 1


LIMITED: dict[str, Any] = json.loads(json.dumps(POLICY))  # a copy, with a limit on `add`
LIMITED["tools"]["add"] = {"limits": [{"counter": "adds", "window": "minute", "max": 5, "scope": "agent"}]}


def said(result: CallToolResult) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


async def test_a_limit_holds_exactly_across_replicas(
    tmp_path: Path, database_url: str, store: RedisServer | None
) -> None:
    async with replicas(tmp_path, database_url, store, LIMITED) as (running, _):
        async with connect(f"{running.url}/mcp/ev") as client:  # each request goes to the next replica
            with anyio.fail_after(60):
                results = [await client.call_tool("add", {"a": i, "b": 1}) for i in range(20)]

    allowed = [r for r in results if not r.is_error]
    refused = [said(r) for r in results if r.is_error]
    assert len(allowed) == 5 and len(refused) == 15
    assert all('counter "adds" allows 5 calls per minute per agent across all servers' in r for r in refused)


async def test_a_redis_restarted_under_the_replicas_fails_closed_then_recovers(
    tmp_path: Path, database_url: str, redis_server: RedisServer
) -> None:
    store = redis_server  # the test's own: it stops and starts it
    async with replicas(tmp_path, database_url, store, LIMITED) as (running, _):
        async with connect(f"{running.url}/mcp/ev") as client:
            with anyio.fail_after(60):
                before = await client.call_tool("add", {"a": 1, "b": 1})
                await anyio.to_thread.run_sync(store.stop)
                down = [await client.call_tool("add", {"a": 2, "b": 2}) for _ in range(3)]
                unlimited = [await client.call_tool("echo", {"text": f"still {i}"}) for i in range(3)]
                health = [httpx2.get(f"{r.url}/healthz", timeout=5).json() for r in running.replicas]
                await anyio.to_thread.run_sync(store.start)
                while (after := await client.call_tool("add", {"a": 3, "b": 3})).is_error:  # noqa: ASYNC110
                    await anyio.sleep(0.1)  # the bounded wait (fail_after) for the replicas to reconnect

    assert not before.is_error
    assert all(r.is_error for r in down)
    assert all(
        "the rate-limit store (redis) cannot be reached, so calls this policy limits are refused" in said(r)
        for r in down
    )
    assert [said(r) for r in unlimited] == ["still 0", "still 1", "still 2"]
    assert all(h["status"] == "degraded" for h in health if h["limits"]["ok"] is False)
    assert any(h["limits"]["ok"] is False for h in health)
    assert not after.is_error and said(after) == "6"
