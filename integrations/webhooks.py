"""Outgoing webhooks: the `Notifier` that POSTs signed approval events to the URLs in `[[webhooks]]`.

`publish()` only queues; one background task per URL delivers, in order, with retries, so a dead receiver
never delays a healthy one and a tool call never waits for a webhook. It must not log secrets or bodies.

Every delivery is a POST of compact UTF-8 JSON::

    {"id": "<delivery uuid>", "event": "approval.requested", "created_at": "2026-01-01T00:00:00.000Z",
     "summary": "path=/srv/config.yaml content=<3 lines>", "request": {...}}

`summary` is the one-line summary of the call's redacted arguments (`approvals.summary`; also `request.summary`),
for a receiver that shows one line (a pager, a chat message); `request` carries the tool's own description
(`tool_description`), `requested_at`, and whether an agent is held waiting (`agent_waiting`, `held_until`).

(`audit.checkpoint` carries `"checkpoint": {...}` in place of `"request"`: a signed head of the audit chain.)

with the headers ``Signoff-Event``, ``Signoff-Delivery`` (the same uuid, constant across retries, so receivers
can deduplicate) and ``Signoff-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``, the
scheme Stripe uses (https://docs.stripe.com/webhooks#verify-manually). A receiver checks it with
`verify_signature`, which also rejects a timestamp more than `tolerance` seconds from its clock (a replay)::

    from integrations.webhooks import verify_signature

    body = await request.body()  # the raw bytes, before any JSON parsing
    if not verify_signature(secret, request.headers.get("Signoff-Signature", ""), body, now=time.time()):
        return Response(status_code=401)

A 2xx answer is a delivery. Connection errors, timeouts, 408, 429 and 5xx are retried with exponential
backoff (a `Retry-After` on 429 or 503 is honoured), up to `max_attempts`; any other status is final.
"""

import fnmatch
import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2

from integrations.background import Backoff, WriteBehind, retry_after
from integrations.settings import WebhookSettings
from integrations.supervision import Spawner

__all__ = ["WebhookNotifier", "signature_header", "verify_signature"]

logger = logging.getLogger(__name__)

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    """The `Signoff-Signature` value for `body` sent at `timestamp` (unix seconds)."""
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def verify_signature(secret: str, header: str, body: bytes, now: float, tolerance: float = 300) -> bool:
    """Whether `header` (a `Signoff-Signature` value) signs `body` with `secret` within `tolerance` seconds of `now`.

    Never raises: a malformed header is simply not valid. Several `v1=` parts may match (as during a secret
    rotation); parts with other names are ignored. Digests are compared in constant time.
    """
    timestamps: list[str] = []
    digests: list[str] = []
    for part in header.split(","):
        key, equals, value = part.partition("=")
        if not equals:
            return False
        if key.strip() == "t":
            timestamps.append(value.strip())
        elif key.strip() == "v1":
            digests.append(value.strip())
        # Other schemes (a future v2) are ignored, as Stripe's libraries do.
    if len(timestamps) != 1 or not digests or _TIMESTAMP.fullmatch(timestamps[0]) is None:
        return False
    timestamp = int(timestamps[0])
    if abs(now - timestamp) > tolerance:
        return False
    expected = _digest(secret, timestamp, body).encode()
    # Check every candidate rather than stopping at the first match, so timing says nothing about which matched.
    valid = False
    for digest in digests:
        if _HEX_DIGEST.fullmatch(digest) is not None and hmac.compare_digest(expected, digest.encode()):
            valid = True
    return valid


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@dataclass(slots=True)
class _Delivery:
    id: uuid.UUID
    event: str
    body: bytes


@dataclass(slots=True)
class _Endpoint:
    url: str
    host: str  # the only part of the URL we log: paths and queries often carry tokens
    secret: str
    events: tuple[str, ...]
    queue: WriteBehind[_Delivery] = field(init=False)

    def wants(self, event: str) -> bool:
        # fnmatchcase: fnmatch.fnmatch would fold case on Windows.
        return any(fnmatch.fnmatchcase(event, pattern) for pattern in self.events)


