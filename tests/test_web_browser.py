"""End to end in a real browser: Debian's headless Chromium, driven by Playwright, against a real signoff.

An approver signs in, sees the request a real MCP client is waiting on appear by itself, approves it and the
client gets the upstream's result; rejects another with a reason; a visitor without a session and a forged
CSRF token get nowhere; an auditor filters the log and downloads it. Set SIGNOFF_SCREENSHOTS=DIR to keep
screenshots of the pages (the README's come from here).

Playwright cannot download its own browser here, so it drives /usr/bin/chromium (`apt-get install chromium`;
`.ci/run` does). Without it these tests skip, except under CI (CI=true), where they fail.
"""

import csv
import io
import json
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp_types import CallToolResult, TextContent
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.conftest import Running
from tests.fakes.upstreams import FILES_DESCRIPTION, EverythingState, files_http_app, serve_http
from tests.webpage import guarded, pending_id, status_of

pytestmark = pytest.mark.anyio

CHROMIUM = Path("/usr/bin/chromium")
# The flags this machine needs: no sandbox as root, and no background traffic to Google that the closed
# network would refuse.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture
def chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing under CI: .ci/run installs Debian's chromium before the tests")
    pytest.skip(f"{CHROMIUM} is missing: `apt-get install chromium` to run the browser tests")


