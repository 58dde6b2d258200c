"""SlackNotifier: one message per approval request in its channel, kept up to date with `chat.update`.

Escalations and reminders (`approval.escalated`, `approval.reminded`) also post a reply in the request's thread
that mentions who may now decide, and an escalation with a channel posts there too; those notes are sent once,
not retried (the request's message, brought up to date, names the new approvers either way).

`publish()` only marks the request as needing a sync, so a tool call never waits for Slack. A worker per
request then renders the request as it now stands in the database (so a burst of events becomes one update,
and the message can never show an older state than the last one it showed) and posts or updates it. Rate
limits (429 + Retry-After) hold every call until Slack says; other failures are retried with backoff for as
long as the request is pending. The request itself never depends on Slack: the web page and the API work
whatever happens here, and failures are logged and counted for /healthz. It must not log tokens or arguments.
"""

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

import aiohttp
import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.lowlevel import EventLoopToken
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlmodel import Session

from approvals import service
from approvals.errors import ApprovalNotFound
from approvals.models import utcnow
from approvals.store import Store
from integrations.background import Backoff, retry_after
from integrations.slack.blocks import Card, notice_message, request_message
from integrations.slack.diagnosis import explain
from integrations.supervision import Spawner

__all__ = ["Posted", "Records", "SlackNotifier", "StoreRecords"]

logger = logging.getLogger(__name__)

NOTICES = ("approval.escalated", "approval.reminded")  # events that post a note besides updating the message
Posted = dict[str, str]  # {"channel": "C0123", "ts": "1700000000.000100"}: where a request's message is


class Records(Protocol):
    """Where the notifier reads requests and keeps the Slack message of each."""

    async def load(self, request_id: UUID) -> tuple[dict[str, Any], Posted | None]:
        """The request as the API shows it (with its votes and "url"), and its Slack message if it has one."""
        ...

    async def save(self, request_id: UUID, posted: Posted) -> None: ...

    async def unposted(self) -> list[UUID]:
        """Pending requests that have no Slack message yet (announced while Slack was down, or before a crash)."""
        ...


