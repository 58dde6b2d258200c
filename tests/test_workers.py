"""`signoff serve --workers N`: several processes on one port and one database, and the Procfile that runs them."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster import ROOT, free_port, wait_until_healthy
from tests.conftest import AGENT_TOKEN, connect
from tests.fakes.redis_server import RedisServer
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http

pytestmark = pytest.mark.anyio


def _environment() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    return {**clean, "PYTHONPATH": str(ROOT)}


async def test_two_workers_share_the_port_the_database_and_redis_and_stop_on_sigterm(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    state = EverythingState()
    async with serve_http(everything_http_app(state)) as upstream:
        (tmp_path / "ev.json").write_text('{"version": "1", "default": "allow"}')
        config = tmp_path / "signoff.toml"
        redis = redis_server
        config.write_text(
            f'[gateway]\ndatabase_url = "sqlite:///{tmp_path / "signoff.db"}"\nredis_url = "{redis.url}"\n\n'
            f'[[agents]]\nname = "alpha"\ntoken = "{AGENT_TOKEN}"\n\n'
            f'[[servers]]\nname = "ev"\nurl = "{upstream}/mcp"\npolicy = "{tmp_path / "ev.json"}"\n'
        )
        port = free_port()
        command = [sys.executable, "-m", "integrations.cli", "--config", str(config), "serve"]
        command += ["--port", str(port), "--workers", "2", "--log-level", "warning"]
        log = tmp_path / "serve.log"
        with log.open("wb") as out:
            process = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything waits on the loop
                command, cwd=tmp_path, env=_environment(), stdout=out, stderr=subprocess.STDOUT
            )
        try:
            url = f"http://127.0.0.1:{port}"
            await anyio.to_thread.run_sync(wait_until_healthy, url, process, log)
            replicas: set[str] = set()
            with anyio.fail_after(30):
                while len(replicas) < 2:  # a new connection each time: the kernel hands it to either worker
                    async with httpx2.AsyncClient(timeout=5) as http:
                        health = (await http.get(f"{url}/healthz")).json()
                    if health["status"] == "ok":
                        replicas.add(health["replica"])
                async with connect(f"{url}/mcp/ev") as client:
                    added = await client.call_tool("add", {"a": 2, "b": 3})
                for n in range(6):  # a new client each time, so both workers take calls
                    async with connect(f"{url}/mcp/ev") as client:
                        await client.call_tool("add", {"a": n, "b": 1})
                counted: list[float] = []
                answered: set[str] = set()
                while len(answered) < 2:  # every worker's scrape adds up both workers' counts
                    async with httpx2.AsyncClient(timeout=5) as http:
                        answered.add((await http.get(f"{url}/healthz")).json()["replica"])
                        page = (await http.get(f"{url}/metrics")).text
                    counted.append(_allowed(page))
        finally:
            process.send_signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(process.wait, 30)
    printed = log.read_text()

    assert len({r.split(":")[1] for r in replicas}) == 2  # two processes answered
    assert not added.is_error and added.structured_content == {"result": 5}
    assert "2 worker processes share 127.0.0.1:" in printed
    assert code == 0
    assert set(counted) == {7.0}  # whichever worker answered /metrics


def _allowed(page: str) -> float:
    """The allowed calls on `ev`, as Prometheus reads the page."""
    return sum(
        s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
        if s.name == "signoff_tool_calls_total" and s.labels == {"server": "ev", "decision": "allowed"}
    )


def test_workers_need_a_config_the_demo_is_one_process(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "integrations.cli", "serve", "--workers", "2"]
    done = subprocess.run(command, cwd=tmp_path, env=_environment(), capture_output=True, text=True, timeout=30)

    assert done.returncode == 2
    assert done.stderr.strip() == "signoff: --workers needs a config: the demo's tokens and database are one process's"
    assert not (tmp_path / "signoff.db").exists()


def test_workers_on_sqlite_alone_are_refused_naming_what_they_need(tmp_path: Path) -> None:
    (tmp_path / "ev.json").write_text('{"version": "1", "default": "allow"}')
    config = tmp_path / "signoff.toml"
    config.write_text(
        f'[gateway]\ndatabase_url = "sqlite:///{tmp_path / "signoff.db"}"\n\n'
        f'[[agents]]\nname = "alpha"\ntoken = "{AGENT_TOKEN}"\n\n'
        f'[[servers]]\nname = "ev"\nurl = "http://127.0.0.1:9/mcp"\npolicy = "{tmp_path / "ev.json"}"\n'
    )
    command = [sys.executable, "-m", "integrations.cli", "--config", str(config), "serve", "--workers", "2"]
    done = subprocess.run(command, cwd=tmp_path, env=_environment(), capture_output=True, text=True, timeout=30)

    assert done.returncode == 2
    assert done.stderr.strip() == (
        "signoff: --workers needs PostgreSQL ([gateway] database_url) or Redis ([gateway] redis_url) for the workers"
        " to share: on SQLite alone signoff serves one process"
    )


def test_workers_must_be_a_whole_number_of_at_least_one(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "integrations.cli", "serve", "--workers", "0"]
    done = subprocess.run(command, cwd=tmp_path, env=_environment(), capture_output=True, text=True, timeout=30)

    assert done.returncode == 2
    assert "argument --workers: '0' is not a whole number of at least 1" in done.stderr


def test_the_procfile_runs_signoff_serve_with_workers_and_refuses_to_serve_without_a_config(tmp_path: Path) -> None:
    web = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:"))
    command = web.removeprefix("web:").strip()
    assert re.fullmatch(r"signoff serve --host 0\.0\.0\.0 --port \$PORT --workers \$\{WEB_CONCURRENCY:-2\}", command)
    signoff = f"{sys.executable} -m integrations.cli"
    shell = command.replace("signoff", signoff, 1)
    env = {**_environment(), "PORT": str(free_port())}
    done = subprocess.run(["bash", "-c", shell], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)

    assert done.returncode == 2
    assert "signoff: refusing to serve the demo on 0.0.0.0" in done.stderr
    assert not (tmp_path / "signoff.db").exists()
