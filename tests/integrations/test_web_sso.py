"""Single sign-on for approvers on the web page, against a real OpenID provider (oidc-provider from npm) on loopback.

httpx2 is the browser: it follows signoff's redirect to the provider, fills in the provider's own login page, and
follows the redirects back to signoff's callback. What a person sees: they land signed in and can decide, or get a
page that says why not (no such approver, a sign-in that is not theirs, a provider that is down).
"""

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

import anyio
import httpx2
import pytest

from integrations.errors import ConfigError
from integrations.settings import load_settings
from tests.conftest import Running
from tests.fakes.identity_provider import USERS, WEB_CLIENT, WEB_SECRET, IdentityProvider, identity_provider, stop
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http
from tests.webpage import SESSION_SECRET, csrf_of, status_of

pytestmark = pytest.mark.anyio

POLICY = {
    "version": "1",
    "default": "allow",
    "tools": {
        "delete_record": {
            "action": "require_approval",
            "reason": "Deletes a customer record",
            "approval": {"approvers": ["group:ops"], "timeout": "10m"},
        }
    },
}
_ACTION = re.compile(r'<form method="post" action="([^"]+)"')


@asynccontextmanager
async def sso(signoff: Any, idp: IdentityProvider, *, web: str = "", oidc: str = "") -> AsyncIterator[Running]:
    extra = f"""
[web]
session_secret = "{SESSION_SECRET}"
{web}

[web.oidc]
issuer = "{idp.issuer}"
client_id = "{WEB_CLIENT}"
client_secret = "{WEB_SECRET}"
approver_claim = "preferred_username"
{oidc}
"""
    async with serve_http(everything_http_app(EverythingState())) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": POLICY}]
        gateway = {"approval_hold": "0.2s"}
        async with signoff(servers, approvers=True, gateway=gateway, extra=extra) as running:
            yield running


def browser(running: Running) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(base_url=running.url, timeout=10, follow_redirects=True)


async def log_in_at_provider(http: httpx2.AsyncClient, login_page: httpx2.Response, user: str) -> httpx2.Response:
    """Fill in the provider's login page as `user`; follows every redirect after it (to signoff, if it goes there)."""
    match = _ACTION.search(login_page.text)
    if match is None:
        raise AssertionError(f"not the provider's login page: {login_page.url}")
    action = urljoin(str(login_page.url), match.group(1))
    return await http.post(action, data={"username": user, "password": USERS[user]["password"]})


async def sign_in(http: httpx2.AsyncClient, user: str, target: str = "/approvals") -> httpx2.Response:
    login_page = await http.get(f"/login/oidc?{urlencode({'next': target})}")
    return await log_in_at_provider(http, login_page, user)


async def held_call(running: Running) -> str:
    """A delete_record call held for approval (the hold is short: it answers pending); its approval id."""
    async with running.client("ev") as client:
        result = await client.call_tool("delete_record", {"record_id": "r-1"})
    meta = result.meta or {}
    return str(meta["signoff/decision"]["approval_id"])


async def test_an_approver_signs_in_at_the_provider_and_decides_with_the_groups_it_gives(
    signoff: Any, tmp_path: Path
) -> None:
    async with identity_provider(tmp_path) as idp:
        oidc = 'groups_claim = "groups"\nscopes = ["openid", "profile", "groups"]'
        async with sso(signoff, idp, oidc=oidc) as running, browser(running) as http:
            approval_id = await held_call(running)
            login = await http.get("/login")
            landed = await sign_in(http, "bob", target=f"/approvals/{approval_id}")
            decided = await http.post(f"/approvals/{approval_id}/approve", data={"csrf": csrf_of(landed.text)})
            status = await status_of(running, approval_id)
            rows = await running.audit()

    assert "Sign in with single sign-on" in login.text and "Approver token" in login.text
    assert landed.status_code == 200 and str(landed.url) == f"{running.url}/approvals/{approval_id}"
    assert "Signed in as <strong>bob</strong>" in landed.text
    # bob's configured groups are ["dba"]; "ops", which this request needs, comes from the provider
    assert decided.status_code == 200 and status == "approved"
    approved = next(r for r in rows if r.kind == "approved")
    assert (approved.actor, approved.channel) == ("bob", "web")


async def test_without_a_groups_claim_only_the_configured_groups_count(signoff: Any, tmp_path: Path) -> None:
    async with identity_provider(tmp_path) as idp, sso(signoff, idp) as running, browser(running) as http:
        approval_id = await held_call(running)
        landed = await sign_in(http, "bob", target=f"/approvals/{approval_id}")
        await http.post(f"/approvals/{approval_id}/approve", data={"csrf": csrf_of(landed.text)})
        status = await status_of(running, approval_id)

    assert "Signed in as <strong>bob</strong>" in landed.text
    assert status == "pending"  # bob is not in group ops by the config alone


async def test_someone_the_provider_knows_but_no_approver_entry_names_gets_a_clear_refusal(
    signoff: Any, tmp_path: Path
) -> None:
    async with identity_provider(tmp_path) as idp, sso(signoff, idp) as running, browser(running) as http:
        refused = await sign_in(http, "zed")
        after = await http.get("/approvals")

    assert refused.status_code == 403
    assert "You signed in at the identity provider as &#39;zed&#39;" in refused.text
    assert "no approver of that name" in refused.text and "[[approvers]]" in refused.text
    assert str(after.url).startswith(f"{running.url}/login")  # not signed in


