"""Background work never dies silently: a failing part is restarted and named by /healthz until it runs again."""

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import httpx2
import pytest
from sqlalchemy import text

from integrations.supervision import Parts
from tests.conftest import Running
from tests.fakes.upstreams import everything_http_app, serve_http

pytestmark = pytest.mark.anyio

Start = Callable[..., AbstractAsyncContextManager[Running]]


async def test_a_part_that_fails_is_restarted_and_shown_down_until_it_runs_again() -> None:
    runs: list[int] = []
    finished = anyio.Event()
    resume = anyio.Event()

    async def flaky() -> None:
        runs.append(len(runs) + 1)
        if len(runs) < 3:
            raise RuntimeError(f"bad item {len(runs)}")
        await resume.wait()
        finished.set()

    async with anyio.create_task_group() as tg:
        parts = Parts(tg, first_pause=0.01)
        parts.start_soon(flaky, name="flaky part")
        with anyio.fail_after(5):
            while True:
                health = parts.health()
                if health["down"]:
                    break
                await anyio.sleep(0.001)
            while True:
                if len(runs) == 3:
                    break
                await anyio.sleep(0.001)
        running = parts.health()
        resume.set()
        with anyio.fail_after(5):
            await finished.wait()

    assert health["ok"] is False and health["down"]["flaky part"]["state"] == "restarting"
    assert health["down"]["flaky part"]["error"].startswith("RuntimeError: bad item")
    assert running == {"ok": True, "down": {}, "restarted": {"flaky part": 2}}


async def test_a_part_that_keeps_failing_stops_for_good_and_stays_named() -> None:
    async def broken() -> None:
        raise ValueError("always")

    async with anyio.create_task_group() as tg:
        parts = Parts(tg, restarts=2, first_pause=0.001)
        parts.start_soon(broken)
        with anyio.fail_after(5):
            while True:
                down = parts.health()["down"]
                if down and next(iter(down.values()))["state"] == "stopped":
                    break
                await anyio.sleep(0.001)

    assert list(down) == ["test_a_part_that_keeps_failing_stops_for_good_and_stays_named.<locals>.broken"]
    assert next(iter(down.values())) == {"error": "ValueError: always", "failures": 3, "state": "stopped"}


async def test_healthz_fails_while_the_audit_database_is_down_and_the_answer_waits_for_its_row(signoff: Start) -> None:
    """Durable before answered: a call made while the log cannot be written runs, but its answer waits until its
    row is committed; meanwhile /healthz says failing."""
    policy = {"version": "1", "default": "allow"}
    served: list[Any] = []
    with anyio.fail_after(30):
        async with (
            serve_http(everything_http_app()) as upstream,
            signoff([{"name": "ev", "url": f"{upstream}/mcp", "policy": policy}]) as running,
            httpx2.AsyncClient(base_url=running.url, timeout=10) as http,
            running.client("ev") as client,
        ):
            engine = running.app.state.signoff.database
            with engine.begin() as connection:
                connection.execute(text("ALTER TABLE audit_events RENAME TO audit_events_away"))
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    served.append(await client.call_tool("echo", {"text": "while down"}))

                tg.start_soon(call)
                while True:
                    down = await http.get("/healthz")
                    if down.status_code == 503:
                        break
                    await anyio.sleep(0.05)
                await anyio.sleep(0.5)
                answered_while_down = bool(served)
                with engine.begin() as connection:
                    connection.execute(text("ALTER TABLE audit_events_away RENAME TO audit_events"))
            while True:
                back = await http.get("/healthz")
                if back.status_code == 200:
                    break
                await anyio.sleep(0.05)
            rows = await running.audit()

    assert answered_while_down is False  # no answer without its row
    assert served[0].is_error is False
    body: dict[str, Any] = down.json()
    assert body["status"] == "failing" and body["audit"]["ok"] is False and body["audit"]["queued"] >= 1
    assert "audit_events" in body["audit"]["last_error"]
    assert back.json()["status"] == "ok"
    assert [r.tool for r in rows if r.tool == "echo"] == ["echo"]
