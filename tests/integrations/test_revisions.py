"""Protocol revisions through signoff: judged by what the upstream serves, refused the spec's way, as direct.

A client that asks for a revision the upstream does not serve gets 400 and -32022 with `data.supported` and
`data.requested`, the same answer the upstream itself gives; a revision the upstream serves works through
signoff even where signoff's own list lacks it, and a refusal signoff makes is valid at it.
"""

import json
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest
from mcp.shared.exceptions import MCPError

from tests.conftest import AGENT_TOKEN, Running, connect
from tests.fakes.revisions_upstream import revisions_app
from tests.fakes.upstreams import everything_http_app, serve_http

pytestmark = pytest.mark.anyio

ALLOW_ALL = {"version": "1", "default": "allow"}
NO_WIPE = {"version": "1", "default": "allow", "tools": {"wipe": {"action": "deny", "reason": "Wipes are by hand"}}}
DEMO = [sys.executable, "-m", "integrations.demo"]
NEWER = "2026-12-01"  # a revision newer than signoff's SDK knows, as an upstream may serve before signoff does


def modern_request(method: str, params: dict[str, Any], version: str) -> dict[str, Any]:
    """A 2026-07-28-era request: its revision in `_meta` (the per-request envelope) as well as in the header."""
    meta = {"io.modelcontextprotocol/protocolVersion": version, "io.modelcontextprotocol/clientCapabilities": {}}
    return {"jsonrpc": "2.0", "id": 7, "method": method, "params": {**params, "_meta": meta}}


async def post(url: str, method: str, params: dict[str, Any], version: str) -> tuple[int, Any]:
    """POST one request the way a 2026-07-28-era client frames it; the status and the JSON body."""
    headers = {
        "Authorization": f"Bearer {AGENT_TOKEN}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": version,
        "Mcp-Method": method,
    }
    if "name" in params:
        headers["Mcp-Name"] = params["name"]
    async with httpx2.AsyncClient(timeout=10) as http:
        response = await http.post(url, json=modern_request(method, params, version), headers=headers)
    if response.headers["content-type"].startswith("text/event-stream"):  # the answer is the stream's last event
        data = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
        return response.status_code, json.loads(data[-1])
    return response.status_code, response.json()


def leaves(group: BaseExceptionGroup[MCPError]) -> Iterator[MCPError]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from leaves(exc)
        else:
            yield exc


async def refused_connect(url: str) -> tuple[int, Any]:
    """The error the SDK's `Client` (mode auto, its default) raises when it finds no revision in common."""
    refused: list[MCPError] = []
    try:
        async with connect(url, mode="auto"):
            pass
    except* MCPError as group:  # raised inside the transport's task groups, nested
        refused = list(leaves(group))
    if not refused:
        raise AssertionError(f"the client connected to {url}")
    return refused[0].error.code, refused[0].error.data


CALLS = [("tools/call", {"name": "echo", "arguments": {"text": "hi"}}), ("tools/list", {})]


@pytest.mark.parametrize(("method", "params"), CALLS, ids=["tools/call", "tools/list"])
async def test_an_unknown_revision_gets_the_http_upstreams_own_refusal_with_supported_and_requested(
    signoff: Any, method: str, params: dict[str, Any]
) -> None:
    async with serve_http(everything_http_app()) as upstream:
        async with signoff([{"name": "ev", "url": f"{upstream}/mcp", "policy": ALLOW_ALL}]) as running:
            running_: Running = running
            with anyio.fail_after(20):
                direct = await post(f"{upstream}/mcp", method, params, "2099-01-01")
                through = await post(running_.mcp_url("ev"), method, params, "2099-01-01")

    assert through == direct
    status, body = through
    assert status == 400 and body["error"]["code"] == -32022
    assert body["error"]["data"] == {"supported": ["2026-07-28"], "requested": "2099-01-01"}


@pytest.mark.parametrize(("method", "params"), CALLS, ids=["tools/call", "tools/list"])
async def test_an_unknown_revision_to_a_stdio_upstream_names_the_revisions_signoff_serves_for_it(
    signoff: Any, method: str, params: dict[str, Any]
) -> None:
    params = {"name": "list_connections", "arguments": {}} if method == "tools/call" else params
    async with signoff([{"name": "demo", "command": DEMO, "policy": ALLOW_ALL}]) as running:
        running_: Running = running
        with anyio.fail_after(20):
            status, body = await post(running_.mcp_url("demo"), method, params, "2099-01-01")

    assert status == 400 and body["id"] == 7 and body["error"]["code"] == -32022
    assert body["error"]["data"] == {"supported": ["2026-07-28"], "requested": "2099-01-01"}


@pytest.mark.parametrize("sse", [False, True], ids=["json", "event-stream"])
async def test_a_revision_the_upstream_serves_works_through_signoff_though_signoff_lacks_it(
    signoff: Any, sse: bool
) -> None:
    async with serve_http(revisions_app(["2026-07-28", NEWER], sse=sse)) as upstream:
        async with signoff([{"name": "up", "url": upstream, "policy": NO_WIPE}]) as running:
            running_: Running = running
            with anyio.fail_after(20):
                direct = await post(upstream, "tools/call", {"name": "echo", "arguments": {"text": "hi"}}, NEWER)
                echoed = await post(running_.mcp_url("up"), "tools/call", CALLS[0][1], NEWER)
                wiped = await post(running_.mcp_url("up"), "tools/call", {"name": "wipe", "arguments": {}}, NEWER)

    assert echoed == direct == (200, {"jsonrpc": "2.0", "id": 7, "result": echoed[1]["result"]})
    assert echoed[1]["result"]["content"][0]["text"] == "hi"
    status, refused = wiped  # signoff's own answer, in the shape of the client's revision
    assert status == 200 and refused["result"]["isError"] is True and refused["result"]["resultType"] == "complete"
    assert 'signoff denied this call to "wipe": Wipes are by hand' in refused["result"]["content"][0]["text"]


async def test_a_revision_the_upstream_lacks_is_refused_as_direct_even_for_a_call_signoff_would_refuse(
    signoff: Any,
) -> None:
    async with serve_http(revisions_app([NEWER])) as upstream:
        async with signoff([{"name": "up", "url": upstream, "policy": NO_WIPE}]) as running:
            running_: Running = running
            with anyio.fail_after(20):
                wipe = {"name": "wipe", "arguments": {}}
                direct = await post(upstream, "tools/call", wipe, "2026-07-28")
                through = await post(running_.mcp_url("up"), "tools/call", wipe, "2026-07-28")
                errors = [await refused_connect(url) for url in (upstream, running_.mcp_url("up"))]
                rows = await running_.audit()

    assert through == direct
    status, body = through
    assert status == 400 and body["error"]["code"] == -32022
    assert body["error"]["data"] == {"supported": [NEWER], "requested": "2026-07-28"}
    assert errors[0] == errors[1] == (-32022, {"supported": [NEWER], "requested": "2026-07-28"})
    assert [r.tool for r in rows if r.kind != "policy_loaded"] == []  # refused before any policy decision