async def callback_url(http: httpx2.AsyncClient, authorize: str, user: str) -> str:
    """Go to the provider's authorization URL, log in as `user` if it asks, and stop at the redirect to signoff."""
    response = await http.get(authorize, follow_redirects=False)
    with anyio.fail_after(10):
        while "/login/oidc/callback" not in response.headers.get("location", ""):
            if response.status_code == 200:  # the provider's login page (not shown again once its session exists)
                match = _ACTION.search(response.text)
                if match is None:
                    raise AssertionError(f"the provider answered a page that is not its login: {response.text[:300]}")
                form = {"username": user, "password": USERS[user]["password"]}
                response = await http.post(
                    urljoin(str(response.url), match.group(1)), data=form, follow_redirects=False
                )
            elif response.status_code in (302, 303):
                location = urljoin(str(response.url), response.headers["location"])
                response = await http.get(location, follow_redirects=False)
            else:
                raise AssertionError(f"the provider answered {response.status_code}: {response.text[:300]}")
    return str(response.headers["location"])


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return urlunsplit((*parts[:3], urlencode(query), ""))


async def test_a_callback_whose_state_or_nonce_is_not_this_sign_ins_is_refused_and_a_replay_too(
    signoff: Any, tmp_path: Path
) -> None:
    async with identity_provider(tmp_path) as idp, sso(signoff, idp) as running, browser(running) as http:
        # state: a callback that does not carry the state this browser's sign-in sent
        authorize = (await http.get("/login/oidc", follow_redirects=False)).headers["location"]
        callback = await callback_url(http, authorize, "alice")
        wrong_state = await http.get(with_query(callback, state="forged-state"))

        # nonce: the right state, but a code from an authorization request with another nonce (code injection)
        authorize = (await http.get("/login/oidc", follow_redirects=False)).headers["location"]
        callback = await callback_url(http, with_query(authorize, nonce="someone-elses-nonce"), "alice")
        wrong_nonce = await http.get(callback)

        # replay: a good callback, used twice
        authorize = (await http.get("/login/oidc", follow_redirects=False)).headers["location"]
        callback = await callback_url(http, authorize, "alice")
        good = await http.get(callback)
        await http.post("/logout", data={"csrf": csrf_of(good.text)})
        replayed = await http.get(callback)

    assert wrong_state.status_code == 400 and "its state does not match" in wrong_state.text
    assert wrong_nonce.status_code == 401 and "nonce is not the one this sign-in sent" in wrong_nonce.text
    assert "Signed in as <strong>alice</strong>" in good.text
    assert replayed.status_code == 400 and "already used" in replayed.text
    params = parse_qs(urlsplit(authorize).query)
    assert params["code_challenge_method"] == ["S256"] and len(params["code_challenge"][0]) == 43
    assert params["state"][0] and params["nonce"][0] and params["redirect_uri"][0].endswith("/login/oidc/callback")


async def test_token_sign_in_can_be_switched_off(signoff: Any, tmp_path: Path) -> None:
    async with (
        identity_provider(tmp_path) as idp,
        sso(signoff, idp, web="token_login = false") as running,
        browser(running) as http,
    ):
        login = await http.get("/login")
        token = await http.post("/login", data={"token": "alice-approver-token", "next": "/approvals"})
        landed = await sign_in(http, "alice")

    assert "Sign in with single sign-on" in login.text and "Approver token" not in login.text
    assert token.status_code == 403 and "Token sign-in is off" in token.text
    assert "Signed in as <strong>alice</strong>" in landed.text


async def test_a_provider_that_is_down_gives_a_page_saying_so(signoff: Any, tmp_path: Path) -> None:
    async with identity_provider(tmp_path) as idp:
        await stop(idp)
        async with sso(signoff, idp) as running, browser(running) as http:
            response = await http.get("/login/oidc")
            login = await http.get("/login")

    assert response.status_code == 503
    assert "Single sign-on is unavailable" in response.text and idp.issuer in response.text
    assert login.status_code == 200 and "Approver token" in login.text  # token sign-in still works


def test_switching_token_sign_in_off_needs_single_sign_on(tmp_path: Path) -> None:
    config = tmp_path / "signoff.toml"
    config.write_text(
        '[web]\ntoken_login = false\n\n[[servers]]\nname = "s"\ncommand = ["true"]\npolicy = "catalog:demo"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    assert "web.token_login is false and [web.oidc] is not set" in str(caught.value)


async def test_a_provider_that_says_no_or_a_code_it_does_not_know_gives_a_page_saying_so(
    signoff: Any, tmp_path: Path
) -> None:
    async with identity_provider(tmp_path) as idp, sso(signoff, idp) as running, browser(running) as http:
        # the person cancels at the provider: it comes back with an error instead of a code
        authorize = (await http.get("/login/oidc", follow_redirects=False)).headers["location"]
        state = parse_qs(urlsplit(authorize).query)["state"][0]
        query = urlencode({"error": "access_denied", "error_description": "the user cancelled", "state": state})
        cancelled = await http.get(f"/login/oidc/callback?{query}")

        # a code the provider never issued, with this sign-in's state
        authorize = (await http.get("/login/oidc", follow_redirects=False)).headers["location"]
        callback = await callback_url(http, authorize, "alice")
        unknown = await http.get(with_query(callback, code="a-code-nobody-issued"))
        after = await http.get("/approvals")

    assert cancelled.status_code == 401 and "did not sign you in: the user cancelled" in cancelled.text
    assert unknown.status_code == 401 and "did not accept the sign-in" in unknown.text
    assert str(after.url).startswith(f"{running.url}/login")
