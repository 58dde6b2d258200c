"""Replicas tell each other at once: a decision taken on one answers the call held on another well before the 2-s
poll would, over PostgreSQL LISTEN/NOTIFY or Redis pub/sub; with the bus down the poll still delivers, /healthz says
degraded, and the listener comes back by itself."""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
from mcp_types import CallToolResult
from sqlalchemy import text

from integrations.broadcast import Broadcast
from tests.conftest import Running
from tests.fakes.redis_server import RedisServer
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http
from tests.test_approval_flow import GUARDED, api, wait_for_pending

pytestmark = pytest.mark.anyio

Replicas = Callable[..., AbstractAsyncContextManager[tuple[Running, Running]]]


def bus(running: Running) -> Broadcast:
    found: Broadcast = running.app.state.signoff.bus
    return found


async def connected(*replicas: Running) -> None:
    for running in replicas:
        while not bus(running).connected:  # bounded by the caller's fail_after
            await bus(running).wait_changed()


async def health(running: Running) -> dict[str, Any]:
    async with httpx2.AsyncClient(base_url=running.url, timeout=10) as http:
        body: dict[str, Any] = (await http.get("/healthz")).json()
        return body


@pytest.fixture
def replicas(signoff: Any) -> Replicas:
    """Two signoffs on one database (and `redis_url`, if given), guarding the everything upstream."""

    @asynccontextmanager
    async def start(database_url: str, redis_url: str | None = None) -> AsyncIterator[tuple[Running, Running]]:
        gateway: dict[str, Any] = {"approval_hold": "20s", **({"redis_url": redis_url} if redis_url else {})}
        async with serve_http(everything_http_app(EverythingState())) as upstream:
            servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": GUARDED}]
            options = {"database_url": database_url, "approvers": True, "gateway": gateway}
            async with signoff(servers, **options) as here, signoff(servers, **options) as there:
                with anyio.fail_after(5):
                    await connected(here, there)
                yield here, there

    return start


async def approve_elsewhere(held_on: Running, decide_on: Running) -> tuple[CallToolResult, float, str]:
    """Hold a delete_record call on `held_on`, approve it through `decide_on`'s API: the result, and how long after
    the approval it came (taken when the result arrives, not after the client's session has closed)."""
    results: list[tuple[CallToolResult, float]] = []
    async with held_on.client("ev") as client, anyio.create_task_group() as tg:

        async def call() -> None:
            result = await client.call_tool("delete_record", {"record_id": "r-1"})
            results.append((result, anyio.current_time()))

        tg.start_soon(call)
        approval_id = await wait_for_pending(decide_on, "delete_record")
        decided = await api(decide_on, "POST", f"/api/approvals/{approval_id}/approve", "carol-approver-token")
        assert decided.status_code == 200
        clicked = anyio.current_time()
    result, answered = results[0]
    return result, answered - clicked, approval_id


@pytest.mark.postgres
@pytest.mark.parametrize("shared_database", ["postgres"], indirect=True)
async def test_a_decision_on_one_replica_answers_the_call_held_on_another_at_once_over_postgres(
    replicas: Replicas, shared_database: str
) -> None:
    async with replicas(shared_database) as (here, there):
        with anyio.fail_after(10):
            result, waited, _ = await approve_elsewhere(here, there)
        seen = await health(here)

    assert not result.is_error
    assert waited < 0.5  # the bus, not the decision poll (30 s while the bus is up; 2 s without)
    assert seen["status"] == "ok"
    assert seen["bus"] | {"sent": 0, "heard": 0} == {
        "kind": "postgresql",
        "connected": True,
        "reconnects": 0,
        "sent": 0,
        "heard": 0,
        "dropped": 0,
        "last_error": None,
    }


async def test_a_decision_on_one_replica_answers_the_call_held_on_another_at_once_over_redis(
    replicas: Replicas, tmp_path: Any, redis_server: RedisServer
) -> None:
    async with replicas(f"sqlite:///{tmp_path / 'shared.db'}", redis_server.url) as (here, there):
        with anyio.fail_after(10):
            result, waited, _ = await approve_elsewhere(here, there)
        seen = await health(here)

    assert not result.is_error
    assert waited < 0.5
    assert seen["bus"]["kind"] == "redis" and seen["bus"]["connected"] and seen["bus"]["heard"] >= 1


async def test_with_redis_down_the_poll_still_delivers_and_the_bus_comes_back(
    replicas: Replicas, tmp_path: Any, redis_server: RedisServer
) -> None:
    async with replicas(f"sqlite:///{tmp_path / 'shared.db'}", redis_server.url) as (here, there):
        with anyio.fail_after(15):
            redis_server.stop()
            while bus(here).connected or bus(there).connected:
                await (bus(here) if bus(here).connected else bus(there)).wait_changed()
            down = await health(here)
            result, waited, _ = await approve_elsewhere(here, there)
            redis_server.start()
            await connected(here, there)
            back = await health(here)
            again, fast, _ = await approve_elsewhere(there, here)

    assert not result.is_error and waited < 4  # the 2-s decision poll, back at its own pace the moment the bus went
    assert down["status"] == "degraded"
    assert down["bus"]["connected"] is False and down["bus"]["last_error"]
    assert back["status"] == "ok" and back["bus"]["reconnects"] >= 1
    assert not again.is_error and fast < 0.5


@pytest.mark.postgres
@pytest.mark.parametrize("shared_database", ["postgres"], indirect=True)
async def test_a_listener_whose_backend_is_terminated_reconnects_and_delivers_again(
    replicas: Replicas, shared_database: str
) -> None:
    async with replicas(shared_database) as (here, there):
        carrier = bus(here)._carrier
        backend = getattr(carrier, "backend", None)
        assert backend is not None
        with here.app.state.signoff.database.begin() as db:
            db.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        with anyio.fail_after(10):
            await bus(here).wait_changed()  # lost
            await connected(here)
            result, waited, _ = await approve_elsewhere(here, there)
        seen = await health(here)

    assert not result.is_error and waited < 0.5
    assert seen["bus"]["reconnects"] == 1 and seen["bus"]["connected"]
    assert "terminat" in (seen["bus"]["last_error"] or "")
