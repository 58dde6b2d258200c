"""A stand-in for the Slack Web API on loopback: answers as Slack does (shapes from docs.slack.dev) and records calls.

Serve `fake.app` with `serve_http` and point `[slack] api_url` (or a WebClient's `base_url`) at `<url>/api/`.
It keeps the messages as Slack would show them (`fake.message(channel, ts)` is the latest text and blocks),
and can be told to answer a method with an error (`fail("chat.postMessage", error="not_in_channel")`) or a
rate limit (`fail("chat.postMessage", status=429, retry_after=1)`). It knows nothing about signoff.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["Call", "FakeSlack"]

TEAM = {"id": "T0SIGNOFF", "name": "Acme", "domain": "acme"}
BOT = {"user": "signoff", "user_id": "U0BOT", "bot_id": "B0BOT"}
SCOPES = {"chat.postMessage": "chat:write", "chat.update": "chat:write", "chat.postEphemeral": "chat:write"}


@dataclass(frozen=True)
class Call:
    """One Web API call as the fake received it: the method, its arguments, and the token it came with."""

    method: str
    args: dict[str, Any]
    token: str


@dataclass(frozen=True)
class _Failure:
    status: int
    error: str
    retry_after: int | None


@dataclass
class FakeSlack:
    bot_token: str = "xoxb-test-token"
    app_token: str = "xapp-test-token"
    channels: dict[str, str] = field(default_factory=lambda: {"#approvals": "C0APPROVALS", "#db": "C0DB"})
    missing_scopes: set[str] = field(default_factory=set)
    socket_url: str = "wss://wss-primary.slack.invalid/link"
    calls: list[Call] = field(default_factory=list)
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    _failures: dict[str, list[_Failure]] = field(default_factory=dict)
    _changed: anyio.Event = field(default_factory=anyio.Event)
    _seq: int = 0

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/api/{method}", self._answer, methods=["GET", "POST"])])

    def fail(
        self, method: str, *, error: str = "ratelimited", status: int = 200, retry_after: int | None = None
    ) -> None:
        """Answer the next call of `method` with `error` (and `status`, e.g. 429 with `retry_after` seconds)."""
        self._failures.setdefault(method, []).append(_Failure(status, error, retry_after))

    def called(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def message(self, channel: str, ts: str) -> dict[str, Any]:
        return self.messages[(channel, ts)]

    async def wait_for(self, method: str, count: int = 1) -> list[Call]:
        """Wait until `method` was called `count` times (the caller bounds the wait); return those calls."""
        await self.wait_until(lambda: len(self.called(method)) >= count)
        return self.called(method)

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait until `condition()` holds after some call (the caller bounds the wait)."""
        while not condition():
            await self._changed.wait()
            self._changed = anyio.Event()

    async def _answer(self, request: Request) -> Response:
        method = request.path_params["method"]
        args: dict[str, Any] = dict(request.query_params)
        body = await request.body()
        is_json = request.headers.get("content-type", "").startswith("application/json")
        if body.strip() and is_json:
            args.update(json.loads(body))
        elif body.strip():
            args.update((await request.form()).items())
        token = request.headers.get("authorization", "").removeprefix("Bearer ") or str(args.pop("token", ""))
        self.calls.append(Call(method, args, token))
        self._changed.set()
        failures = self._failures.get(method)
        if failures:
            failure = failures.pop(0)
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
            return JSONResponse({"ok": False, "error": failure.error}, status_code=failure.status, headers=headers)
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if token != expected:
            return _error("invalid_auth" if token else "not_authed")
        if SCOPES.get(method) in self.missing_scopes:
            return _error("missing_scope", needed=SCOPES[method], provided="commands")
        return self._result(method, args)

    def _result(self, method: str, args: dict[str, Any]) -> Response:
        if method == "auth.test":
            return _ok(url=f"https://{TEAM['domain']}.slack.com/", team=TEAM["name"], team_id=TEAM["id"], **BOT)
        if method == "apps.connections.open":
            return _ok(url=self.socket_url)
        if method == "users.info":
            user = str(args.get("user", ""))
            return _ok(
                user={"id": user, "team_id": TEAM["id"], "name": user.lower(), "real_name": user, "is_bot": False}
            )
        if method == "views.open":
            view = {
                **_blocks(args.get("view")),
                "id": f"V{self._next()}",
                "team_id": TEAM["id"],
                "state": {"values": {}},
            }
            return _ok(view=view)
        if method in ("chat.postMessage", "chat.update", "chat.postEphemeral"):
            channel = self.channels.get(str(args.get("channel")), str(args.get("channel")))
            if not channel.startswith(("C", "G", "D")):
                return _error("channel_not_found")
            if method == "chat.postEphemeral":
                return _ok(message_ts=self._ts())
            text = args.get("text", "")
            blocks = _blocks(args.get("blocks"))
            if method == "chat.postMessage":
                ts = self._ts()
                self.messages[(channel, ts)] = {"text": text, "blocks": blocks}
                message = {"type": "message", "subtype": "bot_message", "ts": ts, **BOT, "text": text, "blocks": blocks}
                return _ok(channel=channel, ts=ts, message=message)
            ts = str(args.get("ts"))
            if (channel, ts) not in self.messages:
                return _error("message_not_found")
            self.messages[(channel, ts)] = {"text": text, "blocks": blocks}
            return _ok(channel=channel, ts=ts, text=text, message={"type": "message", "text": text, "blocks": blocks})
        return _error("unknown_method")

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _ts(self) -> str:
        return f"{1_700_000_000 + self._next()}.{self._seq:06d}"


def _blocks(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _ok(**fields: Any) -> JSONResponse:
    return JSONResponse({"ok": True, **fields})


def _error(error: str, **fields: Any) -> JSONResponse:
    # Slack answers a refused call with HTTP 200 and ok: false.
    return JSONResponse({"ok": False, "error": error, **fields})
