"""Rate limits counted in the shared store, as replicas use it: SQLite, PostgreSQL (-m postgres) and Redis.

Each "replica" is a `SharedLimits` over an engine or a Redis client of its own, on one store.
"""

import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import redis
from mcp_types import CallToolResult, TextContent
from sqlalchemy import text as sql
from sqlalchemy.engine import Engine

from approvals.store import Store
from integrations.database import create_database_engine, transaction_slots
from integrations.errors import ConfigError
from integrations.limiting import SharedLimits, Uncounted, key_name
from integrations.ratelogs import STATEMENT_TIMEOUT_MS, DatabaseRateLog, RedisRateLog, lock_id
from integrations.settings import load_settings
from integrations.shared import connect_redis
from policies import Limit, LimitsUnavailable, Policy, RateLimited, Scope, ToolCall
from policies.limits import distinct_keys
from tests.conftest import write_config
from tests.fakes.redis_server import RedisServer

pytestmark = pytest.mark.anyio

T0 = 1_800_000_000.0
REDIS_URL = "redis://127.0.0.1:6379/15"  # the machine's Redis, a db of its own; each test has its own prefix
CALL = ToolCall("srv", "kill", {}, "agent-1")
Replica = Callable[[], AbstractAsyncContextManager[SharedLimits]]


def reached(*limits: Limit) -> list[tuple[str, Limit]]:
    return [(f'tools["kill"].limits[{i}]', limit) for i, limit in enumerate(limits)]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "redis"])
def replica(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Replica]:
    """Factory: `async with replica() as limits:` a new replica's limiter on the test's one store."""
    kind: str = request.param
    prefix = f"test:{uuid.uuid4().hex}:"
    if kind == "postgres":
        url = os.environ.get("SIGNOFF_TEST_DATABASE_URL", "")
        if not url:
            pytest.skip("SIGNOFF_TEST_DATABASE_URL is not set")
        engine = create_database_engine(url)
        with engine.begin() as connection:  # this test's rows only
            connection.exec_driver_sql("DELETE FROM rate_hits")
        engine.dispose()
    url = os.environ.get("SIGNOFF_TEST_DATABASE_URL", "") if kind == "postgres" else f"sqlite:///{tmp_path / 'l.db'}"

    @asynccontextmanager
    async def start() -> AsyncIterator[SharedLimits]:
        if kind == "redis":
            client = connect_redis(REDIS_URL)
            try:
                yield SharedLimits(RedisRateLog(client, prefix=prefix))
            finally:
                await client.aclose()
            return
        engine: Engine = create_database_engine(url)
        try:
            yield SharedLimits(DatabaseRateLog(Store(engine, slots=transaction_slots(engine)), lambda: T0))
        finally:
            checked_out = engine.pool.checkedout()  # type: ignore[attr-defined]
            engine.dispose()
            assert checked_out == 0, "a count leaked a database connection"

    yield start
    if kind == "redis":
        with redis.Redis.from_url(REDIS_URL) as cleanup:
            keys = list(cleanup.scan_iter(match=prefix + "*"))
            if keys:
                cleanup.delete(*keys)


async def test_two_replicas_taking_turns_admit_exactly_max_together_with_exact_retry_after(replica: Replica) -> None:
    limit = Limit("kills", 60.0, 5, Scope.GRANT)
    async with replica() as a, replica() as b:
        outcomes = [await (a, b)[i % 2].count(Policy(), CALL, reached(limit), T0 + i) for i in range(12)]
    assert outcomes[:5] == [None] * 5
    for i, refused in enumerate(outcomes[5:], start=5):
        assert isinstance(refused, RateLimited)
        assert refused.rule == 'tools["kill"].limits[0]'
        assert refused.counter == "kills"
        assert refused.retry_after == pytest.approx(60 - i)  # the first call, at T0, leaves at T0 + 60


async def test_the_budget_survives_a_restart_and_frees_exactly_when_the_oldest_call_leaves(replica: Replica) -> None:
    limit = Limit("kills", 60.0, 3, Scope.GRANT)
    async with replica() as before:
        for offset in (0.0, 10.0, 20.0):
            assert await before.count(Policy(), CALL, reached(limit), T0 + offset) is None
    async with replica() as after:  # a new process: nothing of the old one's memory
        refused = await after.count(Policy(), CALL, reached(limit), T0 + 30)
        assert isinstance(refused, RateLimited)
        assert refused.retry_after == pytest.approx(30.0)
        assert refused.reason == 'counter "kills" allows 3 calls per minute per agent on this server; retry in 30s'
        assert await after.count(Policy(), CALL, reached(limit), T0 + 60) is None
        still = await after.count(Policy(), CALL, reached(limit), T0 + 65)
        assert isinstance(still, RateLimited) and still.retry_after == pytest.approx(5.0)


