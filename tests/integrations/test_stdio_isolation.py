"""One stdio child shared by every session: nothing addressed to one session reaches another.

Two agents (alpha and bravo) talk through a real signoff to one child (`tests/fakes/shared_child.py`) with
real MCP SDK clients, or with raw HTTP where a test needs the request ids or the connection in its hands.
"""

import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.context import ClientRequestContext

from tests.conftest import AGENT_TOKEN, OTHER_TOKEN, READER, Running
from tests.test_approval_flow import wait_for_pending

pytestmark = [
    pytest.mark.anyio,
    # logging, sampling and subscriptions are deprecated in 2026-07-28; a handshake-era child still uses them
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

SERVERS = [
    {
        "name": "child",
        "command": [sys.executable, "-m", "tests.fakes.shared_child"],
        "policy": {"version": "1", "default": "allow"},
    }
]
LIST_CHANGED = "notifications/tools/list_changed"


@dataclass
class Ear:
    """Everything the server sent one client (notifications and requests, as JSON), and waiting for some of it."""

    heard: list[str] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)  # the questions of the sampling requests it answered
    _changed: anyio.Event = field(default_factory=anyio.Event)

    async def hear(self, message: Any) -> None:
        dump = getattr(message, "model_dump_json", None)
        self.heard.append(dump(by_alias=True, exclude_none=True) if dump else repr(message))
        self._changed.set()
        self._changed = anyio.Event()

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        await self.hear(f"progress {message}")

    async def sample(self, ctx: ClientRequestContext, params: types.CreateMessageRequestParams) -> Any:
        content = params.messages[0].content
        self.asked.append(content.text if isinstance(content, types.TextContent) else "")
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="from alpha's model"), model="alpha-model"
        )

    async def elicit(self, ctx: ClientRequestContext, params: types.ElicitRequestParams) -> Any:
        self.asked.append(params.message)
        if isinstance(params, types.ElicitRequestURLParams):
            return types.ElicitResult(action="accept")
        return types.ElicitResult(action="accept", content={"ok": True})

    def has(self, text: str) -> bool:
        return any(text in item for item in self.heard)

    def count(self, text: str) -> int:
        return sum(text in item for item in self.heard)

    async def until(self, predicate: Callable[[], bool]) -> None:
        with anyio.fail_after(5):
            while not predicate():
                await self._changed.wait()


def text(result: types.CallToolResult) -> str:
    block = result.content[0]
    return block.text if isinstance(block, types.TextContent) else ""


async def child_state(client: Client) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(text(await client.call_tool("state", {})))
    return state


async def until_state(client: Client, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The child's state once `predicate` holds: each look is a round trip through signoff, so no sleep."""
    with anyio.fail_after(5):
        while not predicate(state := await child_state(client)):
            pass
    return state


async def everyone_heard(*ears: Ear, count: int = 1) -> None:
    """Wait until each ear has heard `count` list-changed notifications: everything sent before them has arrived."""
    for ear in ears:
        await ear.until(lambda ear=ear: ear.count(LIST_CHANGED) >= count)  # type: ignore[misc]


@asynccontextmanager
async def two_agents(
    running: Running, alpha: Ear, bravo: Ear, **alpha_options: Any
) -> AsyncIterator[tuple[Client, Client]]:
    async with (
        running.client("child", AGENT_TOKEN, message_handler=alpha.hear, **alpha_options) as a,
        running.client("child", OTHER_TOKEN, message_handler=bravo.hear) as b,
    ):
        yield a, b


async def test_a_secret_logged_for_one_agent_never_reaches_another(signoff: Any) -> None:
    alpha, bravo = Ear(), Ear()
    async with signoff(SERVERS) as running, two_agents(running, alpha, bravo) as (a, b):
        result = await a.call_tool("whisper", {"secret": "alpha-7f3"}, progress_callback=alpha.progress)
        assert text(result) == "whispered"
        await b.call_tool("whisper", {"secret": "bravo-91c"})  # no progress token: a JSON answer, unless it logs
        async with anyio.create_task_group() as tg:  # in flight together: a log could belong to either
            for i in range(5):
                tg.start_soon(a.call_tool, "whisper", {"secret": f"alpha-{i}"})
                tg.start_soon(b.call_tool, "whisper", {"secret": f"bravo-{i}"})
        await a.call_tool("later", {"text": "for everyone", "level": "info"})
        await everyone_heard(alpha, bravo)

    assert alpha.has("secret alpha-7f3")
    assert alpha.has("progress whispering alpha-7f3")
    assert bravo.has("secret bravo-91c")
    assert alpha.has("for everyone")
    assert bravo.has("for everyone")
    assert not bravo.has("alpha"), bravo.heard
    assert not alpha.has("bravo"), alpha.heard


async def test_a_log_sent_while_two_sessions_wait_reaches_neither_and_is_counted_in_healthz(signoff: Any) -> None:
    alpha, bravo = Ear(), Ear()
    async with signoff(SERVERS) as running, two_agents(running, alpha, bravo) as (a, b):
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(a.call_tool, "hang", {"key": "alpha-waits"}, progress_callback=alpha.progress))
            await alpha.until(lambda: alpha.has("hanging alpha-waits"))
            await b.call_tool("whisper", {"secret": "bravo-while-alpha-waits"})  # over stdio: whose is it?
            await b.call_tool("release", {"key": "alpha-waits"})
        await a.call_tool("later", {"text": "barrier", "level": "info"})
        await everyone_heard(alpha, bravo)
        async with httpx2.AsyncClient() as http:
            health = (await http.get(f"{running.url}/healthz")).json()

    assert not alpha.has("bravo-while-alpha-waits")
    assert not bravo.has("secret bravo-while-alpha-waits")  # isolation wins over delivery
    assert health["servers"]["child"]["unattributed"] == 1


