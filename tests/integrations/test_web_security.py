"""The web page against stolen cookies: sessions the server can end.

A real signoff (uvicorn, lifespan, a real database) over loopback, httpx2 as the browser. The clock that
sessions age on is the test's.
"""

import base64
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from itsdangerous import TimestampSigner
from sqlmodel import Session, select

from approvals.models import WebSession
from tests.conftest import APPROVERS, Running
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http
from tests.webpage import POLICY, SESSION_SECRET, guarded, sign_in, status_of

pytestmark = pytest.mark.anyio

SECRET = f'\n[web]\nsession_secret = "{SESSION_SECRET}"\n'


class Clock:
    """Seconds since the epoch, moved on by the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def served(
    signoff: Any, clock: Clock, *, approvers: tuple[str, ...] = tuple(APPROVERS), database_url: str | None = None
) -> AsyncIterator[Running]:
    """signoff under the web page tests' policy with a fixed session secret, on `clock`, with only `approvers`."""
    entries = "".join(
        f'\n[[approvers]]\nname = "{name}"\ntoken = "{name}-approver-token"\ngroups = {json.dumps(APPROVERS[name])}\n'
        for name in approvers
    )
    async with serve_http(everything_http_app(EverythingState())) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": POLICY}]
        async with signoff(servers, clock=clock, database_url=database_url, extra=SECRET + entries) as running:
            yield running


def browser(running: Running) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(base_url=running.url, timeout=10)


def carry(http: httpx2.AsyncClient, cookie: str) -> None:
    """Make `http` present exactly this session cookie, as a browser holding a copy of it would."""
    http.cookies.clear()
    http.cookies.set("signoff_session", cookie)


def session_id(cookie: str) -> str:
    """The session id inside a session cookie (Starlette's cookie is base64 JSON, then its signature)."""
    payload = cookie.split(".", 1)[0]
    return str(json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))["sid"])


def forged(data: dict[str, Any]) -> str:
    """A session cookie signed with the configured secret, as only someone holding that secret could make."""
    signer = TimestampSigner(SESSION_SECRET)
    return signer.sign(base64.b64encode(json.dumps(data).encode())).decode()


def rows(running: Running) -> list[WebSession]:
    with Session(running.app.state.engine) as session:
        return list(session.exec(select(WebSession)).all())


# -- sessions the server ends ---------------------------------------------------------------------------------


async def test_a_cookie_copied_before_sign_out_is_refused_after_it(signoff: Any) -> None:
    async with guarded(signoff, EverythingState(), hold="0.2s") as running, running.client("ev") as client:
        first = await client.call_tool("delete_record", {"record_id": "r-3"})
        approval_id = first.meta["signoff/decision"]["approval_id"] if first.meta else ""
        async with browser(running) as alice, browser(running) as thief, browser(running) as alice_phone:
            csrf = await sign_in(alice, "alice")
            await sign_in(alice_phone, "alice")
            stolen = alice.cookies["signoff_session"]
            carry(thief, stolen)
            before = await thief.get("/approvals")
            out = await alice.post("/logout", data={"csrf": csrf})
            carry(thief, stolen)
            page = await thief.get("/approvals")
            carry(thief, stolen)
            live = await thief.get("/approvals/live")
            carry(thief, stolen)
            approve = await thief.post(f"/approvals/{approval_id}/approve", data={"csrf": csrf, "reason": "mine now"})
            phone = await alice_phone.get("/approvals")
        status = await status_of(running, approval_id)
        stored = rows(running)

    assert before.status_code == 200 and "Signed in as <strong>alice</strong>" in before.text
    assert out.status_code == 303
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    assert live.status_code == 401
    assert approve.status_code == 403 and "not signed in" in approve.text
    assert status == "pending"
    assert phone.status_code == 200  # signing out ends that session, not alice's others
    ended = next(r for r in stored if r.ended_at is not None)
    assert ended.approver == "alice" and ended.end_reason == "signed_out"
    assert ended.id == hashlib.sha256(session_id(stolen).encode()).hexdigest()  # only a digest is stored
    assert session_id(stolen) not in {r.id for r in stored}


async def test_a_correctly_signed_cookie_without_a_session_on_the_server_is_no_session(signoff: Any) -> None:
    async with served(signoff, Clock()) as running, browser(running) as http:
        carry(http, forged({"approver": "alice", "method": "token", "since": int(time.time()), "csrf": "c"}))
        old_format = await http.get("/approvals")
        carry(http, forged({"sid": "made-up", "csrf": "c"}))
        made_up = await http.get("/approvals")

    assert old_format.status_code == 303 and made_up.status_code == 303


async def test_a_session_ends_twelve_hours_after_sign_in_and_its_row_goes_at_a_later_sign_in(signoff: Any) -> None:
    clock = Clock()
    async with served(signoff, clock) as running, browser(running) as alice, browser(running) as bob:
        await sign_in(alice, "alice")
        clock.now += 12 * 3600 - 60
        fresh = await alice.get("/approvals")
        clock.now += 61
        stale = await alice.get("/approvals")
        await sign_in(bob, "bob")
        left = [r.approver for r in rows(running)]

    assert fresh.status_code == 200 and stale.status_code == 303
    assert left == ["bob"]


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_replicas_share_sessions_and_a_sign_out_on_one_ends_the_session_on_the_other(
    signoff: Any, tmp_path: Path, database: str
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    if database == "postgres":
        url = os.environ.get("SIGNOFF_TEST_DATABASE_URL", "")
        if not url:
            pytest.skip("SIGNOFF_TEST_DATABASE_URL is not set")
    clock = Clock()
    async with (
        served(signoff, clock, database_url=url) as one,
        served(signoff, clock, database_url=url) as two,
        browser(one) as on_one,
        browser(two) as on_two,
    ):
        csrf = await sign_in(on_one, "bob")
        carry(on_two, on_one.cookies["signoff_session"])
        shared = await on_two.get("/approvals")
        await on_one.post("/logout", data={"csrf": csrf})
        after = await on_two.get("/approvals")

    assert shared.status_code == 200 and "Signed in as <strong>bob</strong>" in shared.text
    assert after.status_code == 303


async def test_an_approver_removed_from_the_config_is_signed_out_and_stays_out_when_added_back(
    signoff: Any,
) -> None:
    clock = Clock()
    async with served(signoff, clock) as running, browser(running) as alice, browser(running) as bob:
        await sign_in(alice, "alice")
        await sign_in(bob, "bob")
        cookies = {"alice": alice.cookies["signoff_session"], "bob": bob.cookies["signoff_session"]}
    async with served(signoff, clock, approvers=("bob", "carol")) as running, browser(running) as http:
        carry(http, cookies["bob"])
        bob_without_alice = await http.get("/approvals")  # any page use ends the removed approvers' sessions
        carry(http, cookies["alice"])
        alice_removed = await http.get("/approvals")
    async with served(signoff, clock) as running, browser(running) as http:
        carry(http, cookies["alice"])
        alice_back = await http.get("/approvals")
        carry(http, cookies["bob"])
        bob_still = await http.get("/approvals")
        reasons = {r.approver: r.end_reason for r in rows(running)}

    assert bob_without_alice.status_code == 200
    assert alice_removed.status_code == 303
    assert alice_back.status_code == 303  # added back, but the session ended for good
    assert bob_still.status_code == 200
    assert reasons == {"alice": "approver_removed", "bob": None}
