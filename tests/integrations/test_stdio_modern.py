"""2026-07-28 clients on a stdio upstream: served as the spec says, as a direct connection to the server would be.

The child is the conformance fixture (`tests/fakes/conformance_server.py --stdio`), an SDK server that serves both
eras; `tests/fakes/broken_stdio.py` stands in for a child of the handshake revisions only. Raw HTTP where a test
needs the status codes and the stream in its hands, the SDK's `Client` (mode `auto`) where it drives the rounds.
An approved call's `Mcp-Param-*` headers are tested on both upstream kinds: the SDK's HTTP server checks them too.
"""

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp.client.context import ClientRequestContext
from mcp_types.version import LATEST_MODERN_VERSION

from tests.conftest import AGENT_TOKEN, OTHER_TOKEN, Running
from tests.fakes.conformance_server import conformance_http_app
from tests.fakes.upstreams import serve_http
from tests.test_approval_flow import api, wait_for_pending

pytestmark = pytest.mark.anyio

ALLOW_ALL = {"version": "1", "default": "allow"}
SERVERS = [
    {
        "name": "fixture",
        "command": [sys.executable, "-m", "tests.fakes.conformance_server", "--stdio"],
        "policy": ALLOW_ALL,
    },
    {"name": "old", "command": [sys.executable, "-m", "tests.fakes.broken_stdio"], "policy": ALLOW_ALL},
    {"name": "listed", "command": [sys.executable, "-m", "tests.fakes.handshake_child"], "policy": ALLOW_ALL},
]
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": LATEST_MODERN_VERSION,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
}
NAMED = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


def headers_for(method: str, params: dict[str, Any], token: str = AGENT_TOKEN, **extra: str) -> dict[str, str]:
    headers = {
        "authorization": f"Bearer {token}",
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": LATEST_MODERN_VERSION,
        "mcp-method": method,
    }
    if method in NAMED:
        headers["mcp-name"] = str(params[NAMED[method]])
    return {**headers, **extra}


async def post(
    running: Running,
    server: str,
    method: str,
    params: dict[str, Any],
    request_id: Any = 7,
    token: str = AGENT_TOKEN,
    capabilities: dict[str, Any] | None = None,
    extra: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """One 2026-07-28 request (its client declaring `capabilities`, none by default); its HTTP status and its
    answer (the last event, if it is a stream)."""
    envelope = {**ENVELOPE, "io.modelcontextprotocol/clientCapabilities": capabilities or {}}
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**params, "_meta": envelope}}
    headers = headers_for(method, params, token, **(extra or {}))
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(running.mcp_url(server), json=body, headers=headers)
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        events = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        return response.status_code, json.loads(events[-1])
    return response.status_code, response.json()


@asynccontextmanager
async def listen(
    running: Running, filter: dict[str, Any], request_id: str, token: str, server: str = "fixture"
) -> AsyncIterator[Any]:
    """A `subscriptions/listen` stream; yields an async iterator over its messages."""
    params = {"notifications": filter, "_meta": ENVELOPE}
    body = {"jsonrpc": "2.0", "id": request_id, "method": "subscriptions/listen", "params": params}
    async with (
        httpx2.AsyncClient(timeout=30) as http,
        http.stream(
            "POST", running.mcp_url(server), json=body, headers=headers_for("subscriptions/listen", params, token)
        ) as response,
    ):
        assert response.status_code == 200

        async def messages() -> AsyncIterator[Any]:
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    yield json.loads(line[5:])

        yield messages()