async def test_log_levels_are_per_session_and_the_child_logs_at_the_most_verbose_one_asked(signoff: Any) -> None:
    alpha, bravo = Ear(), Ear()
    async with signoff(SERVERS) as running, two_agents(running, alpha, bravo) as (a, b):
        await a.set_logging_level("error")
        await b.set_logging_level("debug")
        assert (await child_state(a))["level"] == "debug"

        await a.call_tool("later", {"text": "an idle notice", "level": "info"})
        await everyone_heard(alpha, bravo)
        await a.call_tool("whisper", {"secret": "alpha-chatter", "level": "info"})
        await a.call_tool("whisper", {"secret": "alpha-alarm", "level": "error"})
        await b.call_tool("later", {"text": "an idle alarm", "level": "critical"})
        await everyone_heard(alpha, bravo, count=2)

        await b.set_logging_level("warning")
        assert (await child_state(b))["level"] == "warning"

    assert bravo.has("an idle notice")
    assert not alpha.has("an idle notice")  # alpha asked for errors only
    assert not alpha.has("secret alpha-chatter")
    assert alpha.has("secret alpha-alarm")
    assert alpha.has("an idle alarm")
    assert bravo.has("an idle alarm")
    assert not bravo.has("alpha-"), bravo.heard


async def test_resource_updates_reach_only_the_sessions_that_subscribed(signoff: Any) -> None:
    alpha, bravo = Ear(), Ear()
    updated = "notifications/resources/updated"
    async with signoff(SERVERS) as running, two_agents(running, alpha, bravo) as (a, b):
        await a.subscribe_resource("note://a")
        await b.subscribe_resource("note://b")
        await b.call_tool("touch", {"uri": "note://a"})  # while bravo's call is in flight: still alpha's update
        await alpha.until(lambda: alpha.has(updated))
        await a.call_tool("later", {"text": "barrier", "level": "info"})
        await everyone_heard(alpha, bravo)
        assert not bravo.has(updated)

        await b.subscribe_resource("note://a")
        await a.unsubscribe_resource("note://a")
        assert (await child_state(a))["subscriptions"] == ["note://a", "note://b"]  # bravo still wants it
        await a.call_tool("touch", {"uri": "note://a"})
        await bravo.until(lambda: bravo.has(updated))
        await b.unsubscribe_resource("note://a")
        assert (await child_state(b))["subscriptions"] == ["note://b"]  # nobody wants it

    assert alpha.count(updated) == 1


async def test_sampling_goes_to_the_session_whose_call_asked_and_honours_its_capabilities(signoff: Any) -> None:
    alpha, bravo = Ear(), Ear()
    async with signoff(SERVERS) as running, two_agents(running, alpha, bravo, sampling_callback=alpha.sample) as (a, b):
        asked = await a.call_tool("ask", {"question": "alpha asks"})
        refused = await b.call_tool("ask", {"question": "bravo asks"})  # bravo declared no sampling

    assert text(asked) == "sampled: from alpha's model"
    assert refused.is_error
    assert "sampling failed" in text(refused)
    assert alpha.asked == ["alpha asks"]
    assert not bravo.has("asks")


