"""Request bodies on every route: bounded in size while they stream (the MCP endpoint has its own), in time, decoded.

A raw socket client meets a real signoff over loopback: it streams chunked bodies past a route's limit without
ending them, declares huge lengths, trickles a byte at a time, and sends JSON that is invalid, too deep or of the
wrong types. Each must get a 4xx that says what was wrong, no traceback in the log, and a normal request right
after must still work.
"""

import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import pytest
from anyio.abc import SocketStream

from integrations.bodies import FORM_LIMIT, JSON_LIMIT, SLACK_LIMIT
from tests.conftest import AGENT_TOKEN, READER, Running
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http
from tests.webpage import POLICY, sign_in

pytestmark = pytest.mark.anyio

Start = Callable[..., AbstractAsyncContextManager[Running]]
APPROVER = "Bearer alice-approver-token"
NOBODY = uuid.UUID(int=7)  # no such request: a valid body reaches the approval engine and gets 404


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Errors logged with a traceback by signoff, Starlette, uvicorn or Bolt."""
    ours = ("integrations", "approvals", "policies", "uvicorn", "starlette", "slack_bolt", "slack_sdk")
    return [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info and r.name.startswith(ours)]


@asynccontextmanager
async def served(signoff: Start, **gateway: Any) -> AsyncIterator[Running]:
    async with serve_http(everything_http_app(EverythingState())) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": POLICY}]
        async with signoff(servers, approvers=True, gateway={"approval_hold": "0.2s", **gateway}) as running:
            yield running


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def error(self) -> str:
        text = self.body.decode()
        return str(json.loads(text)["error"]) if text.startswith("{") else text


async def answer_of(stream: SocketStream) -> Answer:
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive()
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    while len(rest) < int(headers.get("content-length", "0")):
        rest += await stream.receive()
    return Answer(int(status_line.split()[1]), headers, rest)


@asynccontextmanager
async def opened(running: Running, method: str, path: str, headers: dict[str, str]) -> AsyncIterator[SocketStream]:
    """A raw connection that has sent a request's head (and no body yet)."""
    port = int(running.url.rsplit(":", 1)[1])
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        await stream.send(head.encode() + b"\r\n")
        yield stream


async def chunked_past_limit(running: Running, path: str, headers: dict[str, str], limit: int) -> Answer:
    """Stream `limit + 1` bytes in chunks, never sending the last chunk, and read what comes back."""
    async with opened(running, "POST", path, {**headers, "Transfer-Encoding": "chunked"}) as stream:
        left = limit + 1
        while left:
            size = min(left, 16 * 1024)
            await stream.send(b"%x\r\n" % size + b"a" * size + b"\r\n")
            left -= size
        with anyio.fail_after(5):
            return await answer_of(stream)


async def declared_huge(running: Running, path: str, headers: dict[str, str]) -> Answer:
    async with opened(running, "POST", path, {**headers, "Content-Length": str(300 * 1024 * 1024)}) as stream:
        with anyio.fail_after(5):
            return await answer_of(stream)


async def trickled(running: Running, path: str, headers: dict[str, str]) -> Answer:
    """Declare 64 bytes, then send one every 0.2 s: the answer must come before the body does."""
    async with opened(running, "POST", path, {**headers, "Content-Length": "64"}) as stream:

        async def trickle() -> None:
            for _ in range(64):
                await anyio.sleep(0.2)  # the client's own pace, not a wait for a result
                try:
                    await stream.send(b" ")
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(trickle)
            with anyio.fail_after(5):
                answer = await answer_of(stream)
            tg.cancel_scope.cancel()
        return answer


async def cookie_of(running: Running) -> str:
    async with httpx2.AsyncClient(base_url=running.url, timeout=10) as http:
        await sign_in(http, "alice")
        return f"signoff_session={http.cookies['signoff_session']}"


async def still_serving(running: Running) -> tuple[int, int, list[str]]:
    async with httpx2.AsyncClient(base_url=running.url, timeout=10) as http:
        listing = await http.get("/api/approvals", headers=READER)
        vote = await http.post(f"/api/approvals/{NOBODY}/approve", json={"reason": "fine"}, headers=APPROVER_HEADERS)
    async with running.client("ev") as client:
        tools = [tool.name for tool in (await client.list_tools()).tools]
    return listing.status_code, vote.status_code, tools


