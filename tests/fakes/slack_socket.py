"""A stand-in for Slack's Socket Mode WebSocket on loopback (aiohttp), for the Socket Mode test.

The fake Web API's `apps.connections.open` answers with `url`; the app connects there, gets `hello`, and
acks each envelope `send()` pushes by sending back `{"envelope_id": ...}`, as
https://docs.slack.dev/apis/events-api/using-socket-mode describes. It knows nothing about signoff.
"""

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from aiohttp import WSMsgType, web

__all__ = ["SlackSocket"]


@dataclass
class SlackSocket:
    acks: list[dict[str, Any]] = field(default_factory=list)
    _socket: web.WebSocketResponse | None = None
    _changed: anyio.Event = field(default_factory=anyio.Event)

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        """Listen on a free loopback port; yield the `wss` URL to hand out (plain ws:// here)."""
        app = web.Application()
        app.router.add_get("/link", self._connect)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        try:
            yield f"ws://{host}:{port}/link"
        finally:
            if self._socket is not None:
                await self._socket.close()
            await runner.cleanup()

    async def _connect(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self._socket = socket
        await socket.send_json({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0SIGNOFF"}})
        self._changed.set()
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                self.acks.append(json.loads(message.data))
                self._changed.set()
        return socket

    async def _wait(self, condition: Any) -> None:
        while not condition():
            await self._changed.wait()
            self._changed = anyio.Event()

    async def send(self, payload: dict[str, Any], kind: str = "interactive") -> dict[str, Any]:
        """Push `payload` in an envelope once the app is connected; return the app's ack."""
        await self._wait(lambda: self._socket is not None)
        assert self._socket is not None
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "accepts_response_payload": kind == "interactive",
            "payload": payload,
            "retry_attempt": 0,
            "retry_reason": "",
        }
        await self._socket.send_json(envelope)
        await self._wait(lambda: any(a.get("envelope_id") == envelope_id for a in self.acks))
        return next(a for a in self.acks if a.get("envelope_id") == envelope_id)
