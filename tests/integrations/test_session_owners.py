"""An MCP session belongs to the agent that opened it, on every replica and after a restart; it ends on DELETE and
after its lifetime."""

import sys
from datetime import datetime, timedelta
from typing import Any

import anyio
import httpx2
import pytest
from sqlalchemy import text
from sqlmodel import Session, select

from approvals.models import McpSession, utcnow
from integrations.gateway.ownership import LIFETIME
from tests.conftest import AGENT_TOKEN, OTHER_TOKEN, Running
from tests.fakes.upstreams import everything_http_app, serve_http

pytestmark = pytest.mark.anyio

ALLOW_ALL = {"version": "1", "default": "allow"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
PING = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
HANDSHAKE = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


class Now:
    """The approvals' clock, moved by hand."""

    def __init__(self) -> None:
        self.at = utcnow()

    def __call__(self) -> datetime:
        return self.at


def as_agent(token: str, session_id: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}", "MCP-Protocol-Version": "2025-11-25", **HANDSHAKE}
    return {**headers, "Mcp-Session-Id": session_id} if session_id else headers


async def open_session(running: Running, token: str = AGENT_TOKEN) -> str:
    async with httpx2.AsyncClient(timeout=10, headers=as_agent(token)) as http:
        opened = await http.post(running.mcp_url("ev"), json=INITIALIZE)
    assert opened.status_code == 200
    return opened.headers["mcp-session-id"]


async def ping(running: Running, token: str, session_id: str) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=10, headers=as_agent(token, session_id)) as http:
        return await http.post(running.mcp_url("ev"), json=PING)


def rows(running: Running) -> list[tuple[str, str, str]]:
    with Session(running.app.state.signoff.database) as db:
        return [(r.id, r.agent, r.server) for r in db.exec(select(McpSession)).all()]


async def test_a_session_stays_its_agents_on_another_replica_and_after_a_restart(
    signoff: Any, shared_database: str
) -> None:
    async with serve_http(everything_http_app()) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": ALLOW_ALL}]
        async with signoff(servers, database_url=shared_database) as first:
            session_id = await open_session(first)
            async with signoff(servers, database_url=shared_database) as replica:  # its cache has never seen it
                stolen_on_replica = await ping(replica, OTHER_TOKEN, session_id)
                owned_on_replica = await ping(replica, AGENT_TOKEN, session_id)
            stolen_here = await ping(first, OTHER_TOKEN, session_id)
            stored = rows(first)
        async with signoff(servers, database_url=shared_database) as restarted:
            stolen_after_restart = await ping(restarted, OTHER_TOKEN, session_id)
            owned_after_restart = await ping(restarted, AGENT_TOKEN, session_id)

    for stolen in (stolen_on_replica, stolen_here, stolen_after_restart):
        assert stolen.status_code == 403
        assert stolen.json()["error"]["message"] == "This session belongs to another agent"
    assert owned_on_replica.status_code == owned_after_restart.status_code == 200
    [(digest, agent, server)] = stored
    assert (agent, server) == ("alpha", "ev")
    assert digest != session_id and len(digest) == 64  # the id's SHA-256, never the id


async def test_a_session_ends_for_good_on_delete_and_an_unknown_one_gets_404(signoff: Any) -> None:
    async with serve_http(everything_http_app()) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": ALLOW_ALL}]
        async with signoff(servers) as running:
            session_id = await open_session(running)
            async with httpx2.AsyncClient(timeout=10, headers=as_agent(OTHER_TOKEN, session_id)) as http:
                not_bravos = await http.delete(running.mcp_url("ev"))
            async with httpx2.AsyncClient(timeout=10, headers=as_agent(AGENT_TOKEN, session_id)) as http:
                ended = await http.delete(running.mcp_url("ev"))
            after = await ping(running, AGENT_TOKEN, session_id)
            made_up = await ping(running, AGENT_TOKEN, "a-session-id-nobody-was-given")
            left = rows(running)

    assert not_bravos.status_code == 403
    assert ended.status_code == 200
    for unknown in (after, made_up):
        assert unknown.status_code == 404
        assert unknown.json()["error"]["message"] == (
            "Session not found: it ended or expired; start a new session with initialize"
        )
    assert left == []