async def test_elicitation_goes_to_the_session_whose_call_asked_and_honours_its_capabilities(signoff: Any) -> None:
    alpha, bravo = Ear(), Ear()
    async with (
        signoff(SERVERS) as running,
        two_agents(running, alpha, bravo, elicitation_callback=alpha.elicit) as (a, b),
    ):
        confirmed = await a.call_tool("confirm", {"what": "alpha's deploy"})
        refused = await b.call_tool("confirm", {"what": "bravo's deploy"})  # bravo declared no elicitation

    assert text(confirmed) == 'accept: {"ok": true}'
    assert refused.is_error
    assert "elicitation failed" in text(refused)
    assert alpha.asked == ["confirm alpha's deploy?"]
    assert not bravo.has("deploy")


async def test_the_end_of_a_url_elicitation_reaches_only_the_session_that_was_sent_to_the_url(signoff: Any) -> None:
    alpha, bravo = Ear(), Ear()
    async with (
        signoff(SERVERS) as running,
        two_agents(running, alpha, bravo, elicitation_callback=alpha.elicit) as (a, _),
    ):
        linked = await a.call_tool("link", {"key": "alpha-link"})
        await a.call_tool("later", {"text": "barrier", "level": "info"})
        await everyone_heard(alpha, bravo)
        await alpha.until(lambda: alpha.has("notifications/elicitation/complete"))

    assert text(linked) == "accept"
    assert alpha.asked == ["open alpha-link"]
    assert not bravo.has("alpha-link")


async def test_a_cancel_from_one_session_never_cancels_another_sessions_call(signoff: Any) -> None:
    alpha, bravo = Ear(), Ear()
    results: list[str] = []
    async with signoff(SERVERS) as running, two_agents(running, alpha, bravo) as (a, b):

        async def hang() -> None:
            result = await a.call_tool("hang", {"key": "alpha-call"}, progress_callback=alpha.progress)
            results.append(text(result))

        async with anyio.create_task_group() as tg:
            tg.start_soon(hang)
            await alpha.until(lambda: alpha.has("hanging alpha-call"))
            for request_id in range(50):  # ids repeat across sessions: one of these is alpha's call's id
                cancel = types.CancelledNotificationParams(request_id=request_id, reason="bravo cancels")
                await b.session.send_notification(types.CancelledNotification(params=cancel))
            await b.call_tool("release", {"key": "alpha-call"})
        state = await child_state(b)

    assert results == ["released alpha-call"]
    assert state["cancelled"] == []


@dataclass
class RawSession:
    """One handshake session over plain HTTP, for tests that choose request ids or drop the connection."""

    http: httpx2.AsyncClient
    url: str
    session_id: str = ""

    def headers(self, accept: str = "application/json, text/event-stream") -> dict[str, str]:
        return {"accept": accept, "mcp-session-id": self.session_id, "mcp-protocol-version": "2025-11-25"}

    async def post(self, message: dict[str, Any], accept: str = "application/json, text/event-stream") -> Any:
        return await self.http.post(self.url, json={"jsonrpc": "2.0", **message}, headers=self.headers(accept))


@asynccontextmanager
async def raw_session(running: Running, token: str = AGENT_TOKEN) -> AsyncIterator[RawSession]:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        raw = RawSession(http, running.mcp_url("child"))
        init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
        response = await http.post(
            raw.url,
            json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init},
            headers={"accept": "application/json, text/event-stream"},
        )
        raw.session_id = response.headers["mcp-session-id"]
        await raw.post({"method": "notifications/initialized"})
        yield raw


async def test_a_cancelled_call_is_answered_at_once_and_its_late_answer_is_ignored(signoff: Any) -> None:
    answers: list[dict[str, Any]] = []
    async with signoff(SERVERS) as running, raw_session(running) as raw, running.client("child") as observer:

        async def hang() -> None:
            call = {"name": "hang", "arguments": {"key": "raw-call"}}
            response = await raw.post({"id": 7, "method": "tools/call", "params": call}, "application/json")
            answers.append(response.json())

        with anyio.fail_after(5):  # not the upstream timeout: the client said it no longer wants the answer
            async with anyio.create_task_group() as tg:
                tg.start_soon(hang)
                await until_state(observer, lambda state: "raw-call" in state["hanging"])
                await raw.post({"method": "notifications/cancelled", "params": {"requestId": 7}})
        state = await until_state(observer, lambda state: "raw-call" in state["cancelled"])

    assert answers[0]["id"] == 7
    assert "error" in answers[0] or answers[0]["result"]["isError"]
    assert state["hanging"] == []


