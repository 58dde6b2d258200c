"""What a call does, at a glance, everywhere it is shown: the summary, the tool's description, the truth about when
an approved call runs. A real signoff in front of a real MCP upstream, the Slack stand-in, the CLI and the API."""

from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from integrations.cli import main
from tests.conftest import AGENT_TOKEN, READER
from tests.fakes.upstreams import EverythingState
from tests.test_approval_flow import api
from tests.test_approval_tasks import ALICE, delete_as_task, serving, upstream
from tests.test_slack_flow import click, posted, slack_flow
from tests.webpage import guarded, pending_id, sign_in

pytestmark = pytest.mark.anyio

LONG_NOTE = "".join(f"line {i}: why this record goes\n" for i in range(60))


async def test_slack_shows_what_first_and_asks_before_approving_arguments_it_had_to_cut(signoff: Any) -> None:
    async with slack_flow(signoff) as flow, flow.running.client("ev") as client:
        await client.list_tools()
        with anyio.fail_after(20):
            first = await client.call_tool("delete_record", {"record_id": "r-1", "note": LONG_NOTE})
            message = await posted(flow, "delete_record")
            approve = message.buttons()["signoff_approve"]
            await click(flow, message, "signoff_approve", "alice")
            await message.shows("The agent was told to retry; it runs when it calls again (until")
        assert first.is_error

    assert message.text.count("*What:* `record_id=r-1 note=&lt;60 lines&gt;`") == 1
    assert "The tool says:* Delete one record." in message.text
    assert "Truncated" in message.text
    assert approve["text"]["text"] == "Approve (arguments cut)…"
    assert approve["confirm"]["title"]["text"] == "Arguments were cut"
    assert approve["confirm"]["text"]["text"].endswith(
        f"web page first: http://127.0.0.1:8080/approvals/{approve['value']}"
    )


async def test_slack_says_the_agent_is_waiting_when_its_call_is_held_and_short_arguments_approve_in_one_tap(
    signoff: Any,
) -> None:
    async with slack_flow(signoff, hold="20s") as flow, flow.running.client("ev") as client:
        results = []
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    results.append(await client.call_tool("delete_record", {"record_id": "r-2"}))

                tg.start_soon(call)
                message = await posted(flow, "delete_record")
                approve = message.buttons()["signoff_approve"]
                await click(flow, message, "signoff_approve", "alice")
            await message.shows("The call ran upstream")
        updates = [c.args for c in flow.slack.called("chat.update")]

    assert approve["text"]["text"] == "Approve" and "confirm" not in approve
    assert any("The agent is waiting; it runs now." in str(u["blocks"]) for u in updates)
    assert not any("told to retry" in str(u["blocks"]) for u in updates)
    assert not results[0].is_error and flow.state.deleted_records == ["r-2"]


async def test_the_cli_table_the_page_and_the_api_show_the_summary_and_never_a_redacted_value(
    signoff: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with guarded(signoff, EverythingState(), hold="0.2s") as running, running.client("ev") as client:
        with anyio.fail_after(20):
            await client.call_tool("echo", {"text": "prod password=hunter2"})  # `text` is redacted by the policy
            await client.call_tool("delete_record", {"record_id": "r-7\x1b[2J"})
            echo_id = await pending_id(running, "echo")
        async with httpx2.AsyncClient(base_url=running.url, timeout=10) as http:
            view = (await http.get(f"/api/approvals/{echo_id}", headers=READER)).json()
            await sign_in(http, "alice")
            page = (await http.get("/approvals")).text
            detail = (await http.get(f"/approvals/{echo_id}")).text
    monkeypatch.setenv("ALPHA_TOKEN", AGENT_TOKEN)
    code = main(["--config", str(tmp_path / "signoff.toml"), "approvals", "list"])
    table = capsys.readouterr().out

    assert view["summary"] == "text=[redacted]"
    assert "<code>text=[redacted]</code>" in page and "hunter2" not in page and "hunter2" not in detail
    assert code == 0 and "hunter2" not in table
    echo_line = next(line for line in table.splitlines() if "ev/echo" in line)
    assert echo_line.startswith(echo_id) and echo_line.endswith("just now  text=[redacted]")
    assert 'record_id="r-7\\x1b[2J"' in table and "\x1b" not in table  # a terminal escape is shown, never sent
    assert "    deadline " in table and "Deletes a customer record" in table


async def test_the_tools_description_is_known_after_a_restart_from_the_pins_and_kept_with_the_request(
    signoff: Any,
) -> None:
    state = EverythingState()
    async with guarded(signoff, state) as running, running.client("ev") as client:
        await client.list_tools()  # pinned: the definition (and its description) lands in the database
    async with guarded(signoff, state, hold="0.2s") as running, running.client("ev") as client:
        with anyio.fail_after(20):
            await client.call_tool("delete_record", {"record_id": "r-4"})  # no tools/list since the restart
            approval_id = await pending_id(running, "delete_record")
        async with httpx2.AsyncClient(base_url=running.url, timeout=10) as http:
            view = (await http.get(f"/api/approvals/{approval_id}", headers=READER)).json()

    assert view["tool_description"] == "Delete one record."
    assert view["summary"] == "record_id=r-4"


async def test_an_agent_waiting_on_its_task_counts_as_waiting_so_an_approval_says_it_runs_now(signoff: Any) -> None:
    async with upstream(EverythingState()) as url, serving(signoff, url) as running:
        task = await delete_as_task(running)
        approved = await api(running, "POST", f"/api/approvals/{task['taskId']}/approve", ALICE, reason="ok")

    assert approved.status_code == 200
    assert approved.json()["agent_waiting"] is True
