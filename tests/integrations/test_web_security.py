"""The web page against guessing and stolen cookies: throttled sign-in, and sessions the server can end.

A real signoff (uvicorn, lifespan, a real database) over loopback, httpx2 as the browser. Other client
addresses come from X-Forwarded-For, which uvicorn believes from loopback by default (`FORWARDED_ALLOW_IPS`).
The clock that sessions age and failures are counted on is the test's.
"""

import base64
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
from itsdangerous import TimestampSigner
from sqlmodel import Session, select

from approvals.models import WebSession
from tests.conftest import APPROVERS, Running
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http
from tests.webpage import POLICY, SESSION_SECRET, csrf_of, guarded, sign_in, status_of

pytestmark = pytest.mark.anyio

SECRET = f'\n[web]\nsession_secret = "{SESSION_SECRET}"\n'
ELSEWHERE = {"x-forwarded-for": "203.0.113.7"}


class Clock:
    """Seconds since the epoch, moved on by the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def served(
    signoff: Any,
    clock: Clock,
    *,
    approvers: tuple[str, ...] = tuple(APPROVERS),
    database_url: str | None = None,
    policy: dict[str, Any] = POLICY,
    gateway: dict[str, Any] | None = None,
) -> AsyncIterator[Running]:
    """signoff under `policy` (the web page tests') with a fixed session secret, on `clock`, with only `approvers`."""
    entries = "".join(
        f'\n[[approvers]]\nname = "{name}"\ntoken = "{name}-approver-token"\ngroups = {json.dumps(APPROVERS[name])}\n'
        for name in approvers
    )
    async with serve_http(everything_http_app(EverythingState())) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": policy}]
        options = {"database_url": database_url, "gateway": gateway, "extra": SECRET + entries}
        async with signoff(servers, clock=clock, **options) as running:
            yield running


def browser(running: Running) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(base_url=running.url, timeout=10)


def carry(http: httpx2.AsyncClient, cookie: str) -> None:
    """Make `http` present exactly this session cookie, as a browser holding a copy of it would."""
    http.cookies.clear()
    http.cookies.set("signoff_session", cookie)


async def attempt(http: httpx2.AsyncClient, token: str, headers: dict[str, str] | None = None) -> httpx2.Response:
    form = await http.get("/login", headers=headers)
    return await http.post("/login", data={"csrf": csrf_of(form.text), "token": token}, headers=headers)


async def attempt_anew(running: Running, token: str, headers: dict[str, str] | None = None) -> httpx2.Response:
    """A sign-in attempt from a browser of its own (so an earlier success in another one changes nothing)."""
    async with browser(running) as http:
        return await attempt(http, token, headers)


def session_id(cookie: str) -> str:
    """The session id inside a session cookie (Starlette's cookie is base64 JSON, then its signature)."""
    payload = cookie.split(".", 1)[0]
    return str(json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))["sid"])


def forged(data: dict[str, Any]) -> str:
    """A session cookie signed with the configured secret, as only someone holding that secret could make."""
    signer = TimestampSigner(SESSION_SECRET)
    return signer.sign(base64.b64encode(json.dumps(data).encode())).decode()


def rows(running: Running) -> list[WebSession]:
    with Session(running.app.state.signoff.database) as session:
        return list(session.exec(select(WebSession)).all())


# -- sign-in throttling ---------------------------------------------------------------------------------------