@pytest.mark.parametrize("accept", ["application/json", "application/json, text/event-stream"])
async def test_a_client_that_goes_away_cancels_its_call_in_the_child(signoff: Any, accept: str) -> None:
    async with signoff(SERVERS) as running, raw_session(running) as raw, running.client("child") as observer:
        call = {"name": "hang", "arguments": {"key": "gone"}, "_meta": {"progressToken": "p"}}
        async with anyio.create_task_group() as tg:
            tg.start_soon(raw.post, {"id": 3, "method": "tools/call", "params": call}, accept)
            await until_state(observer, lambda state: "gone" in state["hanging"])
            tg.cancel_scope.cancel()  # the client closes its request
        state = await until_state(observer, lambda state: "gone" in state["cancelled"])
        outcomes = [event.outcome for event in await running.audit() if event.tool == "hang"]

    assert state["hanging"] == []
    assert outcomes == ["error"]  # the call's outcome is recorded: the agent went away before the answer


async def status(http: httpx2.AsyncClient, approval_id: str) -> str:
    return str((await http.get(f"/api/approvals/{approval_id}", headers=READER)).json()["status"])


async def test_a_held_call_whose_client_goes_keeps_its_request_for_the_repeat_which_runs_it_once(
    signoff: Any,
) -> None:
    guarded = {"whisper": {"action": "require_approval", "approval": {"approvers": ["alice"], "timeout": "10m"}}}
    servers = [{**SERVERS[0], "policy": {"version": "1", "default": "allow", "tools": guarded}}]
    call = {"name": "whisper", "arguments": {"secret": "held"}}
    hold = {"approval_hold": "4s"}
    async with signoff(servers, approvers=True, gateway=hold) as running, raw_session(running) as raw:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(raw.post, {"id": 1, "method": "tools/call", "params": call}, "application/json")
                approval_id = await wait_for_pending(running, "whisper")
                tg.cancel_scope.cancel()  # the client goes while its call is held
            async with httpx2.AsyncClient(base_url=running.url, timeout=10) as http:
                still = await status(http, approval_id)
                alice = {"Authorization": "Bearer alice-approver-token"}
                await http.post(f"/api/approvals/{approval_id}/approve", json={"reason": "ok"}, headers=alice)
                await anyio.sleep(0.5)  # time for a call still held to have run it, were one held
                approved = await status(http, approval_id)
                again = (await raw.post({"id": 2, "method": "tools/call", "params": call}, "application/json")).json()
                done = await status(http, approval_id)

    assert still == "pending"  # a disconnect withdraws nothing
    assert approved == "approved"  # and nothing ran it for nobody to read
    assert again["result"]["content"][0]["text"] == "whispered"  # the repeat ran it and read its result
    assert done == "executed"


async def test_a_2026_client_hears_the_logs_of_its_own_requests_at_the_level_it_opted_in_to(signoff: Any) -> None:
    alpha, bravo = Ear(), Ear()
    async with (
        signoff(SERVERS) as running,
        running.client("child", AGENT_TOKEN, mode="auto", log_level="warning", message_handler=alpha.hear) as a,
        running.client("child", OTHER_TOKEN, mode="auto", message_handler=bravo.hear) as b,  # no opt-in: no logs
    ):
        await a.call_tool("whisper", {"secret": "alpha-chatter", "level": "info"})
        await a.call_tool("whisper", {"secret": "alpha-alarm", "level": "error"})
        await b.call_tool("whisper", {"secret": "bravo-alarm", "level": "error"})

    assert alpha.has("secret alpha-alarm")
    assert not alpha.has("alpha-chatter")
    assert not alpha.has("bravo")
    assert not bravo.has("secret")


async def test_a_session_that_ends_cancels_its_calls_and_releases_what_only_it_subscribed_to(signoff: Any) -> None:
    async with signoff(SERVERS) as running, running.client("child") as observer:
        await observer.subscribe_resource("note://b")
        async with raw_session(running) as raw:
            for uri in ("note://a", "note://b"):
                await raw.post({"id": uri, "method": "resources/subscribe", "params": {"uri": uri}})
            call = {"name": "hang", "arguments": {"key": "ends"}}
            async with anyio.create_task_group() as tg:
                tg.start_soon(raw.post, {"id": 9, "method": "tools/call", "params": call}, "application/json")
                await until_state(observer, lambda state: "ends" in state["hanging"])
                ended = await raw.http.delete(raw.url, headers=raw.headers())
        state = await until_state(observer, lambda state: "ends" in state["cancelled"])

    assert ended.status_code == 200
    assert state["subscriptions"] == ["note://b"]  # the observer still wants note://b
