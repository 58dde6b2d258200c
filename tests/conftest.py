import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from sqlalchemy import MetaData
from sqlmodel import Session, col, select
from starlette.applications import Starlette

from approvals.models import AuditEvent, utcnow
from integrations.app import create_app
from integrations.database import create_database_engine
from integrations.logs import StderrHandler
from integrations.settings import load_settings
from tests.fakes.redis_server import REDIS_SERVER, RedisServer
from tests.fakes.upstreams import serve_http

AGENT_TOKEN = "agent-token-alpha"
OTHER_TOKEN = "agent-token-bravo"
READER = {"Authorization": "Bearer carol-approver-token"}  # any approver may read /api
APPROVERS = {"alice": ["dba"], "bob": ["dba"], "carol": ["ops"], "alpha": []}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A test that runs `signoff serve` in-process configures logging for the process (integrations/logs.py); its
    handler and the root level are undone after the test, so later tests' captured output is their own."""
    root = logging.getLogger()
    level = root.level
    yield
    for handler in list(root.handlers):  # pytest's own capture handlers come and go by themselves
        if isinstance(handler, StderrHandler):
            root.removeHandler(handler)
    root.setLevel(level)


@dataclass
class Running:
    """A signoff served over loopback by a real uvicorn, and how to talk to it."""

    url: str
    app: Starlette

    def mcp_url(self, server: str) -> str:
        return f"{self.url}/mcp/{server}"

    @asynccontextmanager
    async def client(
        self, server: str, token: str = AGENT_TOKEN, mode: str = "legacy", **options: Any
    ) -> AsyncIterator[Client]:
        """A real MCP client connected through signoff, speaking the handshake (`legacy`) or 2026-07-28 (`auto`).

        `options` go to `Client` (callbacks for sampling, logging and other messages).
        """
        async with connect(self.mcp_url(server), token, mode, **options) as client:
            yield client

    async def audit(self) -> list[AuditEvent]:
        await self.app.state.signoff.audit.flush()
        with Session(self.app.state.signoff.database) as session:
            return list(session.exec(select(AuditEvent).order_by(col(AuditEvent.id))).all())


@asynccontextmanager
async def connect(url: str, token: str = AGENT_TOKEN, mode: str = "legacy", **options: Any) -> AsyncIterator[Client]:
    """The SDK's `Client` on `url` with an agent's token; `auto` (its default) must end up on a 2026-07-28 revision,
    so a test run in that mode cannot pass by falling back to the handshake."""
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode, **options) as client:
            if mode == "auto" and client.protocol_version not in MODERN_PROTOCOL_VERSIONS:
                raise AssertionError(f"mode auto negotiated {client.protocol_version}, not a 2026-07-28 revision")
            yield client


@pytest.fixture(params=[pytest.param("legacy", id="handshake"), pytest.param("auto", id="2026-07-28")])
def mode(request: pytest.FixtureRequest) -> str:
    """The SDK `Client`'s mode for a client-facing test run in both revisions: `legacy` (the initialize handshake)
    and `auto` (the SDK's default: `server/discover`, then the stateless 2026-07-28 revision)."""
    value: str = request.param
    return value


def write_config(
    tmp_path: Path,
    servers: list[dict[str, Any]],
    *,
    database_url: str | None = None,
    gateway: dict[str, Any] | None = None,
    approvers: bool = False,
    extra: str = "",
    agents: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """A signoff.toml in tmp_path; each server's `policy` may be a dict, written beside it as JSON.

    With `approvers`, alice and bob (group dba), carol (group ops) and alpha (the agent's own name) may decide.
    `agents` gives the agents alpha and bravo more keys (`groups`, `servers`, `policies`, whose values may be
    dicts, written beside as JSON).
    """

    def agent(name: str) -> list[str]:
        lines = []
        for key, value in (agents or {}).get(name, {}).items():
            if key == "policies":
                for server, own in value.items():
                    if isinstance(own, dict):
                        path = tmp_path / f"{server}-{name}.json"
                        path.write_text(json.dumps(own))
                        own = str(path)
                    lines.append(f"policies.{server} = {json.dumps(own)}")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
        return lines

    lines = [
        "[gateway]",
        f'database_url = "{database_url or "sqlite:///" + str(tmp_path / "signoff.db")}"',
        *(f"{key} = {json.dumps(value)}" for key, value in (gateway or {}).items()),
        "",
        "[[agents]]",
        'name = "alpha"',
        'token = "${ALPHA_TOKEN}"',
        *agent("alpha"),
        "",
        "[[agents]]",
        'name = "bravo"',
        f'token = "{OTHER_TOKEN}"',
        *agent("bravo"),
        "",
    ]
    if approvers:
        for name, groups in APPROVERS.items():
            lines += [
                "[[approvers]]",
                f'name = "{name}"',
                f'token = "{name}-approver-token"',
                f"groups = {json.dumps(groups)}",
                "",
            ]
    for server in servers:
        policy = server["policy"]
        if isinstance(policy, dict):
            path = tmp_path / f"{server['name']}.json"
            path.write_text(json.dumps(policy))
            policy = str(path)
        lines += ["[[servers]]", f'name = "{server["name"]}"', f"policy = {json.dumps(policy)}"]
        if "url" in server:
            lines.append(f'url = "{server["url"]}"')
        if "command" in server:
            lines.append(f"command = {json.dumps(server['command'])}")
        for key, value in server.get("headers", {}).items():
            lines.append(f"headers.{key} = {json.dumps(value)}")
        lines.append("")
    config = tmp_path / "signoff.toml"
    config.write_text("\n".join(lines) + extra)
    return config


@pytest.fixture
def signoff(tmp_path: Path) -> Callable[..., AbstractAsyncContextManager[Running]]:
    """Factory: `async with signoff(servers) as running:` serves a real signoff over loopback.

    `clock` is the rate-limit clock (seconds); `now` the approvals' clock (deadlines, grants).
    """

    @asynccontextmanager
    async def start(
        servers: list[dict[str, Any]],
        *,
        clock: Callable[[], float] = time.time,
        now: Callable[[], datetime] = utcnow,
        **kwargs: Any,
    ) -> AsyncIterator[Running]:
        config = write_config(tmp_path, servers, **kwargs)
        settings = load_settings(config, environ={"ALPHA_TOKEN": AGENT_TOKEN})
        app = create_app(settings, clock=clock, now=now)
        async with serve_http(app) as url:
            yield Running(url=url, app=app)

    return start


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database for replicas to share: an SQLite file, or PostgreSQL emptied before and after (-m postgres)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
        return
    url = os.environ.get("SIGNOFF_TEST_DATABASE_URL", "")
    if not url:
        pytest.skip("SIGNOFF_TEST_DATABASE_URL is not set")
    _empty(url)  # other tests may leave an alembic_version without the tables it claims
    yield url
    _empty(url)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The machine's PostgreSQL test database, emptied before and after (for tests marked `postgres`)."""
    url = os.environ.get("SIGNOFF_TEST_DATABASE_URL", "")
    if not url:
        pytest.skip("SIGNOFF_TEST_DATABASE_URL is not set")
    _empty(url)
    yield url
    _empty(url)


def _empty(url: str) -> None:
    engine = create_database_engine(url, migrate=False)
    reflected = MetaData()
    reflected.reflect(engine)
    reflected.drop_all(engine)
    engine.dispose()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, started (skipped where redis-server is not installed)."""
    if not Path(REDIS_SERVER).exists():
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()
