"""Edit and approve on the web page, in a real browser (Debian's Chromium, as tests/test_web_browser.py drives it).

The form holds the arguments as JSON; a parse error is shown next to the field before anything is sent, the
server's refusal is the page's error banner, and an accepted edit runs the edited call for the held client.
"""

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp_types import CallToolResult
from playwright.async_api import expect

from tests.fakes.upstreams import EverythingState
from tests.test_approval_edits import editable
from tests.test_web_browser import chromium, launched, new_page, sign_in, text
from tests.webpage import guarded, pending_id, status_of

pytestmark = pytest.mark.anyio
__all__ = ["chromium"]  # the fixture, used by name


async def test_an_approver_edits_the_arguments_on_the_page_and_the_held_call_runs_the_edit(
    signoff: Any, chromium: Path
) -> None:
    state = EverythingState()
    async with editable(signoff, state) as running, running.client("ev") as client, launched(chromium) as browser:
        page = await new_page(browser)
        await sign_in(page, running, "alice")
        results: list[CallToolResult] = []
        with anyio.fail_after(40):
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    results.append(await client.call_tool("delete_record", {"record_id": "r-1"}))

                tg.start_soon(call)
                approval_id = await pending_id(running, "delete_record")
                await page.goto(f"{running.url}/approvals/{approval_id}")
                field = page.get_by_label("Arguments (JSON)")
                await expect(field).to_have_value('{\n  "record_id": "r-1"\n}')

                await field.fill('{"record_id": "r-2"')  # a brace short
                await expect(page.locator("#edit-arguments-error")).to_contain_text("Not valid JSON")
                await page.get_by_role("button", name="Edit and approve").click()
                await expect(field).to_have_attribute("aria-invalid", "true")
                assert await status_of(running, approval_id) == "pending"  # nothing was sent

                await field.fill('{"record_id": "sys-9"}')
                await expect(page.locator("#edit-arguments-error")).to_have_text("")
                await page.get_by_role("button", name="Edit and approve").click()
                await expect(page.get_by_role("alert")).to_contain_text(
                    "The edited call was refused: the policy would deny the edited call"
                )
                await expect(page.get_by_label("Arguments (JSON)")).to_have_value('{"record_id": "sys-9"}')
                assert await status_of(running, approval_id) == "pending"

                await page.get_by_label("Arguments (JSON)").fill('{"record_id": "r-2"}')
                await page.get_by_role("button", name="Edit and approve").click()
                await expect(page.get_by_text("You approved this request with your edits")).to_be_visible()
        await expect(page.locator("#edited-arguments")).to_have_text('{\n  "record_id": "r-2"\n}')
        assert page.dialogs == []  # type: ignore[attr-defined]

    assert state.deleted_records == ["r-2"]
    [result] = results
    assert 'signoff: approved by alice with arguments changed: record_id "r-1" -> "r-2"' in text(result)


async def test_a_rule_without_allow_edits_offers_no_edit_form(signoff: Any, chromium: Path) -> None:
    state = EverythingState()
    async with guarded(signoff, state, hold="0.1s") as running, running.client("ev") as client:
        await client.call_tool("delete_record", {"record_id": "r-1"})
        approval_id = await pending_id(running, "delete_record")
        async with launched(chromium) as browser:
            page = await new_page(browser)
            await sign_in(page, running, "alice", f"/approvals/{approval_id}")
            await expect(page.get_by_role("button", name="Approve", exact=True)).to_be_visible()
            await expect(page.get_by_role("button", name="Edit and approve")).to_have_count(0)