class StoreRecords:
    """`Records` on the approval database; `base_url` is signoff's, for each request's link to its page."""

    def __init__(self, store: Store, base_url: str, now: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.base_url = base_url
        self.now = now  # the approvals clock: who may decide depends on the time (escalations)

    async def load(self, request_id: UUID) -> tuple[dict[str, Any], Posted | None]:
        def read(session: Session) -> tuple[dict[str, Any], Posted | None]:
            request = service.get_request(session, request_id)
            view = service.public_view(request, service.decisions_for(session, request_id), self.now())
            posted = json.loads(request.messages or "{}").get("slack")
            return {**view, "url": f"{self.base_url}/approvals/{request_id}"}, posted

        return await self.store.run(read)

    async def save(self, request_id: UUID, posted: Posted) -> None:
        await self.store.run(service.record_message, request_id, "slack", posted)

    async def unposted(self) -> list[UUID]:
        def read(session: Session) -> list[UUID]:
            pending = service.list_requests(session, status="pending", limit=10_000)
            return [r.id for r in pending if "slack" not in json.loads(r.messages or "{}")]

        return await self.store.run(read)


class SlackNotifier:
    """Implements `Notifier` for Slack. Call `start(task_group)` once and `await close()` at shutdown.

    `posted`, `updated`, `failed`, `retries`, `syncing` and `last_error` are for /healthz.
    """

    def __init__(
        self,
        client: AsyncWebClient,
        records: Records,
        channel: str | None,
        *,
        first_backoff: float = 1.0,
        max_backoff: float = 60.0,
        final_attempts: int = 6,
        close_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        mentions: dict[str, str] | None = None,
    ) -> None:
        self._client = client
        self._mentions = mentions or {}
        self._records = records
        self._channel = channel
        self._backoff = Backoff(first_backoff, max_backoff)
        self._final_attempts = final_attempts
        self._close_timeout = close_timeout
        self._clock = clock
        self._dirty: set[UUID] = set()
        self._running: set[UUID] = set()
        self._where: dict[UUID, Posted] = {}  # what we posted, in case saving it failed
        self._not_before = 0.0  # a 429 holds every call until then (Slack's limits are per app and method)
        self._task_group: Spawner | None = None
        self._loop_thread: int | None = None
        self._token: EventLoopToken | None = None
        self._idle: anyio.Event | None = None
        self._stopping = anyio.Event()  # set by close(): waits for a retry end at once
        self.posted = 0
        self.updated = 0
        self.failed = 0
        self.retries = 0
        self.last_error: str | None = None
        self.last_error_at: str | None = None

    @property
    def syncing(self) -> int:
        """Requests whose message is being posted or updated, or waiting to retry."""
        return len(self._running | self._dirty)

    def publish(self, event: str, request: dict[str, Any]) -> None:
        """Mark the request's message as needing a sync; returns at once and never raises."""
        try:
            request_id = UUID(str(request["id"]))
        except (KeyError, ValueError):
            logger.error("Slack: %s without a request id; ignored", event)
            return
        notice = request.get("notice") if event in NOTICES else None
        if self._loop_thread is None or threading.get_ident() == self._loop_thread:
            self._mark(request_id)
            if notice is not None:
                self._tell_soon(request_id, event, request)
            return
        try:
            anyio.from_thread.run_sync(self._mark, request_id, token=self._token)
            if notice is not None:
                anyio.from_thread.run_sync(self._tell_soon, request_id, event, request, token=self._token)
        except RuntimeError:
            logger.warning("Slack: %s for %s arrived while stopping; not shown in Slack", event, request_id)

    def _tell_soon(self, request_id: UUID, event: str, view: dict[str, Any]) -> None:
        if self._task_group is None:
            logger.warning("Slack: %s for %s before the notifier started; not told in Slack", event, request_id)
            return
        self._task_group.start_soon(self._tell, request_id, event, view)

    async def _tell(self, request_id: UUID, event: str, view: dict[str, Any]) -> None:
        """Post the escalation's or reminder's note in the request's thread (and an escalation's own channel)."""
        notice: dict[str, Any] = view["notice"]
        card = Card.from_view(view, self._mentions)
        kind = "escalated" if event == "approval.escalated" else "reminded"
        message = notice_message(card, kind, tuple(notice.get("approvers") or ()))
        try:
            _, posted = await self._records.load(request_id)
            posted = self._where.get(request_id) or posted
            places: list[tuple[str, str | None]] = []  # (channel, thread_ts): the thread, else a post of its own
            if posted is not None:
                places.append((posted["channel"], posted["ts"]))
            elif view.get("channel") or self._channel:
                places.append((str(view.get("channel") or self._channel), None))
            if notice.get("channel"):
                places.append((str(notice["channel"]), None))
            for channel, thread in places:
                if not await self._gate():
                    return
                await self._client.chat_postMessage(
                    channel=channel, thread_ts=thread, text=message.text, blocks=message.blocks, unfurl_links=False
                )
                logger.info("Slack: %s note for %s posted to %s", kind, request_id, channel)
        except SlackApiError as exc:
            error = str(exc.response.get("error") or f"status {exc.response.status_code}")
            self._error(f"chat.postMessage: {error}", explain(error, channel=None, needed=exc.response.get("needed")))
            self.failed += 1
        except (aiohttp.ClientError, TimeoutError, OSError, ApprovalNotFound) as exc:
            self._error(type(exc).__name__, f"the {kind} note for {request_id} was not posted")
            self.failed += 1

    def refresh(self, request_id: UUID) -> None:
        """Bring the request's message up to date (from the event loop's thread)."""
        self._mark(request_id)

    def _mark(self, request_id: UUID) -> None:
        self._dirty.add(request_id)
        if self._task_group is not None and request_id not in self._running:
            self._running.add(request_id)
            self._task_group.start_soon(self._worker, request_id)

    def start(self, task_group: Spawner) -> None:
        """Start syncing: what was published before now, and every pending request that has no message yet."""
        if self._task_group is not None:
            raise RuntimeError("SlackNotifier.start() was already called")
        self._task_group = task_group
        self._loop_thread = threading.get_ident()
        self._token = anyio.lowlevel.current_token()
        for request_id in list(self._dirty):
            self._mark(request_id)
        task_group.start_soon(self._catch_up)

    async def _catch_up(self) -> None:
        try:
            unposted = await self._records.unposted()
        except Exception:  # a background job's top-level handler: log it; new requests still get posted
            logger.exception("Slack: cannot list the pending requests that have no message yet")
            return
        for request_id in unposted:
            self._mark(request_id)

    async def close(self) -> None:
        """Let calls in flight finish for up to `close_timeout` seconds (retries stop); what is left is logged.

        Nothing is lost: the next start posts every pending request that has no message yet.
        """
        self._stopping.set()
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._close_timeout):
            while self._running:
                self._idle = anyio.Event()
                await self._idle.wait()
        if self._running:
            logger.warning("Slack: %d message(s) not brought up to date at shutdown", len(self._running))

    async def _worker(self, request_id: UUID) -> None:
        try:
            while request_id in self._dirty:
                self._dirty.discard(request_id)
                try:
                    await self._sync(request_id)
                except Exception:  # the worker's top-level handler: one bad request must not stop the others
                    logger.exception("Slack: updating the message of %s failed unexpectedly", request_id)
                    self.failed += 1
        finally:
            self._running.discard(request_id)
            if not self._running and self._idle is not None:
                self._idle.set()

    async def _sync(self, request_id: UUID) -> None:
        attempt = 0
        repost = False
        while True:
            try:
                view, posted = await self._records.load(request_id)
            except ApprovalNotFound:
                logger.error("Slack: request %s is gone; no message to show", request_id)
                return
            posted = None if repost else self._where.get(request_id) or posted
            message = request_message(Card.from_view(view, self._mentions))
            channel = (posted or {}).get("channel") or view.get("channel") or self._channel
            if not channel:
                self._error("no channel", "set [slack] channel, or approval.channel in the rule")
                self.failed += 1
                return
            if not await self._gate():
                return
            try:
                if posted is None:
                    response = await self._client.chat_postMessage(
                        channel=channel, text=message.text, blocks=message.blocks, unfurl_links=False
                    )
                    where = {"channel": str(response["channel"]), "ts": str(response["ts"])}
                    self._where[request_id] = where
                    self.posted += 1
                    logger.info("Slack: posted %s to %s (%s)", request_id, channel, where["ts"])
                    await self._records.save(request_id, where)
                else:
                    await self._client.chat_update(
                        channel=posted["channel"], ts=posted["ts"], text=message.text, blocks=message.blocks
                    )
                    self.updated += 1
                    logger.info("Slack: updated %s (%s)", request_id, view["status"])
                return
            except SlackApiError as exc:
                error = str(exc.response.get("error") or f"status {exc.response.status_code}")
                needed = exc.response.get("needed")
                method = "chat.postMessage" if posted is None else "chat.update"
                self._error(f"{method}: {error}", explain(error, channel=channel, needed=needed))
                if exc.response.status_code == 429:
                    self._hold(exc.response.headers.get("Retry-After"))
                    delay = 0.0
                elif error == "message_not_found" and posted is not None:
                    repost, delay = True, 0.0  # someone deleted the message: post it again
                else:
                    attempt += 1
                    delay = self._backoff.delay(attempt)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                attempt += 1
                delay = self._backoff.delay(attempt)
                self._error(type(exc).__name__, "cannot reach Slack")
            if view["status"] != "pending" and attempt >= self._final_attempts:
                # A pending request keeps trying (someone must see it); a finished one gives up in the end.
                logger.error("Slack: giving up on the message of %s after %d attempts", request_id, attempt)
                self.failed += 1
                return
            self.retries += 1
            logger.warning(
                "Slack: message of %s not synced (attempt %d); retrying in %.1f s", request_id, attempt, delay
            )
            if not await self._pause(delay):
                logger.warning("Slack: stopping; the message of %s is not up to date", request_id)
                return

    def _hold(self, header: str | None) -> None:
        """Hold every call for as long as Slack's `Retry-After` asks (up to five longest backoffs)."""
        asked = retry_after(header, time.time())
        seconds = self._backoff.first if asked is None else min(asked, self._backoff.most * 5)
        self._not_before = max(self._not_before, self._clock() + seconds)

    async def _gate(self) -> bool:
        return await self._pause(self._not_before - self._clock())

    async def _pause(self, seconds: float) -> bool:
        """Wait `seconds` unless signoff is stopping first; whether to go on."""
        if seconds > 0:
            with anyio.move_on_after(seconds):
                await self._stopping.wait()
        return not self._stopping.is_set()

    def _error(self, what: str, why: str) -> None:
        self.last_error = f"{what}: {why}"
        self.last_error_at = datetime.now(UTC).isoformat(timespec="seconds")
        logger.error("Slack: %s", self.last_error)