async def test_a_2026_client_answers_a_stdio_tools_questions_over_several_rounds(signoff: Any) -> None:
    asked: list[str] = []

    async def elicit(ctx: ClientRequestContext, params: types.ElicitRequestParams) -> Any:
        asked.append(params.message)
        answer = {"name": "Ada"} if "name" in params.message else {"color": "blue"}
        return types.ElicitResult(action="accept", content=answer)

    async def sample(ctx: ClientRequestContext, params: types.CreateMessageRequestParams) -> Any:
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="Paris"), model="m"
        )

    async with signoff(SERVERS) as running:
        async with running.client("fixture", mode="auto", elicitation_callback=elicit, sampling_callback=sample) as c:
            with anyio.fail_after(30):
                rounds = await c.call_tool("test_input_required_result_multi_round", {})
                sampled = await c.call_tool("test_input_required_result_sampling", {})
                prompt = await c.get_prompt("test_input_required_result_prompt", {})

    assert asked[:2] == ["Step 1: What is your name?", "Step 2: What is your favorite color?"]
    assert not rounds.is_error and rounds.content[0].text == "Ada likes blue."
    assert sampled.content[0].text == "Model said: Paris"
    assert "Use the following context" in prompt.messages[0].content.text


async def test_a_stdio_child_judges_a_2026_request_by_the_capabilities_it_declares(signoff: Any) -> None:
    async with signoff(SERVERS) as running:
        status, answer = await post(running, "fixture", "tools/call", {"name": "test_missing_capability"})
        gated_status, gated = await post(
            running, "fixture", "tools/call", {"name": "test_input_required_result_capabilities"}
        )

    assert (status, answer["error"]["code"]) == (400, -32021)  # the client declared no sampling
    assert answer["error"]["data"]["requiredCapabilities"] == {"sampling": {}}
    assert gated_status == 200 and gated["result"]["resultType"] == "input_required"
    assert gated["result"]["inputRequests"] == {}  # asked only for what the client can answer: nothing


@pytest.mark.parametrize("server", ["fixture", "old"])
async def test_methods_2026_removed_or_never_had_are_404_and_method_not_found_on_stdio(
    signoff: Any, server: str
) -> None:
    async with signoff(SERVERS) as running:
        answers = {
            method: await post(running, server, method, params, request_id=method)
            for method, params in list[tuple[str, dict[str, Any]]](
                [
                    ("initialize", {"protocolVersion": LATEST_MODERN_VERSION, "capabilities": {}}),
                    ("ping", {}),
                    ("logging/setLevel", {"level": "debug"}),
                    ("resources/subscribe", {"uri": "test://watched-resource"}),
                    ("resources/unsubscribe", {"uri": "test://watched-resource"}),
                    ("unknown/method", {}),
                ]
            )
        }

    for method, (status, answer) in answers.items():
        assert (method, status, answer["id"], answer["error"]["code"]) == (method, 404, method, -32601)


async def test_mcp_param_headers_that_disagree_with_the_arguments_are_refused_for_a_stdio_child(signoff: Any) -> None:
    call = {"name": "test_x_mcp_header", "arguments": {"region": "eu-west"}}
    async with signoff(SERVERS) as running:
        agreed = await post(running, "fixture", "tools/call", call, extra={"mcp-param-region": "eu-west"})
        mismatched = await post(running, "fixture", "tools/call", call, extra={"mcp-param-region": "us-east"})
        missing = await post(running, "fixture", "tools/call", call)

    assert agreed[0] == 200 and agreed[1]["result"]["content"][0]["text"] == "region=eu-west"
    for status, answer in (mismatched, missing):
        assert (status, answer["error"]["code"]) == (400, -32020)


async def test_a_listen_stream_on_a_stdio_child_is_acknowledged_tagged_and_filtered(signoff: Any) -> None:
    async with signoff(SERVERS) as running:
        with anyio.fail_after(30):
            async with (
                listen(running, {"toolsListChanged": True}, "alpha-listen", AGENT_TOKEN) as tools,
                listen(running, {"promptsListChanged": True}, "bravo-listen", OTHER_TOKEN) as prompts,
            ):
                tools_ack, prompts_ack = await anext(tools), await anext(prompts)
                await post(running, "fixture", "tools/call", {"name": "test_trigger_tool_change"})
                await post(running, "fixture", "tools/call", {"name": "test_trigger_prompt_change"})
                changed = await anext(tools)
                prompt_changed = await anext(prompts)

    subscription = "io.modelcontextprotocol/subscriptionId"
    assert tools_ack["method"] == prompts_ack["method"] == "notifications/subscriptions/acknowledged"
    assert tools_ack["params"]["_meta"][subscription] == "alpha-listen"
    assert prompts_ack["params"]["_meta"][subscription] == "bravo-listen"
    assert changed["method"] == "notifications/tools/list_changed"
    assert changed["params"]["_meta"][subscription] == "alpha-listen"
    # bravo asked for prompts only: the tools change never reached its stream, the prompts change did
    assert prompt_changed["method"] == "notifications/prompts/list_changed"
    assert prompt_changed["params"]["_meta"][subscription] == "bravo-listen"