@asynccontextmanager
async def launched(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def new_page(browser: Browser, **options: Any) -> Page:
    context = await browser.new_context(accept_downloads=True, **options)
    context.set_default_timeout(10_000)
    page = await context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    page.dialogs = dialogs  # type: ignore[attr-defined]  # an alert() would mean script ran from a tool argument
    return page


async def sign_in(page: Page, running: Running, name: str, path: str = "/approvals") -> None:
    await page.goto(running.url + path)
    await expect(page).to_have_url(f"{running.url}/login?next={path.replace('/', '%2F')}")
    await page.get_by_label("Approver token").fill(f"{name}-approver-token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(running.url + path)
    await expect(page.get_by_text(f"Signed in as {name}")).to_be_visible()


async def screenshot(page: Page, name: str, *, full_page: bool = True) -> None:
    folder = os.environ.get("SIGNOFF_SCREENSHOTS")
    if folder:
        await anyio.Path(folder).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=full_page)


def text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


async def test_an_approver_signs_in_sees_the_held_call_arrive_approves_it_and_the_client_gets_the_result(
    signoff: Any, chromium: Path
) -> None:
    state = EverythingState()
    async with guarded(signoff, state) as running, running.client("ev") as client, launched(chromium) as browser:
        page = await new_page(browser)
        await sign_in(page, running, "alice")
        await expect(page.get_by_text("Nothing is waiting for a decision.")).to_be_visible()
        await client.list_tools()  # as agents do first: the gateway learns each tool's own description
        results: list[CallToolResult] = []
        with anyio.fail_after(40):
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    results.append(await client.call_tool("delete_record", {"record_id": "r-17"}))

                tg.start_soon(call)
                # No reload: the list polls and the new request appears by itself.
                card = page.locator("li.card", has_text="delete_record")
                await expect(card).to_be_visible()
                await expect(card).to_contain_text("alpha")
                await expect(card).to_contain_text("Deletes a customer record")
                await expect(card.locator("[data-deadline]")).to_contain_text("left")
                await expect(card.locator(".summary")).to_have_text("record_id=r-17")
                await expect(card).to_contain_text("Delete one record.")  # the tool's own description
                await card.get_by_role("link", name="Review and decide").click()
                await expect(page.locator(".arglist")).to_contain_text("record_id")
                await expect(page.locator(".arglist")).to_contain_text("r-17")
                await expect(page.get_by_text('tools["delete_record"]', exact=False).first).to_be_visible()
                assert state.deleted_records == []  # held until someone decides
                await page.get_by_label("Note for the audit log").fill("ticket OPS-12")
                await page.get_by_role("button", name="Approve").click()
                banner = page.get_by_role("status").filter(has_text="You approved this request")
                await expect(banner).to_have_text("You approved this request: the agent is waiting; it runs now.")
        await expect(page.locator("#live")).to_contain_text("approved and run")
        await expect(page.locator("#live")).to_contain_text("ticket OPS-12")
        rows = await running.audit()
        await page.get_by_role("link", name="Audit log").click()
        await expect(page.get_by_text("Chain intact:")).to_be_visible()
        await screenshot(page, "audit")

    assert not results[0].is_error and text(results[0]) == "deleted record r-17"
    assert state.deleted_records == ["r-17"]
    approved = next(r for r in rows if r.kind == "approved")
    assert (approved.actor, approved.channel) == ("alice", "web")


async def test_a_rejection_needs_a_reason_and_the_agent_gets_it(signoff: Any, chromium: Path) -> None:
    state = EverythingState()
    async with guarded(signoff, state) as running, running.client("ev") as client, launched(chromium) as browser:
        page = await new_page(browser, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        results: list[CallToolResult] = []
        with anyio.fail_after(40):
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    results.append(await client.call_tool("delete_record", {"record_id": "r-9"}))

                tg.start_soon(call)
                approval_id = await pending_id(running, "delete_record")
                await sign_in(page, running, "bob", f"/approvals/{approval_id}")
                await page.get_by_role("button", name="Reject").click()  # no reason: the browser will not send it
                assert await page.get_by_label("Reason for rejecting").evaluate("el => el.validity.valueMissing")
                assert await status_of(running, approval_id) == "pending"
                await page.get_by_label("Reason for rejecting").fill("wrong customer")
                await page.get_by_role("button", name="Reject").click()
                await expect(page.get_by_text("You rejected this request")).to_be_visible()
        await expect(page.locator("#live")).to_contain_text("wrong customer")

    assert results[0].is_error and "bob rejected this call" in text(results[0])
    assert "wrong customer" in text(results[0]) and state.deleted_records == []


async def test_no_session_and_a_forged_csrf_token_get_nowhere(signoff: Any, chromium: Path) -> None:
    state = EverythingState()
    async with guarded(signoff, state, hold="0.2s") as running, running.client("ev") as client:
        first = await client.call_tool("delete_record", {"record_id": f"r-3 {HOSTILE}"})
        approval_id = first.meta["signoff/decision"]["approval_id"] if first.meta else ""
        async with launched(chromium) as browser:
            stranger = await new_page(browser)
            await stranger.goto(f"{running.url}/approvals/{approval_id}")
            await expect(stranger.get_by_role("heading", name="Sign in")).to_be_visible()
            await expect(stranger.get_by_role("button", name="Approve")).to_have_count(0)

            page = await new_page(browser)
            await sign_in(page, running, "carol", f"/approvals/{approval_id}")
            await expect(page.locator("pre.args")).to_contain_text(f'"record_id": "r-3 {HOSTILE}"')
            await expect(page.locator(".arglist")).to_contain_text(f"r-3 {HOSTILE}")
            await expect(page.locator("#summary")).to_contain_text(HOSTILE)
            await expect(page.locator("main img")).to_have_count(0)
            await page.locator("form[action$='/approve'] input[name=csrf]").evaluate("el => el.value = 'forged'")
            async with page.expect_response(lambda r: r.url.endswith("/approve")) as answer:
                await page.get_by_role("button", name="Approve").click()
            refused = await answer.value
            await expect(page.get_by_role("heading", name="The form could not be checked")).to_be_visible()
            dialogs = page.dialogs  # type: ignore[attr-defined]
        status = await status_of(running, approval_id)

    assert refused.status == 403
    assert dialogs == []  # the hostile argument was shown as text, never run
    assert status == "pending" and state.deleted_records == []


async def test_an_auditor_filters_the_log_and_downloads_it(signoff: Any, chromium: Path) -> None:
    async with guarded(signoff, EverythingState()) as running, running.client("ev") as client:
        with anyio.fail_after(20):
            for i in range(3):
                await client.call_tool("echo", {"text": f"hello {i}"})
            await client.call_tool("add", {"a": 1, "b": 2})
        await running.audit()
        async with launched(chromium) as browser:
            page = await new_page(browser)
            await sign_in(page, running, "alice", "/audit")
            await expect(page.get_by_text("Chain intact:")).to_be_visible()
            await page.get_by_label("Tool").fill("echo")
            await page.get_by_label("Kind").select_option("allowed")
            await page.get_by_role("button", name="Filter").click()
            await expect(page).to_have_url(re.compile(r"/audit\?.*tool=echo&.*kind=allowed"))
            await expect(page.locator("table.audit tbody tr")).to_have_count(3)
            await expect(page.get_by_text("3 matching events")).to_be_visible()
            async with page.expect_download() as csv_download:
                await page.get_by_role("link", name="CSV").click()
            exported_csv = await anyio.Path(await (await csv_download.value).path()).read_text()
            async with page.expect_download() as jsonl_download:
                await page.get_by_role("link", name="JSONL").click()
            exported_jsonl = await anyio.Path(await (await jsonl_download.value).path()).read_text()

    table = list(csv.DictReader(io.StringIO(exported_csv)))
    lines = [json.loads(line) for line in exported_jsonl.splitlines()]
    header, rows = lines[0], lines[1:]  # the export says what was asked, then the rows (no key: no checkpoints)
    assert [row["tool"] for row in table] == ["echo"] * 3 and {row["kind"] for row in table} == {"allowed"}
    assert header["export"]["filters"] == {"tool": "echo", "kind": "allowed"} and not header["export"]["whole"]
    assert [line["id"] for line in rows] == [int(row["id"]) for row in table]


DESKTOP = {"width": 1280, "height": 800}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
FILES_POLICY = {
    "version": "1",
    "default": "allow",
    "tools": {
        "write_file": {
            "action": "require_approval",
            "reason": "Writes files on the server",
            "approval": {"approvers": ["alice"], "timeout": "10m"},
        }
    },
}
CONFIG = "port: 8080\nlog_level: info\nreplicas: 3\n"
SCHEMA = "".join(f"ALTER TABLE t{i} ADD COLUMN c{i} int;\n" for i in range(200))


async def test_the_list_and_the_page_say_what_a_call_does_first_and_the_phone_shows_it_with_the_buttons(
    signoff: Any, chromium: Path
) -> None:
    written: dict[str, str] = {}
    async with serve_http(files_http_app(written)) as upstream:
        servers = [{"name": "fs", "url": f"{upstream}/mcp", "policy": FILES_POLICY}]
        # A short hold: each call is answered "pending" before anyone decides, as most clients are.
        async with signoff(servers, approvers=True, gateway={"approval_hold": "0.3s"}) as running:
            async with running.client("fs") as client, launched(chromium) as browser:
                await client.list_tools()  # what agents do first: the gateway learns each tool's description
                with anyio.fail_after(20):
                    first = await client.call_tool("write_file", {"path": "/srv/config.yaml", "content": CONFIG})
                    second = await client.call_tool("write_file", {"path": "/srv/schema.sql", "content": SCHEMA})
                assert first.is_error and second.is_error and "waiting for a person to approve it" in text(second)

                page = await new_page(browser, viewport=DESKTOP)
                await sign_in(page, running, "alice")
                config = page.locator("li.card", has_text="/srv/config.yaml")
                schema = page.locator("li.card", has_text="/srv/schema.sql")
                # The two cards look different now: the summary says which file and how much goes in it.
                await expect(config.locator(".summary")).to_have_text("path=/srv/config.yaml content=<3 lines>")
                await expect(schema.locator(".summary")).to_have_text("path=/srv/schema.sql content=<200 lines>")
                await expect(schema).to_contain_text(FILES_DESCRIPTION)
                await expect(schema).to_contain_text(re.compile(r"· (just now|\d+ s ago)"))
                await expect(schema.locator(".summary")).to_be_in_viewport(ratio=1)
                await screenshot(page, "approvals")

                await schema.get_by_role("link", name="Review and decide").click()
                await expect(page.locator("#summary")).to_have_text("path=/srv/schema.sql content=<200 lines>")
                args = page.locator(".arglist .arg")
                await expect(args.nth(0)).to_contain_text("/srv/schema.sql")  # the short one first
                folded = args.nth(1).locator("details")
                await expect(folded.locator("summary")).to_have_text("<200 lines>")
                await expect(folded.locator("pre")).not_to_be_visible()  # folded until asked for
                for button in ("Approve", "Reject"):
                    await expect(page.get_by_role("button", name=button, exact=True)).to_be_in_viewport(ratio=1)
                await expect(page.locator(".waiting")).to_contain_text("an approval runs it when the agent calls")
                await screenshot(page, "approval")
                await folded.locator("summary").click()
                await expect(folded.locator("pre")).to_contain_text("ALTER TABLE t199 ADD COLUMN c199 int;")

                phone = await new_page(browser, **PHONE)
                await sign_in(phone, running, "alice")
                card = phone.locator("li.card", has_text="/srv/config.yaml")
                await expect(card.locator(".summary")).to_be_in_viewport(ratio=1)
                await card.get_by_role("link", name="Review and decide").click()
                await expect(phone.locator("#summary")).to_have_text("path=/srv/config.yaml content=<3 lines>")
                block = phone.locator(".arglist .arg.block pre")
                await expect(block).to_have_text(CONFIG.rstrip("\n"))  # a short multi-line value: open, as lines
                for shown in (phone.locator("#summary"), block):
                    await expect(shown).to_be_in_viewport(ratio=1)
                for button in ("Approve", "Reject"):
                    await expect(phone.get_by_role("button", name=button, exact=True)).to_be_in_viewport(ratio=1)
                await screenshot(phone, "approval-phone", full_page=False)

                await phone.get_by_role("button", name="Approve", exact=True).click()
                banner = phone.get_by_role("status").filter(has_text="You approved this request")
                await expect(banner).to_contain_text("the agent was told to retry; it runs when it calls again (until")
                assert written == {}  # nothing ran: the agent was answered "pending" and has not called again
                with anyio.fail_after(20):
                    again = await client.call_tool("write_file", {"path": "/srv/config.yaml", "content": CONFIG})
                assert not again.is_error and text(again) == f"wrote {len(CONFIG)} characters to /srv/config.yaml"
                await expect(phone.locator("#live")).to_contain_text("approved and run")

    assert written == {"/srv/config.yaml": CONFIG}