async def test_concurrent_counts_from_many_tasks_on_two_replicas_admit_exactly_max(replica: Replica) -> None:
    limit = Limit("all", 60.0, 7, Scope.GLOBAL)
    outcomes: list[object] = []
    async with replica() as a, replica() as b:

        async def one(i: int) -> None:
            caller = ToolCall("srv", "kill", {}, f"agent-{i}")  # global scope: every agent shares the budget
            outcomes.append(await (a, b)[i % 2].count(Policy(), caller, reached(limit), T0 + i / 1000))

        with anyio.fail_after(8):
            async with anyio.create_task_group() as tasks:
                for i in range(40):
                    tasks.start_soon(one, i)
    assert outcomes.count(None) == 7
    assert all(isinstance(o, RateLimited) for o in outcomes if o is not None)


async def test_a_call_counts_in_all_its_limits_or_none_and_a_counter_named_twice_counts_once(
    replica: Replica,
) -> None:
    tight, loose = Limit("kill", 60.0, 1, Scope.GRANT), Limit("all", 60.0, 3, Scope.GRANT)
    async with replica() as limits:
        assert await limits.count(Policy(), CALL, reached(loose, tight, loose), T0) is None
        refused = await limits.count(Policy(), CALL, reached(loose, tight), T0 + 1)
        assert isinstance(refused, RateLimited) and refused.counter == "kill"  # and "all" was not spent
        assert await limits.count(Policy(), CALL, reached(loose), T0 + 2) is None
        assert await limits.count(Policy(), CALL, reached(loose), T0 + 3) is None
        exhausted = await limits.count(Policy(), CALL, reached(loose), T0 + 4)
        assert isinstance(exhausted, RateLimited) and exhausted.counter == "all"
        assert exhausted.retry_after == pytest.approx(56.0)


async def test_budgets_and_scopes_keep_their_own_keys(replica: Replica) -> None:
    limit = Limit("c", 60.0, 1, Scope.GRANT)
    async with replica() as limits:
        assert await limits.count(Policy(), CALL, reached(limit), T0) is None
        assert await limits.count(Policy(counters="agent-1's own"), CALL, reached(limit), T0) is None
        assert await limits.count(Policy(), ToolCall("other", "kill", {}, "agent-1"), reached(limit), T0) is None
        assert isinstance(await limits.count(Policy(), CALL, reached(limit), T0), RateLimited)


async def test_a_database_that_cannot_be_reached_refuses_limited_calls_with_a_clear_reason_until_it_can() -> None:
    engine = create_database_engine("postgresql+psycopg://signoff:hunter2@127.0.0.1:9/none", migrate=False)
    limits = SharedLimits(DatabaseRateLog(Store(engine, slots=1), lambda: T0))
    limit = Limit("kills", 60.0, 5, Scope.GRANT)
    refused = await limits.count(Policy(), CALL, reached(limit), T0)
    assert refused == RateLimited(
        'tools["kill"].limits[0]',
        "kills",
        1.0,
        "the rate-limit store (database) cannot be reached, so calls this policy limits are refused; retry shortly",
    )
    health = limits.health()
    assert health["backend"] == "database" and health["ok"] is False and health["refused_unreachable"] == 1
    assert "hunter2" not in str(health["last_error"]) and health["last_error"]
    allowing = Policy(limits_unavailable=LimitsUnavailable.ALLOW)
    uncounted = await limits.count(allowing, CALL, reached(limit), T0)
    assert isinstance(uncounted, Uncounted) and "cannot be reached" in uncounted.detail
    assert limits.health()["uncounted"] == 1
    engine.dispose()


