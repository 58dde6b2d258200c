"""Holding a tool call for approval: record it, announce it, wait for people, then run it once or refuse.

The request row is the truth and the held call only follows it: a call that outlives `approval_hold`
answers "pending", its repeat (same agent, server, tool and arguments) picks up the outcome, and an
approved request runs upstream exactly once, for whichever caller claims it first.

Thousands of calls may be held at once, so a held call keeps only its request's id and reads the row when
it wakes (one trip to the database, which also claims the execution), and the row is loaded whole only to
answer a call that will not run.
"""

import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID, uuid4

import anyio
from sqlalchemy.engine import Engine
from sqlmodel import Session

from approvals import grants, service
from approvals.errors import AlreadyDecided
from approvals.models import ApprovalRequest, ApprovalStatus, Grant, utcnow
from approvals.ports import Notifier
from approvals.waiting import DecisionWaiter
from integrations.database import serialised, transaction_slots
from integrations.gateway.grants import ActiveGrant, GrantBook
from integrations.gateway.refusals import approval_outcome, for_revision
from integrations.gateway.upstream import Reply, json_reply
from integrations.gateway.wire import sse_event
from integrations.supervision import Spawner

logger = logging.getLogger(__name__)

T = TypeVar("T")
PROGRESS_INTERVAL = 10.0
POLL_INTERVAL = 2.0
DECISION_LOOKBACK = 100  # decision rows the poll reads again each time (see poll_decisions)
CLAIMANT_HOST = socket.gethostname().replace(":", "_")[:100]
GRANT_REFRESH = 5.0  # how soon a grant given or revoked on another replica takes effect here
Message = dict[str, Any]
Pending = tuple[service.Standing, int]  # a request still pending, and the waiter's ring count when it was read
Execute = Callable[[], Awaitable[Reply]]


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@dataclass(frozen=True, slots=True)
class Settled:
    """How a hold ended: run the call (`execute`), or answer with the request's state (`used`: run already)."""

    status: str
    execute: bool = False
    used: bool = False