async def test_five_failed_sign_ins_from_an_address_get_429_without_checking_the_token(
    signoff: Any, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    caplog.set_level(logging.INFO, logger="integrations.web")
    async with served(signoff, clock) as running, browser(running) as http:
        failures = [await attempt(http, f"guess-{i}") for i in range(5)]
        blocked = await attempt(http, "alice-approver-token")  # the right token, but nobody looks at it
        after_blocked = await http.get("/approvals")
        elsewhere = await attempt_anew(running, "bob-approver-token", ELSEWHERE)
        clock.now += 120
        later = await attempt(http, "alice-approver-token")
        clock.now += 180
        in_time = await attempt(http, "alice-approver-token")

    assert [f.status_code for f in failures] == [401] * 5
    assert blocked.status_code == 429 and blocked.headers["retry-after"] == "300"
    assert "Too many failed sign-ins from your address" in blocked.text and "try again in 5 min" in blocked.text
    assert 'name="token"' in blocked.text  # the form stays, for when the wait is over
    assert after_blocked.status_code == 303  # the right token did not sign anyone in while blocked
    assert elsewhere.status_code == 303  # another address is not held back by this one's failures
    assert later.status_code == 429 and later.headers["retry-after"] == "180" and "3 min" in later.text
    assert in_time.status_code == 303 and in_time.headers["location"] == "/approvals"
    messages = [r.getMessage() for r in caplog.records]
    failed = [m for m in messages if m.startswith("Web sign-in failed from 127.0.0.1")]
    assert len(failed) == 5 and "(5 of 5 failures allowed in 300 s)" in failed[-1]
    assert any("127.0.0.1 reached its own limit" in m for m in messages)
    assert "Web sign-in: bob (token) from 203.0.113.7" in messages
    assert not [m for m in messages if "guess-" in m or "approver-token" in m]  # never a token in the logs


async def test_failures_from_many_addresses_pause_sign_in_except_for_addresses_that_signed_in_before(
    signoff: Any,
) -> None:
    clock = Clock()
    known = {"x-forwarded-for": "198.51.100.1"}
    async with served(signoff, clock) as running, browser(running) as http:
        before = await attempt_anew(running, "carol-approver-token", known)
        csrf = csrf_of((await http.get("/login")).text)
        statuses: set[int] = set()

        async def guess(address: int) -> None:  # 4 guesses from each of 25 addresses: under each one's own limit
            for i in range(4):
                data = {"csrf": csrf, "token": f"guess-{address}-{i}"}
                response = await http.post("/login", data=data, headers={"x-forwarded-for": f"192.0.2.{address}"})
                statuses.add(response.status_code)

        with anyio.fail_after(8):
            async with anyio.create_task_group() as tg:
                for address in range(25):
                    tg.start_soon(guess, address)
        paused = await attempt_anew(running, "alice-approver-token", ELSEWHERE)
        carol = await attempt_anew(running, "carol-approver-token", known)
        clock.now += 301
        resumed = await attempt_anew(running, "alice-approver-token", ELSEWHERE)

    assert before.status_code == 303 and statuses == {401}
    assert paused.status_code == 429 and paused.headers["retry-after"] == "300"
    assert "sign-in is paused" in paused.text and "Sessions already signed in keep working" in paused.text
    assert carol.status_code == 303  # she signed in from there before the flood: the guessers cannot lock her out
    assert resumed.status_code == 303


@pytest.mark.parametrize("store", ["database", "redis"])
async def test_failed_sign_ins_on_one_replica_count_on_the_other_and_an_unreachable_store_refuses_sign_in(
    signoff: Any, tmp_path: Any, request: pytest.FixtureRequest, store: str
) -> None:
    redis = request.getfixturevalue("redis_server") if store == "redis" else None
    clock = Clock()
    options: dict[str, Any] = {"database_url": f"sqlite:///{tmp_path / 'shared.db'}"}
    options["gateway"] = {"redis_url": redis.url} if redis else None
    async with (
        served(signoff, clock, **options) as one,
        served(signoff, clock, **options) as two,
        browser(one) as on_one,
        browser(two) as on_two,
    ):
        failures = [await attempt(on_one if i % 2 else on_two, f"guess-{i}") for i in range(5)]
        blocked = await attempt(on_two, "alice-approver-token")
        clock.now += 301
        in_time = await attempt(on_one, "alice-approver-token")
        if redis is not None:
            redis.stop()
            down = await attempt_anew(two, "bob-approver-token", ELSEWHERE)
            assert down.status_code == 503 and "cannot reach the store that counts failed sign-ins" in down.text

    assert [f.status_code for f in failures] == [401] * 5
    assert blocked.status_code == 429 and blocked.headers["retry-after"] == "300"
    assert "Too many failed sign-ins from your address" in blocked.text
    assert in_time.status_code == 303


async def test_an_ipv6_guesser_cannot_escape_the_limit_by_changing_addresses_within_its_64(signoff: Any) -> None:
    async with served(signoff, Clock()) as running, browser(running) as http:
        for i in range(5):
            await attempt(http, f"guess-{i}", {"x-forwarded-for": f"2001:db8:1:2::{i + 1}"})
        same_64 = await attempt(http, "alice-approver-token", {"x-forwarded-for": "2001:db8:1:2:ffff::9"})
        other_64 = await attempt(http, "alice-approver-token", {"x-forwarded-for": "2001:db8:1:3::1"})

    assert same_64.status_code == 429
    assert other_64.status_code == 303


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


async def test_replicas_share_sessions_and_a_sign_out_on_one_ends_the_session_on_the_other(
    signoff: Any, shared_database: str
) -> None:
    url = shared_database
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
    # A policy naming alice would now be refused at start, so her rules go with her.
    without_alice = {"version": "1", "default": "allow"}
    async with (
        served(signoff, clock, approvers=("bob", "carol"), policy=without_alice) as running,
        browser(running) as http,
    ):
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