async def test_the_gateway_setting_allow_lets_limited_calls_through_uncounted_unless_the_policy_refuses() -> None:
    client = connect_redis("redis://127.0.0.1:9/0")  # nothing listens on the discard port
    limits = SharedLimits(RedisRateLog(client), unavailable=LimitsUnavailable.ALLOW)
    limit = Limit("kills", 60.0, 5, Scope.GRANT)
    assert isinstance(await limits.count(Policy(), CALL, reached(limit), T0), Uncounted)
    refusing = Policy(limits_unavailable=LimitsUnavailable.REFUSE)
    refused = await limits.count(refusing, CALL, reached(limit), T0)
    assert isinstance(refused, RateLimited) and refused.reason.startswith("the rate-limit store (redis) cannot")
    await client.aclose()


async def test_database_prune_deletes_only_rows_past_their_window(tmp_path: Path) -> None:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'p.db'}")
    now = [T0]
    log = DatabaseRateLog(Store(engine, slots=1), lambda: now[0])
    limits = SharedLimits(log)
    for i in range(3):
        assert await limits.count(Policy(), ToolCall("s", "t", {}, f"a{i}"), reached(Limit("c", 10.0, 1)), T0) is None
    assert await limits.count(Policy(), CALL, reached(Limit("c", 60.0, 1)), T0) is None
    now[0] = T0 + 10
    assert await log.prune_once() == 3
    assert isinstance(await limits.count(Policy(), CALL, reached(Limit("c", 60.0, 1)), T0 + 10), RateLimited)
    engine.dispose()


DEMO = [sys.executable, "-m", "integrations.demo"]
LIMITED_READS = {
    "version": "1",
    "default": "deny",
    "tools": {
        "list_connections": {"limits": [{"counter": "reads", "window": "minute", "max": 100}]},
        "get_connection": {},
    },
}
REFUSED_TEXT = "the rate-limit store (redis) cannot be reached, so calls this policy limits are refused; retry shortly"


def text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


async def test_redis_restarted_fails_limited_calls_closed_says_degraded_lets_unlimited_through_then_recovers(
    signoff: Any, redis_server: RedisServer
) -> None:
    servers = [
        {"name": "demo", "command": DEMO, "policy": LIMITED_READS},
        {"name": "open", "command": DEMO, "policy": {**LIMITED_READS, "limits_unavailable": "allow"}},
    ]
    running_with = signoff(servers, gateway={"redis_url": redis_server.url})
    async with running_with as running, running.client("demo") as client, running.client("open") as other:
        async with httpx2.AsyncClient(base_url=running.url) as http:
            with anyio.fail_after(30):
                first = await client.call_tool("list_connections", {})
                healthy = (await http.get("/healthz")).json()
                redis_server.stop()
                refused = await client.call_tool("list_connections", {})
                unlimited = await client.call_tool("get_connection", {"connection_id": "conn-1"})
                uncounted = await other.call_tool("list_connections", {})
                degraded = await http.get("/healthz")
                metrics = (await http.get("/metrics")).text
                redis_server.start()
                again = await client.call_tool("list_connections", {})
                recovered = (await http.get("/healthz")).json()
        rows = await running.audit()

    assert not first.is_error
    assert healthy["status"] == "ok"
    assert healthy["limits"] == {
        "backend": "redis",
        "ok": True,
        "last_error": None,
        "refused_unreachable": 0,
        "uncounted": 0,
        "unavailable": "refuse",
    }
    assert refused.is_error and REFUSED_TEXT in text(refused)
    meta = (refused.meta or {})["signoff/decision"]
    assert (meta["outcome"], meta["counter"], meta["retry_after"]) == ("rate_limited", "reads", 1.0)
    assert not unlimited.is_error and not uncounted.is_error
    assert degraded.status_code == 200
    health = degraded.json()
    assert health["status"] == "degraded"
    assert health["limits"]["ok"] is False
    assert (health["limits"]["refused_unreachable"], health["limits"]["uncounted"]) == (1, 1)
    assert health["limits"]["last_error"].startswith("ConnectionError")
    assert 'signoff_limit_refusals_total{reason="store_unreachable"} 1' in metrics
    assert not again.is_error
    assert recovered["limits"]["ok"] is True
    bus_back = recovered.get("bus", {}).get("connected", True)  # the wake-up bus reconnects on a schedule of its own
    assert recovered["status"] == ("ok" if bus_back else "degraded")
    limited = [(r.server, r.kind, r.outcome, r.detail) for r in rows if r.tool == "list_connections"]
    assert limited[1] == ("demo", "rate_limited", "refused", REFUSED_TEXT)
    assert limited[2][:2] == ("open", "allowed")
    assert "not counted against its limits: the rate-limit store (redis) cannot be reached" in limited[2][3]


