"""A webhook receiver for the webhook tests: a Starlette app that verifies signatures and records deliveries.

It can be told to answer the first N requests with an error status, to exercise retries. It knows nothing
about signoff beyond the documented wire format.
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from integrations.webhooks import verify_signature

__all__ = ["Received", "WebhookReceiver"]


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it."""

    headers: dict[str, str]
    body: bytes
    signature_valid: bool

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """Serve `receiver.app` (e.g. with `serve_http`) and POST to `/hook`; `wait_for(n)` waits for n deliveries.

    The first `fail_first` requests get `fail_status` (with `Retry-After: retry_after` if given). A request with
    a bad signature gets 401. Every request is in `requests`; the ones answered 200 are in `deliveries`.
    """

    secret: str
    fail_first: int = 0
    fail_status: int = 503
    retry_after: str | None = None
    clock: Callable[[], float] = time.time
    requests: list[Received] = field(default_factory=list)
    deliveries: list[Received] = field(default_factory=list)
    _changed: anyio.Event = field(default_factory=anyio.Event)

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        header = request.headers.get("Signoff-Signature", "")
        received = Received(dict(request.headers), body, verify_signature(self.secret, header, body, self.clock()))
        self.requests.append(received)
        self._changed.set()
        if len(self.requests) <= self.fail_first:
            headers = {} if self.retry_after is None else {"Retry-After": self.retry_after}
            return Response(status_code=self.fail_status, headers=headers)
        if not received.signature_valid:
            return Response(status_code=401)
        self.deliveries.append(received)  # no await since the set() above, so waiters see it
        return Response(status_code=200)

    async def wait_for(self, count: int) -> list[Received]:
        """Wait until `count` requests were answered 200 (the caller bounds the wait); return them."""
        while len(self.deliveries) < count:
            await self._changed.wait()
            self._changed = anyio.Event()
        return self.deliveries
