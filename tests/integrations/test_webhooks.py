import json
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.to_thread
import httpx2
import pytest
from pydantic import SecretStr

from integrations.settings import WebhookSettings
from integrations.webhooks import WebhookNotifier, signature_header, verify_signature
from tests.fakes.upstreams import serve_http
from tests.fakes.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.anyio

SECRET = "whsec-test-secret"
NOW = 1_800_000_000.25  # 2027-01-15T08:00:00.250Z
APPROVAL_ID = uuid.UUID("0b5c3d4e-0000-4000-8000-000000000001")
REQUEST: dict[str, Any] = {
    "id": APPROVAL_ID,
    "tool": "drop_table",
    "arguments_note": "café-marker",
    "requested_at": datetime(2027, 1, 15, 8, 0, tzinfo=UTC),
}


def fixed_clock() -> float:
    return NOW


def webhook(url: str, events: tuple[str, ...] = ("approval.*",), secret: str = SECRET) -> WebhookSettings:
    return WebhookSettings(url=f"{url}/hook", secret=SecretStr(secret), events=events)


@asynccontextmanager
async def notifier_for(webhooks: Sequence[WebhookSettings], **kwargs: Any) -> AsyncIterator[WebhookNotifier]:
    """A started WebhookNotifier over a real client; closed (drained) on exit."""
    async with httpx2.AsyncClient(timeout=5) as client, anyio.create_task_group() as task_group:
        notifier = WebhookNotifier(webhooks, client, **kwargs)
        notifier.start(task_group)
        try:
            yield notifier
        finally:
            with anyio.fail_after(5):
                await notifier.close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_delivery_arrives_signed_with_event_and_request_json() -> None:
    receiver = WebhookReceiver(SECRET, clock=fixed_clock)
    async with serve_http(receiver.app) as url:
        async with notifier_for([webhook(url)], clock=fixed_clock) as notifier:
            notifier.publish("approval.requested", REQUEST)
            with anyio.fail_after(5):
                [received] = await receiver.wait_for(1)
        assert (notifier.delivered, notifier.failed, notifier.pending) == (1, 0, 0)

    delivery_id = received.headers["signoff-delivery"]
    expected = {
        "id": delivery_id,
        "event": "approval.requested",
        "created_at": "2027-01-15T08:00:00.250Z",
        "summary": "",  # the request had none: a receiver still finds the field
        "request": {
            "id": str(APPROVAL_ID),
            "tool": "drop_table",
            "arguments_note": "café-marker",
            "requested_at": "2027-01-15T08:00:00+00:00",
        },
    }
    assert received.body == json.dumps(expected, separators=(",", ":"), ensure_ascii=False).encode()
    assert uuid.UUID(delivery_id).version == 4
    assert received.headers["content-type"] == "application/json"
    assert received.headers["user-agent"] == "signoff"
    assert received.headers["signoff-event"] == "approval.requested"
    assert received.headers["signoff-signature"] == signature_header(SECRET, received.body, int(NOW))
    assert received.signature_valid


@pytest.mark.parametrize(
    ("status", "retry_after", "first_backoff"),
    [
        (503, "0", 30.0),  # Retry-After is honoured instead of the 30 s backoff
        (429, "0", 30.0),
        (500, None, 0.01),
        (408, None, 0.01),
    ],
)
async def test_receiver_failing_twice_gets_the_delivery_on_the_third_attempt(
    status: int, retry_after: str | None, first_backoff: float
) -> None:
    receiver = WebhookReceiver(SECRET, fail_first=2, fail_status=status, retry_after=retry_after)
    async with serve_http(receiver.app) as url:
        async with notifier_for([webhook(url)], first_backoff=first_backoff) as notifier:
            notifier.publish("approval.approved", REQUEST)
            with anyio.fail_after(5):
                await receiver.wait_for(1)
        assert (notifier.delivered, notifier.failed) == (1, 0)

    assert len(receiver.requests) == 3
    assert len({r.headers["signoff-delivery"] for r in receiver.requests}) == 1
    assert all(r.signature_valid for r in receiver.requests)


async def test_retry_after_is_capped_at_max_backoff() -> None:
    receiver = WebhookReceiver(SECRET, fail_first=1, fail_status=503, retry_after="3600")
    async with serve_http(receiver.app) as url:
        async with notifier_for([webhook(url)], first_backoff=0.01, max_backoff=0.01) as notifier:
            notifier.publish("approval.approved", REQUEST)
            with anyio.fail_after(5):
                await receiver.wait_for(1)

    assert len(receiver.requests) == 2