class ApprovalDesk:
    """The gateway's side of approvals: request, hold, wake, execute once, expire."""

    def __init__(
        self,
        engine: Engine,
        waiter: DecisionWaiter,
        notifier: Notifier,
        *,
        hold: float,
        base_url: str,
        remember: timedelta = timedelta(minutes=10),
        now: Callable[[], datetime] = utcnow,
        schedule_expiry: Callable[[datetime], None] = lambda _at: None,
        progress_interval: float | None = None,
        lease: timedelta = timedelta(minutes=10),
    ) -> None:
        self.engine = engine
        self.waiter = waiter
        self.notifier = notifier
        self.hold = hold
        self.base_url = base_url
        self.remember = remember
        self.now = now
        self.schedule_expiry = schedule_expiry
        self.lease = lease  # longer than any approved call may run: one executing longer was left behind
        self.claimant = f"{CLAIMANT_HOST}:{os.getpid()}:{uuid4().hex[:12]}"
        # Often enough that a client resetting its timeout on progress never gives up, at most every 10 s.
        self.progress_interval = progress_interval or min(PROGRESS_INTERVAL, max(0.5, hold / 5))
        self._held: dict[tuple[str, Any], UUID | None] = {}
        self._cancelled_early: set[tuple[str, Any]] = set()
        self._task_group: Spawner | None = None
        self._seen_decision: int | None = None  # the newest decision row the poll has looked at
        # Few worker threads, reused: each thread that touches the database grows memory of its own.
        self._slots = anyio.CapacityLimiter(transaction_slots(engine))
        self.grants = GrantBook()

    def link(self, request_id: UUID | str) -> str:
        return f"{self.base_url}/approvals/{request_id}"

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one service function in a worker thread with its own session."""

        def run() -> T:
            with serialised(self.engine), Session(self.engine, expire_on_commit=False) as session:
                return fn(session, *args)

        return await anyio.to_thread.run_sync(run, limiter=self._slots)

    def view(self, request: ApprovalRequest) -> dict[str, Any]:
        return {**service.public_view(request), "url": self.link(request.id)}

    def publish(self, event: str, request: ApprovalRequest) -> None:
        self.notifier.publish(event, self.view(request))

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, task_group: Spawner) -> None:
        self._task_group = task_group
        task_group.start_soon(self._poll_decisions)
        task_group.start_soon(self._refresh_grants)

    async def poll_decisions(self) -> None:
        """Ring for the requests voted on since the last look; a decision committed by another replica rings no
        bell here otherwise. A held call also wakes at its deadline, so another replica's expiry needs no poll."""
        seen = self._seen_decision
        # Rows a little older than the newest seen are read again: PostgreSQL may commit a lower id after a
        # higher one was seen. A request rung twice only reads its row once more.
        newest, voted = await self.db(service.decided_since, None if seen is None else seen - DECISION_LOOKBACK)
        self._seen_decision = newest if seen is None else max(seen, newest)
        for request_id in voted:
            self.waiter.notify(request_id)

    async def _poll_decisions(self) -> None:
        while True:
            try:
                await self.poll_decisions()
            except Exception:  # the scheduler-style top-level handler: log, keep polling
                logger.exception("Polling approval decisions failed")
            await anyio.sleep(POLL_INTERVAL)

    async def next_deadline(self) -> datetime | None:
        return await self.db(service.next_deadline)

    def left_behind(self, claimed_by: str | None) -> bool:
        """Whether the process that claimed an execution is gone: one of this host's that is no longer running, or
        an earlier run of this one (a container restarted with the same host name and pid); others wait out the lease.
        """
        host, _, rest = (claimed_by or "").partition(":")
        pid = rest.partition(":")[0]
        if not claimed_by or host != CLAIMANT_HOST or not pid.isdigit():
            return False
        return claimed_by != self.claimant and (int(pid) == os.getpid() or not _running(int(pid)))

    async def resolve_abandoned(self) -> list[UUID]:
        """Fail what a stopped process left executing (at start, and with every sweep); each repeat is told so."""
        resolved = await self.db(service.resolve_abandoned, self.now(), self.lease, self.left_behind)
        for request_id in resolved:
            logger.warning("Approval %s was left executing by a stopped gateway: failed, result unknown", request_id)
            self.waiter.notify(request_id)
            self.publish("approval.failed", await self.db(service.get_request, request_id))
        return resolved

    async def expire_overdue(self) -> list[UUID]:
        await self.resolve_abandoned()
        expired = await self.db(service.expire_overdue, self.now())
        for request_id in expired:
            self.waiter.notify(request_id)
            self.publish("approval.expired", await self.db(service.get_request, request_id))
        for grant_id in await self.db(grants.expire_overdue_grants, self.now()):
            self.grants.remove(grant_id)
        return expired

    # -- grants ----------------------------------------------------------------------------------------

    async def load_grants(self) -> None:
        """Hold every active grant (at start; the refresh loop keeps the book in step with other replicas)."""
        version = self.grants.version
        active = await self.db(grants.active_grants, self.now())
        if self.grants.version == version:  # a grant made or revoked here meanwhile: the next refresh sees it
            self.grants.replace(active)

    async def _refresh_grants(self) -> None:
        while True:
            await anyio.sleep(GRANT_REFRESH)
            try:
                await self.load_grants()
            except Exception:  # a background loop's top-level handler: log, keep the book, try again
                logger.exception("Reloading grants failed")

    def find_grant(self, server: str, tool: str, identity: str) -> ActiveGrant | None:
        """The grant that lets this agent's call to this tool skip approval now; one dict lookup, no database."""
        grant, expired = self.grants.find((server, tool, identity), self.now())
        for grant_id in expired:  # stopped already; record the expiry once, off the call's path
            if self._task_group is not None:
                self._task_group.start_soon(self._record_expiry, grant_id)
        return grant

    async def _record_expiry(self, grant_id: UUID) -> None:
        try:
            await self.db(grants.expire_grant, grant_id, self.now())
        except Exception:  # a background task's top-level handler: the periodic sweep records it instead
            logger.exception("Recording the expiry of grant %s failed", grant_id)

    async def revoke_grant(self, grant_id: UUID, by: str, reason: str, channel: str) -> Grant:
        grant = await self.db(grants.revoke_grant, grant_id, by, reason, channel, self.now())
        self.grants.remove(grant_id)
        return grant

    # -- decisions from the API, the CLI, Slack ------------------------------------------------------

    async def decide(
        self,
        request_id: UUID,
        approver: service.Approver,
        verdict: str,
        comment: str,
        channel: str,
        grant_seconds: float | None = None,
    ) -> service.VoteResult:
        try:
            result = await self.db(
                service.decide, request_id, approver, verdict, comment, channel, self.now(), grant_seconds
            )
        except AlreadyDecided as exc:
            if exc.expired_now:  # the decision came after the deadline and expired the request itself
                self.waiter.notify(request_id)
                self.publish("approval.expired", await self.db(service.get_request, request_id))
            raise
        if result.grant is not None:
            self.grants.add(result.grant)
        if result.settled:
            self.waiter.notify(request_id)
            self.publish(f"approval.{result.request.status}", result.request)
        else:
            self.publish("approval.voted", result.request)
        return result

    async def cancel_held(self, owner: str, downstream_id: Any) -> bool:
        """An explicit MCP cancellation of a held call withdraws its request."""
        key = (owner, downstream_id)
        if key not in self._held:
            return False
        request_id = self._held[key]
        if request_id is None:  # the request is still being recorded: withdraw it as soon as it is
            self._cancelled_early.add(key)
            return True
        return await self._withdraw(request_id)

    async def _withdraw(self, request_id: UUID) -> bool:
        withdrawn = await self.db(service.cancel, request_id, self.now(), "the agent cancelled the call")
        if withdrawn:
            self.waiter.notify(request_id)
            self.publish("approval.cancelled", await self.db(service.get_request, request_id))
        return withdrawn

    # -- the held call ----------------------------------------------------------------------------

    async def open(self, pending: service.CallForApproval, key: tuple[str, Any]) -> UUID:
        """Record (or join) the request for a held call; `key` (owner, JSON-RPC id) lets a cancellation find it.

        The key is known before the request is, so a cancellation that arrives while the row is being
        written is not lost: it withdraws the request as soon as it exists.
        """
        self._held[key] = None
        try:
            request, created = await self.db(service.request_approval, pending, self.now(), self.remember)
        except BaseException:
            self._held.pop(key, None)
            raise
        self._held[key] = request.id
        if created:
            self.schedule_expiry(service.as_utc(request.deadline))
            self.publish("approval.requested", request)
        if key in self._cancelled_early:
            self._cancelled_early.discard(key)
            await self._withdraw(request.id)
        return request.id

    async def settle(self, request_id: UUID, within: float, known: Pending | None = None) -> Settled | Pending:
        """Follow the request for up to `within` seconds; where it stands (pending) if nothing settled it by then.

        `known`: what the last call returned. Unless a bell rang anywhere since, the row is not read again, so a
        call held in slices (progress every 10 s) reads it when something happens, not at every slice.
        """
        give_up = time.monotonic() + within
        standing, rings = known if known is not None and known[1] == self.waiter.rings else await self._look(request_id)
        while True:
            status = standing.status
            if standing.claimed:
                return Settled(status, execute=True)
            if status in (ApprovalStatus.EXECUTING, ApprovalStatus.EXECUTED, ApprovalStatus.FAILED):
                return Settled(status, used=True)
            if status != ApprovalStatus.PENDING:
                return Settled(status)
            to_deadline = (standing.deadline - self.now()).total_seconds()
            if to_deadline <= 0:
                await self.expire_overdue()
            else:
                left = give_up - time.monotonic()
                if left <= 0:
                    return standing, rings
                rang = await self.waiter.wait(request_id, min(left, to_deadline + 0.05))
                if not rang and left < to_deadline:
                    return standing, rings  # the time is up and nothing happened
            standing, rings = await self._look(request_id)

    async def _look(self, request_id: UUID) -> Pending:
        rings = self.waiter.rings  # counted before the read: a ring during it makes the next call read again
        return await self.db(service.standing, request_id, self.claimant, self.now()), rings

    async def finish(self, request_id: UUID, ok: bool, outcome: str, latency_ms: float, detail: str = "") -> None:
        """Record what an approved call did; retried, because a request left `executing` could never run again."""
        for attempt in range(1, 11):
            try:
                request = await self.db(
                    service.finish_execution, request_id, ok, outcome, latency_ms, self.now(), detail
                )
            except Exception:  # a background task's top-level handler: log, retry, never end the task group
                logger.exception("Recording the outcome of approval %s failed (attempt %d)", request_id, attempt)
                await anyio.sleep(min(0.1 * 2**attempt, 10.0))
                continue
            self.publish(f"approval.{request.status}", request)
            return

    async def answer(self, settled: Settled | None, request_id: UUID, message_id: Any, version: str | None) -> Message:
        """The answer to a held call that will not run now: its request's outcome, or (`settled` None) pending;
        shaped for the client's protocol `version`."""
        now = self.now()

        def read(session: Session) -> tuple[ApprovalRequest, ApprovalRequest | None]:
            request = service.get_request(session, request_id)
            waiting = request.status in (ApprovalStatus.PENDING, ApprovalStatus.APPROVED)
            return request, service.last_run(session, request, now, self.remember) if waiting else None

        request, earlier = await self.db(read)
        view = self.view(request)
        used = settled is not None and settled.used
        if settled is None:  # the hold ended; the row may have moved on since the last look
            if view["status"] == ApprovalStatus.APPROVED:  # not run yet: the repeat the answer asks for runs it
                view["status"] = ApprovalStatus.PENDING
            used = view["status"] in (ApprovalStatus.EXECUTING, ApprovalStatus.EXECUTED, ApprovalStatus.FAILED)
        ran_before = None
        if earlier is not None and earlier.finished_at is not None:
            ran_before = {
                "approval_id": str(earlier.id),
                "status": earlier.status,
                "outcome": earlier.outcome,
                "finished_at": service.as_utc(earlier.finished_at).isoformat(),
            }
        result = approval_outcome(view, self.link(request_id), used=used, ran_before=ran_before)
        return {"jsonrpc": "2.0", "id": message_id, "result": for_revision(result, version)}

    async def hold_call(
        self,
        request_id: UUID,
        owner: str,
        message_id: Any,
        progress_token: Any,
        stream: bool,
        execute: Execute,
        version: str | None,
    ) -> Reply:
        """Hold one `tools/call` for up to `hold` seconds; answer with its outcome, or run it when approved.

        `version`: the client's `MCP-Protocol-Version`, which the answer's shape follows.
        """
        key = (owner, message_id)
        if not stream:
            try:
                held = await self.settle(request_id, self.hold)
            finally:
                self._held.pop(key, None)
            settled = held if isinstance(held, Settled) else None
            if settled is not None and settled.execute:
                return await execute()
            return json_reply(await self.answer(settled, request_id, message_id, version))
        return Reply(
            status=200,
            headers=[("content-type", "text/event-stream"), ("cache-control", "no-cache")],
            stream=self._held_events(request_id, key, message_id, progress_token, execute, version),
        )

    async def _held_events(
        self,
        request_id: UUID,
        key: tuple[str, Any],
        message_id: Any,
        token: Any,
        execute: Execute,
        version: str | None,
    ) -> AsyncIterator[bytes]:
        # Progress notifications keep clients that reset their timeout on progress waiting for the decision.
        started = time.monotonic()
        settled: Settled | None = None
        pending: Pending | None = None
        try:
            while (left := self.hold - (time.monotonic() - started)) > 0:
                held = await self.settle(request_id, min(left, self.progress_interval), pending)
                if isinstance(held, Settled):
                    settled = held
                    break
                pending = held
                waited = time.monotonic() - started
                yield sse_event(
                    {
                        "jsonrpc": "2.0",
                        "method": "notifications/progress",
                        "params": {
                            "progressToken": token,
                            "progress": round(waited, 1),
                            "message": f"waiting for approval {request_id} ({self.link(request_id)})",
                        },
                    }
                )
        finally:
            self._held.pop(key, None)
        if settled is None or not settled.execute:
            yield sse_event(await self.answer(settled, request_id, message_id, version))
            return
        reply = await execute()
        try:
            if reply.stream is not None:
                async for chunk in reply.stream:
                    yield chunk
            else:
                yield b"event: message\ndata: " + reply.body + b"\n\n"
        finally:
            await reply.close()