class WebhookNotifier:
    """Delivers each published event to every webhook whose `events` globs match it; implements `Notifier`.

    Call `start(task_group)` once, and `await close()` at shutdown to drain the queue. `delivered`, `failed`
    and `pending` count deliveries (one per matching webhook per event) for /healthz.
    """

    def __init__(
        self,
        webhooks: Sequence[WebhookSettings],
        client: httpx2.AsyncClient,
        *,
        max_attempts: int = 8,
        first_backoff: float = 0.5,
        max_backoff: float = 60.0,
        close_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        self._endpoints = [
            _Endpoint(
                url=webhook.url,
                host=urlsplit(webhook.url).hostname or "?",
                secret=webhook.secret.get_secret_value(),
                events=webhook.events,
            )
            for webhook in webhooks
        ]
        for endpoint in self._endpoints:
            deliver = partial(self._handle, endpoint)
            endpoint.queue = WriteBehind(f"webhook {endpoint.host}", deliver, close_timeout=close_timeout)
        self._client = client
        self._max_attempts = max_attempts
        self._backoff = Backoff(first_backoff, max_backoff)
        self._close_timeout = close_timeout
        self._clock = clock
        self._closed = False
        self.delivered = 0
        self._failed = 0

    @property
    def pending(self) -> int:
        """Deliveries queued or in flight (including those waiting to retry)."""
        return sum(endpoint.queue.queued for endpoint in self._endpoints)

    @property
    def failed(self) -> int:
        """Deliveries given up on: refused, out of attempts, dropped at shutdown, or set aside after an error."""
        return self._failed + sum(len(endpoint.queue.set_aside) for endpoint in self._endpoints)

    def publish(self, event: str, request: dict[str, Any], *, subject: str = "request") -> None:
        """Queue `event` for every matching webhook; returns at once and never raises.

        Call it from the event loop's thread or from an AnyIO worker thread. `subject` names the envelope's key for
        `request`: "request" for approval events, "checkpoint" for `audit.checkpoint`.
        """
        endpoints = [endpoint for endpoint in self._endpoints if endpoint.wants(event)]
        if not endpoints:
            return
        if self._closed:
            logger.warning("Webhooks are closed; not delivering %s to %d webhook(s)", event, len(endpoints))
            return
        created_at = datetime.fromtimestamp(self._clock(), UTC).isoformat(timespec="milliseconds")
        deliveries: list[tuple[_Endpoint, _Delivery]] = []
        try:
            for endpoint in endpoints:
                delivery_id = uuid.uuid4()
                envelope = {
                    "id": str(delivery_id),
                    "event": event,
                    "created_at": created_at.replace("+00:00", "Z"),
                    **({"summary": request.get("summary", "")} if subject == "request" else {}),
                    subject: request,
                }
                # Serialized now, since the caller may change `request` after we return.
                body = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False, default=_json_default)
                deliveries.append((endpoint, _Delivery(delivery_id, event, body.encode())))
        except (TypeError, ValueError) as exc:
            logger.error("Cannot serialize %s for webhooks (%s); not delivered", event, exc)
            self._failed += len(endpoints)
            return
        for endpoint, delivery in deliveries:
            endpoint.queue.put(delivery)

    def start(self, spawner: Spawner) -> None:
        """Start one delivery worker per webhook, so a slow receiver holds up only its own deliveries."""
        for endpoint in self._endpoints:
            endpoint.queue.start(spawner)

    async def close(self) -> None:
        """Deliver what is queued for up to `close_timeout` seconds, then drop the rest (logged, counted as failed)."""
        self._closed = True

        async def close(endpoint: _Endpoint) -> None:
            dropped = len(await endpoint.queue.close())
            if dropped:
                logger.error("Dropping %d undelivered webhook deliveries to %s at shutdown", dropped, endpoint.host)
                self._failed += dropped

        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as task_group:
                for endpoint in self._endpoints:
                    task_group.start_soon(close, endpoint)

    async def _handle(self, endpoint: _Endpoint, deliveries: Sequence[_Delivery]) -> int:
        await self._deliver(endpoint, deliveries[0])
        return 1

    async def _deliver(self, endpoint: _Endpoint, delivery: _Delivery) -> None:
        outcome = ""
        for attempt in range(1, self._max_attempts + 1):
            timestamp = int(self._clock())
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "signoff",
                "Signoff-Event": delivery.event,
                "Signoff-Delivery": str(delivery.id),
                "Signoff-Signature": signature_header(endpoint.secret, delivery.body, timestamp),
            }
            asked: float | None = None
            try:
                # Streamed and never read: a receiver's answer body is of no interest, however large.
                async with self._client.stream(
                    "POST", endpoint.url, content=delivery.body, headers=headers
                ) as response:
                    status = response.status_code
                    if status in (429, 503):
                        asked = retry_after(response.headers.get("Retry-After"), self._clock())
            except httpx2.TransportError as exc:
                outcome = type(exc).__name__
            else:
                if 200 <= status < 300:
                    self.delivered += 1
                    logger.info(
                        "Delivered webhook %s %s to %s (status %d, attempt %d)",
                        delivery.event,
                        delivery.id,
                        endpoint.host,
                        status,
                        attempt,
                    )
                    return
                if not (status in (408, 429) or status >= 500):
                    self._failed += 1
                    logger.error(
                        "Webhook %s %s to %s refused with status %d; not retrying",
                        delivery.event,
                        delivery.id,
                        endpoint.host,
                        status,
                    )
                    return
                outcome = f"status {status}"
            if attempt == self._max_attempts:
                break
            delay = self._backoff.delay(attempt, asked)
            logger.warning(
                "Webhook %s %s to %s failed (%s, attempt %d of %d); retrying in %.2f s",
                delivery.event,
                delivery.id,
                endpoint.host,
                outcome,
                attempt,
                self._max_attempts,
                delay,
            )
            await anyio.sleep(delay)
        self._failed += 1
        logger.error(
            "Webhook %s %s to %s failed (%s) after %d attempts; giving up",
            delivery.event,
            delivery.id,
            endpoint.host,
            outcome,
            self._max_attempts,
        )