async def test_400_is_not_retried_and_counts_as_failed(caplog: pytest.LogCaptureFixture) -> None:
    receiver = WebhookReceiver(SECRET, fail_first=1, fail_status=400)
    async with serve_http(receiver.app) as url:
        async with notifier_for([webhook(url)], first_backoff=0.01) as notifier:
            notifier.publish("approval.requested", REQUEST)
            notifier.publish("approval.approved", REQUEST)
            with anyio.fail_after(5):
                [received] = await receiver.wait_for(1)
        assert (notifier.delivered, notifier.failed) == (1, 1)

    # Deliveries to one URL go in order, so the second arriving means the first was not retried.
    assert received.headers["signoff-event"] == "approval.approved"
    assert len(receiver.requests) == 2
    assert "status 400; not retrying" in caplog.text


async def test_gives_up_after_max_attempts_and_logs_neither_secret_nor_body(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="integrations.webhooks")
    receiver = WebhookReceiver(SECRET, fail_first=3, fail_status=500)
    async with serve_http(receiver.app) as url:
        async with notifier_for([webhook(url)], max_attempts=3, first_backoff=0.01) as notifier:
            notifier.publish("approval.requested", REQUEST)
            notifier.publish("approval.approved", REQUEST)
            with anyio.fail_after(5):
                [received] = await receiver.wait_for(1)
        assert (notifier.delivered, notifier.failed, notifier.pending) == (1, 1, 0)

    assert received.headers["signoff-event"] == "approval.approved"
    assert len(receiver.requests) == 4
    given_up = receiver.requests[0].headers["signoff-delivery"]
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "approval.requested" in error.getMessage()
    assert given_up in error.getMessage()
    assert "127.0.0.1" in error.getMessage()
    assert "status 500" in error.getMessage()
    assert SECRET not in caplog.text
    assert "café-marker" not in caplog.text
    assert "/hook" not in caplog.text


async def test_only_matching_event_patterns_are_delivered() -> None:
    decisions = WebhookReceiver(SECRET)
    everything = WebhookReceiver("another-secret")
    async with serve_http(decisions.app) as decisions_url, serve_http(everything.app) as everything_url:
        hooks = [
            webhook(decisions_url, events=("approval.approved", "approval.denied")),
            webhook(everything_url, secret="another-secret"),
        ]
        async with notifier_for(hooks) as notifier:
            notifier.publish("tool.called", REQUEST)
            assert notifier.pending == 0
            notifier.publish("approval.requested", REQUEST)
            notifier.publish("approval.approved", REQUEST)
            with anyio.fail_after(5):
                await decisions.wait_for(1)
                await everything.wait_for(2)

    assert [r.headers["signoff-event"] for r in decisions.requests] == ["approval.approved"]
    assert [r.headers["signoff-event"] for r in everything.requests] == ["approval.requested", "approval.approved"]
    assert all(r.signature_valid for r in decisions.requests + everything.requests)


async def test_dead_receiver_does_not_delay_a_healthy_one(caplog: pytest.LogCaptureFixture) -> None:
    healthy = WebhookReceiver(SECRET)
    async with serve_http(healthy.app) as url:
        # The dead URL first; its first retry waits 30 s, far beyond the test's bound.
        hooks = [webhook(closed_port_url()), webhook(url)]
        async with notifier_for(hooks, first_backoff=30, close_timeout=0.2) as notifier:
            for event in ("approval.requested", "approval.approved", "approval.expired"):
                notifier.publish(event, REQUEST)
            with anyio.fail_after(5):
                await healthy.wait_for(3)
        # close() gave up on the dead receiver's three deliveries and counted them.
        assert (notifier.delivered, notifier.failed, notifier.pending) == (3, 3, 0)

    assert "Dropping 3 undelivered webhook deliveries" in caplog.text


async def test_close_drains_queued_deliveries() -> None:
    receiver = WebhookReceiver(SECRET)
    events = [f"approval.e{i}" for i in range(5)]
    async with serve_http(receiver.app) as url:
        async with notifier_for([webhook(url)]) as notifier:
            for event in events:
                notifier.publish(event, REQUEST)
            assert notifier.pending == 5
        assert (notifier.delivered, notifier.pending) == (5, 0)

    assert [r.headers["signoff-event"] for r in receiver.deliveries] == events


async def test_close_without_start_still_delivers_what_was_queued() -> None:
    receiver = WebhookReceiver(SECRET)
    async with serve_http(receiver.app) as url, httpx2.AsyncClient(timeout=5) as client:
        notifier = WebhookNotifier([webhook(url)], client)
        notifier.publish("approval.requested", REQUEST)
        with anyio.fail_after(5):
            await notifier.close()

    assert [r.headers["signoff-event"] for r in receiver.deliveries] == ["approval.requested"]


