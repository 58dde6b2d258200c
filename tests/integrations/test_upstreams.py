import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp_types import PromptReference, TextContent

from integrations.demo import build_demo_server
from tests.fakes.upstreams import EverythingState, build_everything_server, everything_http_app, serve_http

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def text_of(result: object) -> str:
    content = getattr(result, "content", [])
    return "\n".join(block.text for block in content if isinstance(block, TextContent))


def load_bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_demo_kill_connection_removes_it_from_the_fleet() -> None:
    with anyio.fail_after(5):
        async with Client(build_demo_server()) as client:
            before = text_of(await client.call_tool("list_connections", {}))
            killed = await client.call_tool("kill_connection", {"pid": 4207})
            after = text_of(await client.call_tool("list_connections", {}))
            again = await client.call_tool("kill_connection", {"pid": 4207})

    assert "conn-3" in before
    assert not killed.is_error
    assert "conn-3" not in after
    assert again.is_error
    assert "4207" in text_of(again)


async def test_demo_runs_over_stdio_as_signoff_serve_spawns_it() -> None:
    demo = StdioServerParameters(command=sys.executable, args=["-m", "integrations.demo"], cwd=ROOT)
    with anyio.fail_after(20):
        async with Client(demo) as client:
            tools = await client.list_tools()
            killed = await client.call_tool("kill_connection", {"pid": 4121})

    assert len(tools.tools) == 9
    assert "conn-1" in text_of(killed)


async def test_demo_destructive_tools_change_state_and_reject_unknown_ids() -> None:
    with anyio.fail_after(5):
        async with Client(build_demo_server()) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            terminated = await client.call_tool("terminate_user_connections", {"user_id": "bob"})
            dropped = await client.call_tool("ip_control_drop_connections", {"ips": ["10.0.0.40"]})
            destroyed = await client.call_tool("destroy_connection", {"connection_id": "conn-1"})
            closed = await client.call_tool("session_destroy", {"session_id": "sess-2"})
            unknown = await client.call_tool("get_connection", {"connection_id": "conn-99"})
            sql = await client.call_tool("execute_sql", {"sql": "DROP TABLE users"})
            fleet = await client.read_resource("demo://fleet")
            prompt = await client.get_prompt("triage_connections", {})

    assert tools["list_connections"].annotations is not None
    assert tools["list_connections"].annotations.read_only_hint is True
    assert tools["destroy_connection"].annotations is not None
    assert tools["destroy_connection"].annotations.destructive_hint is True
    assert "conn-3" in text_of(terminated) and "conn-4" in text_of(terminated)
    assert "conn-5" in text_of(dropped)
    assert not destroyed.is_error and not closed.is_error
    assert unknown.is_error and "conn-99" in text_of(unknown)
    assert not sql.is_error and "nothing was run" in text_of(sql)
    fleet_json = getattr(fleet.contents[0], "text", "")
    assert '"conn-2"' in fleet_json and '"conn-6"' in fleet_json
    assert '"conn-1"' not in fleet_json and '"sess-2"' not in fleet_json
    assert prompt.messages


async def test_everything_server_over_http_reports_progress_to_the_caller() -> None:
    state = EverythingState()
    updates: list[tuple[float, float | None, str | None]] = []

    # The parameter names matter to mypy: ProgressFnT is a Protocol (progress, total, message).
    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    with anyio.fail_after(10):
        async with serve_http(everything_http_app(state)) as base_url, Client(f"{base_url}/mcp") as client:
            result = await client.call_tool("slow_count", {"steps": 3}, progress_callback=on_progress)
            counted = await client.call_tool("counter", {})
            failed = await client.call_tool("fail", {"message": "boom"})

    assert text_of(result) == "counted to 3"
    assert [(value, total) for value, total, _ in updates] == [(1, 3), (2, 3), (3, 3)]
    assert text_of(counted) == "1"
    assert state.counter == 1
    assert failed.is_error and "boom" in text_of(failed)


async def test_everything_server_in_memory_offers_resources_prompts_and_completions() -> None:
    with anyio.fail_after(5):
        async with Client(build_everything_server()) as client:
            greeting = await client.read_resource("test://greeting")
            item = await client.read_resource("test://items/42")
            prompt = await client.get_prompt("summarize", {"topic": "audit"})
            completion = await client.complete(
                PromptReference(type="ref/prompt", name="summarize"), {"name": "topic", "value": "a"}
            )

    assert getattr(greeting.contents[0], "text", "") == "Hello from the everything server"
    assert getattr(item.contents[0], "text", "") == "item 42"
    assert "audit" in str(prompt.messages[0].content)
    assert completion.completion.values == ["approvals", "audit"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_sdk_client_initializes_lists_and_calls_echo_on_the_fast_upstream(mode: str) -> None:
    fast_upstream = load_bench("fast_upstream")
    with anyio.fail_after(10):
        async with serve_http(fast_upstream.app) as base_url, Client(f"{base_url}/mcp", mode=mode) as client:
            tools = await client.list_tools()
            result = await client.call_tool("echo", {"text": "hi"})
            version = client.protocol_version

    assert [tool.name for tool in tools.tools] == ["echo"]
    assert not result.is_error and text_of(result) == "hi"
    assert version == "2025-11-25"


async def test_sdk_client_calls_echo_on_the_sdk_upstream() -> None:
    sdk_upstream = load_bench("sdk_upstream")
    with anyio.fail_after(10):
        async with serve_http(sdk_upstream.build_app()) as base_url, Client(f"{base_url}/mcp") as client:
            result = await client.call_tool("echo", {"text": "hi"})

    assert text_of(result) == "hi"


async def test_fast_upstream_answers_protocol_edges_like_the_spec_says() -> None:
    fast_upstream = load_bench("fast_upstream")
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}}
    with anyio.fail_after(10):
        async with serve_http(fast_upstream.app) as base_url, httpx2.AsyncClient(base_url=base_url) as http:
            initialized = await http.post("/mcp", json=init)
            session = {"mcp-session-id": initialized.headers["mcp-session-id"]}
            notified = await http.post(
                "/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session
            )
            pinged = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "ping"}, headers=session)
            unknown = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 3, "method": "nope"}, headers=session)
            garbled = await http.post("/mcp", content=b"{not json", headers=session)
            streamed = await http.get("/mcp", headers=session)
            deleted = await http.delete("/mcp", headers=session)
            gone = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 4, "method": "ping"}, headers=session)

    assert initialized.json()["result"]["protocolVersion"] == "2025-06-18"
    assert notified.status_code == 202 and notified.content == b""
    assert pinged.json() == {"jsonrpc": "2.0", "id": 2, "result": {}}
    assert unknown.json()["error"]["code"] == -32601
    assert garbled.status_code == 400 and garbled.json()["error"]["code"] == -32700
    assert streamed.status_code == 405
    assert deleted.status_code == 200
    assert gone.status_code == 404