async def test_a_handshake_era_stdio_child_is_translated_for_2026_clients_and_identifies_itself(signoff: Any) -> None:
    async with signoff(SERVERS) as running:
        status, discovered = await post(running, "old", "server/discover", {})
        echoed = await post(running, "old", "tools/call", {"name": "echo", "arguments": {}})
        async with httpx2.AsyncClient() as http:
            health = (await http.get(f"{running.url}/healthz")).json()["servers"]

    assert status == 200
    assert discovered["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "broken-stdio"
    assert echoed == (
        200,
        {
            "jsonrpc": "2.0",
            "id": 7,
            "result": {"content": [{"type": "text", "text": "fine"}], "resultType": "complete"},
        },
    )
    assert health["old"]["modern"].startswith("translated for a handshake-era child")
    assert health["old"]["ready"] and health["fixture"]["modern"] == "not yet"


async def test_an_open_listen_stream_does_not_keep_a_2026_call_from_hearing_its_own_logs(signoff: Any) -> None:
    heard: list[str] = []

    async def hear(message: Any) -> None:
        if isinstance(message, types.LoggingMessageNotification):
            heard.append(str(message.params.data))

    async with signoff(SERVERS) as running:
        with anyio.fail_after(30):
            async with listen(running, {"toolsListChanged": True}, "bravo-listen", OTHER_TOKEN) as stream:
                await anext(stream)  # acknowledged: the listen request is in flight for as long as it lasts
                async with running.client("fixture", mode="auto", log_level="info", message_handler=hear) as client:
                    await client.call_tool("test_tool_with_logging", {})

    assert heard == ["Tool execution started", "Tool processing data", "Tool execution completed"]


@pytest.mark.parametrize("kind", ["stdio", "http"])
async def test_an_approved_2026_call_reaches_the_upstream_with_the_mcp_param_headers_it_was_sent_with(
    signoff: Any, kind: str
) -> None:
    guarded = {
        "version": "1",
        "default": "allow",
        "tools": {"test_x_mcp_header": {"action": "require_approval", "approval": {"approvers": ["alice"]}}},
    }
    call = {"name": "test_x_mcp_header", "arguments": {"region": "eu-west"}}
    answers: list[tuple[int, dict[str, Any]]] = []
    async with (
        serve_http(conformance_http_app()) as upstream,
        signoff(
            [
                {**SERVERS[0], "policy": guarded}
                if kind == "stdio"
                else {"name": "fixture", "url": f"{upstream}/mcp", "policy": guarded}
            ],
            approvers=True,
            gateway={"approval_hold": "20s"},
        ) as running,
    ):
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:

                async def held() -> None:
                    answers.append(
                        await post(running, "fixture", "tools/call", call, extra={"mcp-param-region": "eu-west"})
                    )

                tg.start_soon(held)
                approval_id = await wait_for_pending(running, "test_x_mcp_header")
                await api(running, "POST", f"/api/approvals/{approval_id}/approve", "alice-approver-token", reason="ok")

    [(status, answer)] = answers
    assert status == 200 and answer["result"]["content"][0]["text"] == "region=eu-west"


async def test_signoff_serves_listen_streams_for_a_handshake_era_stdio_child_each_with_what_it_asked(
    signoff: Any,
) -> None:
    async def subscribed() -> list[str]:
        answer = (await post(running, "listed", "tools/call", {"name": "state", "arguments": {}}))[1]
        return list(json.loads(answer["result"]["content"][0]["text"]))

    alpha_asks = {"toolsListChanged": True, "promptsListChanged": True, "resourceSubscriptions": ["note://a"]}
    async with signoff(SERVERS) as running:
        with anyio.fail_after(30):
            async with (
                listen(running, alpha_asks, "alpha-listen", AGENT_TOKEN, "listed") as alpha,
                listen(
                    running, {"resourceSubscriptions": ["note://b"]}, "bravo-listen", OTHER_TOKEN, "listed"
                ) as bravo,
            ):
                alpha_ack, bravo_ack = await anext(alpha), await anext(bravo)
                while_listening = await subscribed()
                await post(running, "listed", "tools/call", {"name": "change", "arguments": {}})
                alpha_heard = [await anext(alpha), await anext(alpha)]
                bravo_heard = await anext(bravo)
            # the streams closed, so the child may stop watching: a bounded poll of what it was told (fail_after above)
            while (after := await subscribed()) != []:  # noqa: ASYNC110
                await anyio.sleep(0.05)

    tag = "io.modelcontextprotocol/subscriptionId"
    # the child sends no prompts list-changed (it does not declare it): the ack leaves it out
    assert alpha_ack["params"] == {
        "notifications": {"toolsListChanged": True, "resourceSubscriptions": ["note://a"]},
        "_meta": {tag: "alpha-listen"},
    }
    assert bravo_ack["params"]["notifications"] == {"resourceSubscriptions": ["note://b"]}
    assert sorted(while_listening) == ["note://a", "note://b"]
    assert [(m["method"], m["params"].get("uri"), m["params"]["_meta"][tag]) for m in alpha_heard] == [
        ("notifications/tools/list_changed", None, "alpha-listen"),
        ("notifications/resources/updated", "note://a", "alpha-listen"),
    ]
    # bravo asked for note://b only: no tools change, and not alpha's resource
    assert (bravo_heard["method"], bravo_heard["params"]["uri"]) == ("notifications/resources/updated", "note://b")
    assert bravo_heard["params"]["_meta"][tag] == "bravo-listen"
    assert after == []


async def test_a_handshake_era_stdio_childs_questions_reach_a_2026_client_as_rounds_of_input_required(
    signoff: Any,
) -> None:
    async def sample(ctx: ClientRequestContext, params: types.CreateMessageRequestParams) -> Any:
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="hi"), model="m")

    async def elicit(ctx: ClientRequestContext, params: types.ElicitRequestParams) -> Any:
        return types.ElicitResult(action="accept", content={"name": "Ada"})

    ask = {"name": "ask", "arguments": {"questions": ["sample", "elicit"]}}
    async with signoff(SERVERS) as running:
        with anyio.fail_after(30):
            async with running.client(
                "listed", mode="auto", sampling_callback=sample, elicitation_callback=elicit
            ) as c:
                answered = await c.call_tool("ask", ask["arguments"])
            undeclared = await post(
                running, "listed", "tools/call", {"name": "ask", "arguments": {"questions": ["sample"]}}
            )
            sampling: dict[str, Any] = {"sampling": {}}
            status, first = await post(running, "listed", "tools/call", ask, capabilities=sampling)  # the wire's view
            state = first["result"]["requestState"]
            stolen = await post(
                running,
                "listed",
                "tools/call",
                {**ask, "requestState": state},
                token=OTHER_TOKEN,
                capabilities=sampling,
            )

    assert not answered.is_error and answered.content[0].text == 'hi | {"name": "Ada"}'
    assert status == 200 and first["result"]["resultType"] == "input_required"
    assert first["result"]["inputRequests"]["signoff"]["method"] == "sampling/createMessage"
    # a client that declared no sampling is not asked: the child is told so and says what it was told
    assert "the client did not declare sampling" in undeclared[1]["result"]["content"][0]["text"]
    # another agent's retry with alpha's requestState is a call of its own, not alpha's round; and while alpha's
    # round waits, a question cannot be told apart from one for alpha's request, so it goes to nobody
    assert "requestState" not in stolen[1]["result"]
    assert "requests of several sessions are in flight" in stolen[1]["result"]["content"][0]["text"]