async def test_publish_after_close_is_dropped_without_raising(caplog: pytest.LogCaptureFixture) -> None:
    async with httpx2.AsyncClient() as client:
        notifier = WebhookNotifier([webhook("http://127.0.0.1:9")], client)
        await notifier.close()
        notifier.publish("approval.requested", REQUEST)

    assert notifier.pending == 0
    assert "Webhooks are closed" in caplog.text


async def test_publish_from_a_worker_thread_is_delivered() -> None:
    receiver = WebhookReceiver(SECRET)
    async with serve_http(receiver.app) as url:
        async with notifier_for([webhook(url)]) as notifier:
            with anyio.fail_after(5):
                await anyio.to_thread.run_sync(notifier.publish, "approval.requested", REQUEST)
                (delivery,) = await receiver.wait_for(1)

    assert delivery.signature_valid
    assert delivery.json()["event"] == "approval.requested"
    assert delivery.json()["request"]["id"] == str(APPROVAL_ID)
    assert delivery.json()["request"]["arguments_note"] == "café-marker"


async def test_unserializable_request_is_logged_and_counted_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async with httpx2.AsyncClient() as client:
        notifier = WebhookNotifier([webhook("http://127.0.0.1:9")], client)
        notifier.publish("approval.requested", {"callback": object()})
        await notifier.close()

    assert (notifier.pending, notifier.failed) == (0, 1)
    assert "Cannot serialize approval.requested" in caplog.text


@pytest.mark.parametrize(
    ("max_attempts", "first_backoff", "max_backoff"),
    [(0, 0.5, 60.0), (8, -1.0, 60.0), (8, 5.0, 1.0)],
)
async def test_invalid_retry_settings_are_refused(max_attempts: int, first_backoff: float, max_backoff: float) -> None:
    async with httpx2.AsyncClient() as client:
        with pytest.raises(ValueError):
            WebhookNotifier([], client, max_attempts=max_attempts, first_backoff=first_backoff, max_backoff=max_backoff)


BODY = b'{"id":"x","event":"approval.requested"}'
T = 1_800_000_000


def signed(secret: str = SECRET, body: bytes = BODY, timestamp: int = T) -> str:
    return signature_header(secret, body, timestamp)


async def test_verify_signature_accepts_a_fresh_valid_signature() -> None:
    assert verify_signature(SECRET, signed(), BODY, now=T)
    assert verify_signature(SECRET, signed(), BODY, now=T + 300)
    assert verify_signature(SECRET, f" t={T} , v1={signed().split('v1=')[1]} ,v0=ignored", BODY, now=T)


async def test_verify_signature_accepts_any_v1_during_secret_rotation() -> None:
    old = signed(secret="old-secret").split("v1=")[1]
    assert verify_signature(SECRET, f"{signed()},v1={old}", BODY, now=T)
    assert verify_signature("old-secret", f"{signed()},v1={old}", BODY, now=T)


async def test_verify_signature_rejects_a_tampered_body() -> None:
    assert not verify_signature(SECRET, signed(), BODY.replace(b"requested", b"approved"), now=T)


async def test_verify_signature_rejects_a_wrong_secret() -> None:
    assert not verify_signature("not-the-secret", signed(), BODY, now=T)


@pytest.mark.parametrize("now", [T + 301, T - 301, T + 86_400])
async def test_verify_signature_rejects_a_timestamp_outside_the_tolerance(now: float) -> None:
    assert not verify_signature(SECRET, signed(), BODY, now=now)


async def test_verify_signature_rejects_a_replayed_signature_with_a_new_timestamp() -> None:
    digest = signed().split("v1=")[1]
    assert not verify_signature(SECRET, f"t={T + 60},v1={digest}", BODY, now=T + 60)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"t={T}",
        "v1=" + "0" * 64,
        f"t=abc,v1={'0' * 64}",
        "t={},v1={}".format("".join(chr(ord(c) + 0xFEE0) for c in str(T)), "0" * 64),  # fullwidth digits
        f"t={T},v1=zz",
        f"t={T},v1=é",
        f"t={T},t={T},v1=" + "0" * 64,
        f"t={'9' * 400},v1=" + "0" * 64,
        f"t={T},v1",
    ],
)
async def test_verify_signature_rejects_a_malformed_header_without_raising(header: str) -> None:
    assert not verify_signature(SECRET, header, BODY, now=T)


async def test_verify_signature_rejects_a_valid_digest_in_upper_case_or_with_junk() -> None:
    digest = signed().split("v1=")[1]
    assert not verify_signature(SECRET, f"t={T},v1={digest.upper()}", BODY, now=T)
    assert not verify_signature(SECRET, f"t={T},v1={digest}00", BODY, now=T)