APPROVER_HEADERS = {"Authorization": APPROVER}


def routes(cookie: str) -> dict[str, tuple[str, dict[str, str], int]]:
    """Every kind of non-MCP route that reads a body: its path, the headers that get it that far, its limit."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    return {
        "slack": ("/slack/events", form, SLACK_LIMIT),
        "api": (
            f"/api/approvals/{NOBODY}/approve",
            {**APPROVER_HEADERS, "Content-Type": "application/json"},
            JSON_LIMIT,
        ),
        "login": ("/login", form, FORM_LIMIT),
        "web form": (f"/approvals/{NOBODY}/reject", {**form, "Cookie": cookie}, FORM_LIMIT),
    }


SLACK = '\n[slack]\nbot_token = "xoxb-test-token"\nsigning_secret = "slack-signing-secret-1"\napi_url = "{api}/api/"\n'


@asynccontextmanager
async def with_slack(signoff: Start, **gateway: Any) -> AsyncIterator[Running]:
    """signoff with Slack in HTTP mode, its Web API a loopback stand-in."""
    from tests.fakes.slack_api import FakeSlack

    slack = FakeSlack()
    async with serve_http(slack.app) as api, serve_http(everything_http_app(EverythingState())) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": POLICY}]
        extra = SLACK.format(api=api)
        async with signoff(
            servers, approvers=True, gateway={"approval_hold": "0.2s", **gateway}, extra=extra
        ) as running:
            yield running


async def test_a_chunked_body_past_a_routes_limit_gets_413_while_it_still_streams(
    signoff: Start, caplog: pytest.LogCaptureFixture
) -> None:
    async with with_slack(signoff) as running:
        cookie = await cookie_of(running)
        answers = {name: await chunked_past_limit(running, *route) for name, route in routes(cookie).items()}
        after = await still_serving(running)

    for name, (_, _, limit) in routes(cookie).items():
        answer = answers[name]
        assert answer.status == 413, name
        assert answer.error == f"The request body is larger than this route accepts ({limit} bytes)", name
        assert answer.headers["connection"] == "close", name
    assert after[:2] == (200, 404) and after[2]
    assert tracebacks(caplog) == []


async def test_a_declared_length_past_a_routes_limit_gets_413_before_any_body_is_sent(
    signoff: Start, caplog: pytest.LogCaptureFixture
) -> None:
    async with with_slack(signoff) as running:
        cookie = await cookie_of(running)
        answers = {
            name: await declared_huge(running, path, headers) for name, (path, headers, _) in routes(cookie).items()
        }
        after = await still_serving(running)

    assert {name: a.status for name, a in answers.items()} == dict.fromkeys(answers, 413)
    assert "larger than" in answers["api"].error and str(JSON_LIMIT) in answers["api"].error
    assert after[:2] == (200, 404) and after[2]
    assert tracebacks(caplog) == []


async def test_a_body_that_trickles_gets_408_on_every_route_the_mcp_endpoint_too(
    signoff: Start, caplog: pytest.LogCaptureFixture
) -> None:
    async with with_slack(signoff, body_timeout="1s") as running:
        cookie = await cookie_of(running)
        targets = {name: (path, headers) for name, (path, headers, _) in routes(cookie).items()}
        mcp = {"Authorization": f"Bearer {AGENT_TOKEN}", "Accept": "application/json, text/event-stream"}
        targets["mcp"] = ("/mcp/ev", {**mcp, "Content-Type": "application/json"})
        answers = {name: await trickled(running, *target) for name, target in targets.items()}
        after = await still_serving(running)

    assert {name: a.status for name, a in answers.items()} == dict.fromkeys(targets, 408)
    for name in routes(cookie):
        assert answers[name].error == "The request body did not arrive within 1 s: send it all at once", name
    mcp_error = json.loads(answers["mcp"].body)["error"]
    assert mcp_error["message"] == "The request body did not arrive within 1 s: send it all at once"
    assert after[:2] == (200, 404) and after[2]
    assert tracebacks(caplog) == []


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{not json", "The body is not valid JSON"),
        (b"\xff\xfe{}", "The body is not valid JSON"),
        (b'{"reason": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "The body's JSON is nested too deeply"),
        (b"[]", 'The body must be a JSON object like {"reason": "..."}, not an array'),
        (b'"fine"', 'The body must be a JSON object like {"reason": "..."}, not a string'),
        (b'{"reason": 5}', '"reason" must be a string of at most 2000 characters'),
        (b'{"reason": "\\ud800 half a character"}', "The reason must be text: it contains a lone surrogate (\\ud800)"),
        (b'{"reason": "a\\u0000b"}', "The reason must be text: it contains a NUL character"),
        (b'{"reason": "ok", "grant": [1]}', '"grant" must be a duration such as "15m", "1h" or a number of seconds'),
        (b'{"reason": "ok", "grant": 1' + b"0" * 400 + b"}", '"grant" must be a duration such as "15m", "1h" or'),
    ],
)
async def test_a_json_body_that_is_invalid_too_deep_or_mistyped_gets_400_naming_the_fault(
    signoff: Start, caplog: pytest.LogCaptureFixture, body: bytes, problem: str
) -> None:
    async with served(signoff) as running, httpx2.AsyncClient(base_url=running.url, timeout=10) as http:
        headers = {**APPROVER_HEADERS, "Content-Type": "application/json"}
        vote = await http.post(f"/api/approvals/{NOBODY}/reject", content=body, headers=headers)
        revoke = await http.post(f"/api/grants/{NOBODY}/revoke", content=body, headers=headers)
        fine = await http.post(f"/api/approvals/{NOBODY}/approve", json={"reason": "ok"}, headers=headers)

    assert vote.status_code == 400
    assert vote.json()["error"].startswith(problem)
    if "grant" not in problem:
        assert revoke.status_code == 400
        assert revoke.json()["error"].startswith(problem)
    assert fine.status_code == 404
    assert tracebacks(caplog) == []


async def test_a_web_forms_reason_with_a_nul_gets_400_naming_the_field(
    signoff: Start, caplog: pytest.LogCaptureFixture
) -> None:
    async with served(signoff) as running, httpx2.AsyncClient(base_url=running.url, timeout=10) as http:
        csrf = await sign_in(http, "alice")
        async with running.client("ev") as client, anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "delete_record", {"record_id": "r-1"})
            with anyio.fail_after(5):
                from tests.webpage import pending_id

                approval_id = await pending_id(running, "delete_record")
            nul = await http.post(f"/approvals/{approval_id}/reject", data={"csrf": csrf, "reason": "no\x00pe"})
            fine = await http.post(f"/approvals/{approval_id}/reject", data={"csrf": csrf, "reason": "not today"})
        detail = (await http.get(f"/api/approvals/{approval_id}", headers=READER)).json()

    assert nul.status_code == 400 and "The reason must be text: it contains a NUL character" in nul.text
    assert fine.status_code == 303
    assert detail["status"] == "rejected"
    assert tracebacks(caplog) == []


async def test_a_content_length_of_non_ascii_digits_or_5000_digits_gets_400_on_the_mcp_endpoint(
    signoff: Start, caplog: pytest.LogCaptureFixture
) -> None:
    mcp = {"Authorization": f"Bearer {AGENT_TOKEN}", "Accept": "application/json, text/event-stream"}
    async with served(signoff) as running:
        answers = []
        for declared in ("\u00b2", "\u0663", "1" * 5000):  # "²".isdigit() and "٣".isdigit() are both true
            async with opened(running, "POST", "/mcp/ev", {**mcp, "Content-Length": declared}) as stream:
                answers.append(await answer_of(stream))
        after = await still_serving(running)

    assert [a.status for a in answers] == [400, 400, 400]  # the HTTP parser refuses them before signoff reads them
    assert after[:2] == (200, 404) and after[2]
    assert tracebacks(caplog) == []


async def test_audit_page_cursors_past_any_row_id_are_refused_with_400_not_a_500(
    signoff: Start, caplog: pytest.LogCaptureFixture
) -> None:
    async with served(signoff) as running, httpx2.AsyncClient(base_url=running.url, timeout=10) as http:
        await sign_in(http, "alice")
        cursors = [{key: value} for key in ("before", "after") for value in ("9" * 20, "1" * 5000, "\u00b2")]
        pages = [await http.get("/audit", params=cursor) for cursor in cursors]
        fine = await http.get("/audit", params={"before": "5"})

    assert [p.status_code for p in pages] == [400] * 6
    assert all("must be a row number, as in this page&#39;s own links" in p.text for p in pages)
    assert fine.status_code == 200
    assert tracebacks(caplog) == []
