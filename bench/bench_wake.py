"""Cross-replica wake-up: a decision taken through replica B's API → the call held on replica A answers.

Run: PYTHONPATH=. python bench/bench_wake.py --database postgresql+psycopg://postgres@127.0.0.1:5432/test
     [--redis redis://127.0.0.1:6379/0] [--trials 50]

Two signoff apps (each its own engine, pool and bus) on real uvicorn servers on loopback, in one process, one
database; a real MCP client holds `delete_record` on A, the approver approves through B's API. Two figures per
trial: from sending the approve to the held result (what a person sees), and from B's 200 (the decision committed)
to the held result (the wake-up itself). The database is emptied first: point it at a scratch database.
"""

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import anyio

from integrations.app import create_app
from integrations.settings import load_settings
from tests.conftest import AGENT_TOKEN, Running, _empty, connect, write_config
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http
from tests.test_approval_flow import GUARDED, api, wait_for_pending


async def main(database: str, redis: str | None, trials: int) -> None:
    if database.startswith("postgresql"):
        _empty(database)
    tmp = Path(tempfile.mkdtemp())
    gateway = {"approval_hold": "20s", **({"redis_url": redis} if redis else {})}
    async with serve_http(everything_http_app(EverythingState())) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": GUARDED}]
        apps = []
        for _ in range(2):
            config = write_config(tmp, servers, database_url=database, approvers=True, gateway=gateway)
            apps.append(create_app(load_settings(config, environ={"ALPHA_TOKEN": AGENT_TOKEN})))
        async with serve_http(apps[0]) as url_a, serve_http(apps[1]) as url_b:
            here, there = Running(url_a, apps[0]), Running(url_b, apps[1])
            await anyio.sleep(0.5)  # both buses connected
            whole, wake = [], []
            async with connect(here.mcp_url("ev")) as client:
                for i in range(trials):
                    done = anyio.Event()
                    end = [0.0]

                    async def call(i: int = i, end: list[float] = end, done: anyio.Event = done) -> None:
                        result = await client.call_tool("delete_record", {"record_id": f"r-{i}"})
                        end[0] = time.perf_counter()
                        assert not result.is_error
                        done.set()

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(call)
                        approval_id = await wait_for_pending(there, "delete_record")
                        sent = time.perf_counter()
                        decided = await api(
                            there, "POST", f"/api/approvals/{approval_id}/approve", "carol-approver-token"
                        )
                        committed = time.perf_counter()
                        assert decided.status_code == 200
                        await done.wait()
                    whole.append((end[0] - sent) * 1000)
                    wake.append(max(0.0, end[0] - committed) * 1000)
            bus = apps[0].state.signoff.bus.health()
    for name, xs in (("approve sent → held result", whole), ("decision committed → held result", wake)):
        xs.sort()
        p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))]
        median = statistics.median(xs)
        print(f"{bus['kind']:10} {name:34} median {median:6.1f} ms  p99 {p99:6.1f} ms  max {xs[-1]:6.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", required=True)
    parser.add_argument("--redis")
    parser.add_argument("--trials", type=int, default=50)
    options = parser.parse_args()
    asyncio.run(main(options.database, options.redis, options.trials))
