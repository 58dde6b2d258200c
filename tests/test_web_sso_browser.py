"""Single sign-on in a real browser (Debian's Chromium, driven by Playwright) through a real OpenID provider's own
login page (oidc-provider from npm, tests/fakes/identity_provider.py): an approver clicks "Sign in with single
sign-on", types their name and password at the provider, lands back on the page they asked for, and decides a
held call; someone the provider knows but signoff does not is shown why they cannot come in.
"""

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp_types import CallToolResult
from playwright.async_api import Page, expect

from tests.conftest import Running
from tests.fakes.identity_provider import USERS, WEB_CLIENT, WEB_SECRET, IdentityProvider, identity_provider
from tests.fakes.upstreams import EverythingState
from tests.test_web_browser import chromium, launched, new_page, text
from tests.webpage import SESSION_SECRET, guarded, pending_id

pytestmark = pytest.mark.anyio
__all__ = ["chromium"]  # the fixture, shared with the other browser tests


def sso_config(idp: IdentityProvider) -> str:
    return f"""
[web]
session_secret = "{SESSION_SECRET}"

[web.oidc]
issuer = "{idp.issuer}"
client_id = "{WEB_CLIENT}"
client_secret = "{WEB_SECRET}"
approver_claim = "preferred_username"
"""


async def sign_in_at_provider(page: Page, running: Running, user: str, path: str = "/approvals") -> None:
    await page.goto(running.url + path)
    await expect(page).to_have_url(f"{running.url}/login?next={path.replace('/', '%2F')}")
    await page.get_by_role("link", name="Sign in with single sign-on").click()
    await expect(page.get_by_text(f"Signing in to {WEB_CLIENT}")).to_be_visible()  # the provider's own page
    await page.get_by_label("Username").fill(user)
    await page.get_by_label("Password").fill(str(USERS[user]["password"]))
    await page.get_by_role("button", name="Sign in").click()


async def test_an_approver_signs_in_through_the_providers_login_page_and_approves_a_held_call(
    signoff: Any, chromium: Path, tmp_path: Path
) -> None:
    state = EverythingState()
    async with identity_provider(tmp_path) as idp:
        async with (
            guarded(signoff, state, extra=sso_config(idp)) as running,
            running.client("ev") as client,
            launched(chromium) as browser,
        ):
            results: list[CallToolResult] = []
            with anyio.fail_after(40):
                async with anyio.create_task_group() as tg:

                    async def call() -> None:
                        results.append(await client.call_tool("delete_record", {"record_id": "r-7"}))

                    tg.start_soon(call)
                    approval_id = await pending_id(running, "delete_record")
                    page = await new_page(browser)
                    await sign_in_at_provider(page, running, "alice", f"/approvals/{approval_id}")
                    await expect(page).to_have_url(f"{running.url}/approvals/{approval_id}")
                    await expect(page.get_by_text("Signed in as alice")).to_be_visible()
                    await page.get_by_role("button", name="Approve").click()
                    await expect(page.get_by_text("You approved this request")).to_be_visible()

    assert not results[0].is_error and "r-7" in text(results[0])
    assert state.deleted_records == ["r-7"]


async def test_someone_the_provider_knows_but_signoff_does_not_sees_why_they_cannot_sign_in(
    signoff: Any, chromium: Path, tmp_path: Path
) -> None:
    async with (
        identity_provider(tmp_path) as idp,
        guarded(signoff, EverythingState(), extra=sso_config(idp)) as running,
        launched(chromium) as browser,
    ):
        page = await new_page(browser)
        await sign_in_at_provider(page, running, "zed")
        await expect(page.get_by_role("heading", name="Not an approver")).to_be_visible()
        await expect(page.get_by_text("You signed in at the identity provider as 'zed'")).to_be_visible()
        await page.goto(running.url + "/approvals")
        await expect(page).to_have_url(f"{running.url}/login?next=%2Fapprovals")