def test_limits_unavailable_defaults_to_refuse_and_a_wrong_word_is_refused_at_the_key(tmp_path: Path) -> None:
    servers = [{"name": "demo", "command": DEMO, "policy": LIMITED_READS}]
    environ = {"ALPHA_TOKEN": "agent-token-alpha"}
    default = load_settings(write_config(tmp_path, servers), environ=environ)
    assert default.gateway.limits_unavailable is LimitsUnavailable.REFUSE
    allowing = write_config(tmp_path, servers, gateway={"limits_unavailable": "allow"})
    assert load_settings(allowing, environ=environ).gateway.limits_unavailable is LimitsUnavailable.ALLOW
    with pytest.raises(ConfigError) as refused:
        load_settings(write_config(tmp_path, servers, gateway={"limits_unavailable": "sometimes"}), environ=environ)
    assert "gateway.limits_unavailable" in str(refused.value)


@pytest.fixture(params=["database", "redis"])
def replicas_store(request: pytest.FixtureRequest, shared_database: str) -> Iterator[dict[str, Any]]:
    """What two gateways share: the database (SQLite file or PostgreSQL), and with `redis` the machine's Redis."""
    if request.param == "database":
        yield {"database_url": shared_database}
        return
    with redis.Redis.from_url(REDIS_URL) as client:
        forget(client)
        yield {"database_url": shared_database, "gateway": {"redis_url": REDIS_URL}}
        forget(client)


def forget(client: "redis.Redis") -> None:
    """Delete the gateways' limit keys (their default prefix) from these tests' Redis db."""
    keys = list(client.scan_iter(match="signoff:limits:*"))
    if keys:
        client.delete(*keys)


async def test_two_gateways_on_one_store_admit_exactly_max_of_calls_alternating_between_them(
    signoff: Any, replicas_store: dict[str, Any]
) -> None:
    policy = {
        "version": "1",
        "default": "deny",
        "tools": {"list_connections": {"limits": [{"counter": "reads", "window": "minute", "max": 5}]}},
    }
    servers = [{"name": "demo", "command": DEMO, "policy": policy}]
    start = T0 + 45  # 15 s before a minute turns, where fixed windows let a second burst through
    now = [start]
    async with (
        signoff(servers, clock=lambda: now[0], **replicas_store) as one,
        signoff(servers, clock=lambda: now[0], **replicas_store) as two,
        one.client("demo") as on_one,
        two.client("demo") as on_two,
    ):
        with anyio.fail_after(30):
            results = []
            for i in range(20):  # one call a second, to each replica in turn, across the turn of the minute
                now[0] = start + i
                results.append(await (on_one, on_two)[i % 2].call_tool("list_connections", {}))
    admitted = [i for i, r in enumerate(results) if not r.is_error]
    assert admitted == [0, 1, 2, 3, 4]
    retry = [(r.meta or {})["signoff/decision"]["retry_after"] for r in results[5:]]
    assert retry == [60.0 - i for i in range(5, 20)]


@pytest.mark.postgres
async def test_a_database_that_hangs_refuses_limited_calls_within_seconds(postgres_url: str) -> None:
    # Another session holds the key's lock and never lets go (a stuck transaction, a hung server): the count gives
    # up after the statement timeout and the call is refused, rather than waiting on the lock for ever.
    engine = create_database_engine(postgres_url)
    limits = SharedLimits(DatabaseRateLog(Store(engine, slots=transaction_slots(engine)), lambda: T0))
    limit = Limit("kills", 60.0, 5, Scope.GRANT)
    key = key_name(distinct_keys(CALL, reached(limit), "")[0][0])
    with engine.connect() as blocker:
        blocker.execute(sql("BEGIN"))
        blocker.execute(sql("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id(key)})
        started = anyio.current_time()
        refused = await limits.count(Policy(), CALL, reached(limit), T0)
        waited = anyio.current_time() - started
        blocker.execute(sql("ROLLBACK"))
    counted = await limits.count(Policy(), CALL, reached(limit), T0)
    engine.dispose()

    assert isinstance(refused, RateLimited) and "cannot be reached" in refused.reason
    assert waited < STATEMENT_TIMEOUT_MS / 1000 + 2
    assert counted is None  # the lock gone, the next call is counted
