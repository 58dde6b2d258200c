"""With an allow-all policy, a client sees the same upstream through signoff as it sees directly."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import ElicitRequestParams, ElicitResult, PromptReference

from tests.conftest import Running
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http

pytestmark = pytest.mark.anyio

ALLOW_ALL = {"version": "1", "default": "allow"}


async def client_script(client: Client) -> dict[str, Any]:
    """What a user of the upstream would look at: every kind of thing it offers, dumped as data."""
    steps: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        steps.append((progress, total))

    tools = await client.list_tools()
    resources = await client.list_resources()
    templates = await client.list_resource_templates()
    prompts = await client.list_prompts()
    return {
        "tools": [t.model_dump(exclude_none=True) for t in tools.tools],
        "resources": [r.model_dump(exclude_none=True) for r in resources.resources],
        "templates": [t.model_dump(exclude_none=True) for t in templates.resource_templates],
        "greeting": (await client.read_resource("test://greeting")).model_dump(exclude_none=True),
        "item": (await client.read_resource("test://items/42")).model_dump(exclude_none=True),
        "prompts": [p.model_dump(exclude_none=True) for p in prompts.prompts],
        "prompt": (await client.get_prompt("summarize", {"topic": "audits"})).model_dump(exclude_none=True),
        "completion": (
            await client.complete(PromptReference(type="ref/prompt", name="summarize"), {"name": "topic", "value": "a"})
        ).model_dump(exclude_none=True),
        "echo": (await client.call_tool("echo", {"text": "héllo"})).model_dump(exclude_none=True),
        "add": (await client.call_tool("add", {"a": 2, "b": 40})).model_dump(exclude_none=True),
        "tool_error": (await client.call_tool("fail", {"message": "boom"})).model_dump(exclude_none=True),
        "slow": (await client.call_tool("slow_count", {"steps": 3}, progress_callback=on_progress)).model_dump(
            exclude_none=True
        ),
        "progress": steps,
    }


async def test_server_to_client_elicitation_passes_through_the_gateway(signoff: Any) -> None:
    asked: list[str] = []

    async def answer(context: Any, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action="accept", content={"confirmed": True})

    async with serve_http(everything_http_app()) as upstream:
        async with signoff([{"name": "everything", "url": f"{upstream}/mcp", "policy": ALLOW_ALL}]) as running:
            async with httpx2.AsyncClient(headers={"Authorization": "Bearer agent-token-alpha"}, timeout=30) as http:
                transport = streamable_http_client(running.mcp_url("everything"), http_client=http)
                async with Client(transport, mode="legacy", elicitation_callback=answer) as client:
                    with anyio.fail_after(20):
                        result = await client.call_tool("confirm", {"question": "Delete record r-1?"})

    assert asked == ["Delete record r-1?"]
    assert not result.is_error
    assert result.content[0].text == "confirmed=True"  # type: ignore[union-attr]


@asynccontextmanager
async def direct(url: str, mode: str) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(timeout=30) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            yield client


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_allow_all_policy_gives_identical_results_direct_and_through_signoff(signoff: Any, mode: str) -> None:
    results = {}
    state = EverythingState()
    async with serve_http(everything_http_app(state)) as upstream:
        async with signoff([{"name": "everything", "url": f"{upstream}/mcp", "policy": ALLOW_ALL}]) as running:
            running_: Running = running
            with anyio.fail_after(30):
                async with direct(f"{upstream}/mcp", mode) as client:
                    results["upstream"] = await client_script(client)
                async with running_.client("everything", mode=mode) as client:
                    results["via_gateway"] = await client_script(client)
            audit = await running_.audit()

    assert results["via_gateway"] == results["upstream"]
    assert results["upstream"]["progress"] == [(1.0, 3.0), (2.0, 3.0), (3.0, 3.0)]
    assert results["upstream"]["tool_error"]["is_error"] is True
    calls = [(row.tool, row.outcome) for row in audit if row.kind == "allowed"]
    assert calls == [("echo", "ok"), ("add", "ok"), ("fail", "tool_error"), ("slow_count", "ok")]