async def test_a_session_past_its_lifetime_is_refused_and_its_row_pruned(signoff: Any) -> None:
    now = Now()
    async with serve_http(everything_http_app()) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": ALLOW_ALL}]
        async with signoff(servers, now=now) as running:
            old = await open_session(running)
            fresh_ping = await ping(running, AGENT_TOKEN, old)
            now.at += LIFETIME + timedelta(seconds=1)
            stale_ping = await ping(running, AGENT_TOKEN, old)
            await open_session(running, OTHER_TOKEN)  # opening a session clears rows past their lifetime
            left = rows(running)

    assert fresh_ping.status_code == 200
    assert stale_ping.status_code == 404
    assert [(agent, server) for _, agent, server in left] == [("bravo", "ev")]


async def test_without_the_session_table_no_session_is_handed_out_or_let_through(signoff: Any) -> None:
    async with serve_http(everything_http_app()) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": ALLOW_ALL}]
        async with signoff(servers) as running:
            with running.app.state.signoff.database.begin() as db:
                db.execute(text("DROP TABLE mcp_sessions"))
            async with httpx2.AsyncClient(timeout=10, headers=as_agent(AGENT_TOKEN)) as http:
                opened = await http.post(running.mcp_url("ev"), json=INITIALIZE)
            unchecked = await ping(running, AGENT_TOKEN, "a-session-this-replica-has-not-seen")

    assert opened.status_code == 503
    assert "mcp-session-id" not in opened.headers
    assert opened.json()["error"]["message"] == "signoff could not record the new session; retry initialize"
    assert unchecked.status_code == 503
    assert unchecked.json()["error"]["message"] == "signoff cannot check this session now; retry"


STDIO = [{"name": "ev", "command": [sys.executable, "-m", "integrations.demo"], "policy": ALLOW_ALL}]
LISTING = {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}


async def test_a_stdio_session_opened_on_one_replica_is_served_by_anothers_child(
    signoff: Any, shared_database: str
) -> None:
    # Each replica (or worker) runs its own child; the session's owner, in the database, is what they share.
    async with (
        signoff(STDIO, database_url=shared_database) as first,
        signoff(STDIO, database_url=shared_database) as second,
    ):
        session_id = await open_session(first)
        async with httpx2.AsyncClient(timeout=20, headers=as_agent(AGENT_TOKEN, session_id)) as http:
            listed = await http.post(second.mcp_url("ev"), json=LISTING)
        stolen = await ping(second, OTHER_TOKEN, session_id)

    assert listed.status_code == 200
    assert "kill_connection" in [t["name"] for t in listed.json()["result"]["tools"]]
    assert stolen.status_code == 403  # never another agent's


@pytest.mark.postgres
async def test_a_stdio_session_ended_on_one_replica_is_gone_on_the_other_at_once(
    signoff: Any, postgres_url: str
) -> None:
    url = postgres_url
    # The owners' caches and the children's sessions are per process: the bus tells the others of the end.
    async with (
        signoff(STDIO, database_url=url) as first,
        signoff(STDIO, database_url=url) as second,
    ):
        session_id = await open_session(first)
        used_here = await ping(first, AGENT_TOKEN, session_id)
        async with httpx2.AsyncClient(timeout=20, headers=as_agent(AGENT_TOKEN, session_id)) as http:
            ended = await http.delete(second.mcp_url("ev"))
        with anyio.fail_after(5):
            # The bounded poll: the bus's message is heard in a few milliseconds, but not within the DELETE.
            while (after := await ping(first, AGENT_TOKEN, session_id)).status_code == 200:  # noqa: ASYNC110
                await anyio.sleep(0.02)

    assert used_here.status_code == 200 and ended.status_code == 200
    assert after.status_code == 404
    assert after.json()["error"]["message"].startswith("Session not found")


async def test_a_session_ended_on_one_replica_is_unknown_on_another_that_had_used_it(
    signoff: Any, shared_database: str
) -> None:
    async with serve_http(everything_http_app()) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": ALLOW_ALL}]
        async with (
            signoff(servers, database_url=shared_database) as first,
            signoff(servers, database_url=shared_database) as replica,
        ):
            session_id = await open_session(first)
            used_on_replica = await ping(replica, AGENT_TOKEN, session_id)  # now in the replica's cache too
            async with httpx2.AsyncClient(timeout=10, headers=as_agent(AGENT_TOKEN, session_id)) as http:
                ended = await http.delete(first.mcp_url("ev"))
            after_on_replica = await ping(replica, AGENT_TOKEN, session_id)

    assert used_on_replica.status_code == 200 and ended.status_code == 200
    assert after_on_replica.status_code == 404
    assert after_on_replica.json()["error"]["message"].startswith("Session not found")
