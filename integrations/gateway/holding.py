"""Holding a tool call for approval: keep the call open while people decide, send progress, encode the answer.

The request row is the truth and the held call only follows it (`approvals.engine` owns the lifecycle): a call that
outlives `approval_hold` answers "pending", its repeat (same agent, server, tool and arguments) picks up the outcome,
and an approved request runs upstream exactly once, for whichever caller claims it first.

Thousands of calls may be held at once, so a held call keeps only its request's id and reads the row when
it wakes (one trip to the database, which also claims the execution), and the row is loaded whole only to
answer a call that will not run.
"""

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import anyio

from approvals import service
from approvals.engine import ApprovalEngine
from approvals.models import ApprovalStatus
from integrations.gateway.refusals import approval_outcome, for_revision
from integrations.gateway.upstream import Reply, json_reply
from integrations.gateway.wire import Message, sse_event

__all__ = ["Holding", "Settled"]

PROGRESS_INTERVAL = 10.0
Pending = tuple[service.Standing, int]  # a request still pending, and the waiter's ring count when it was read
Execute = Callable[[service.Standing | None], Awaitable[Reply]]  # given the claim: it says what an edit changed
Key = tuple[str, Any]  # who holds the call (its session, or its agent) and its JSON-RPC id


@dataclass(frozen=True, slots=True)
class Settled:
    """How a hold ended: run the call (`execute`, as `claim` says), or answer with the request's state (`used`:
    run already)."""

    status: str
    execute: bool = False
    used: bool = False
    claim: service.Standing | None = None


class Holding:
    """The gateway's held calls: open a request, wait for it up to `hold` seconds, run the call or answer.

    `schedule_expiry(deadline)` is told each new request's deadline (the scheduler's single expiry job).
    """

    def __init__(
        self,
        engine: ApprovalEngine,
        *,
        hold: float,
        schedule_expiry: Callable[[datetime], None] = lambda _at: None,
        progress_interval: float | None = None,
    ) -> None:
        self.engine = engine
        self.hold = hold
        self.schedule_expiry = schedule_expiry
        # Often enough that a client resetting its timeout on progress never gives up, at most every 10 s.
        self.progress_interval = progress_interval or min(PROGRESS_INTERVAL, max(0.5, hold / 5))
        self._held: dict[Key, UUID | None] = {}
        self._cancelled_early: set[Key] = set()
        self._abandoned: set[Key] = set()  # held calls their client cancelled: they end, and never run the call

    async def cancel_held(self, owner: str, downstream_id: Any) -> bool:
        """An explicit MCP cancellation of a held call withdraws its request, unless another held call waits on it.

        A client that gave up on a call (the SDK sends `notifications/cancelled` when its timeout passes) and
        called again has joined the same request with the repeat: the cancellation ends the call it names, not the
        question people are answering for the repeat. A disconnect withdraws nothing at all.
        """
        key = (owner, downstream_id)
        if key not in self._held:
            return False
        request_id = self._held[key]
        if request_id is None:  # the request is still being recorded: withdraw it as soon as it is
            self._cancelled_early.add(key)
            return True
        return await self._give_up(key, request_id)

    async def _give_up(self, key: Key, request_id: UUID) -> bool:
        """End the held call `key` without running it; withdraw its request if no other held call waits on it."""
        self._abandoned.add(key)
        if any(r == request_id and k not in self._abandoned for k, r in self._held.items()):
            self.engine.waiter.notify(request_id)  # the cancelled hold wakes and ends; the repeat reads on
            return True
        return await self.engine.withdraw(request_id)

    def as_task(self, key: Key) -> None:
        """The call `key` opened a request for is answered with a task instead of held: forget the key (a later
        cancellation of that JSON-RPC id names no held call; the task is cancelled with `tasks/cancel`)."""
        self._held.pop(key, None)
        self._cancelled_early.discard(key)

    async def open(self, pending: service.CallForApproval, key: Key) -> UUID:
        """Record (or join) the request for a held call; `key` (owner, JSON-RPC id) lets a cancellation find it.

        The key is known before the request is, so a cancellation that arrives while the row is being
        written is not lost: it withdraws the request as soon as it exists.
        """
        self._held[key] = None
        try:
            request_id, deadline = await self.engine.request(pending)
        except BaseException:
            self._held.pop(key, None)
            raise
        self._held[key] = request_id
        if deadline is not None:
            self.schedule_expiry(deadline)
        if key in self._cancelled_early:
            self._cancelled_early.discard(key)
            await self._give_up(key, request_id)
        return request_id

    async def settle(
        self, request_id: UUID, within: float, known: Pending | None = None, key: Key | None = None
    ) -> Settled | Pending:
        """Follow the request for up to `within` seconds; where it stands (pending) if nothing settled it by then.

        `known`: what the last call returned. Unless a bell rang anywhere since, the row is not read again, so a
        call held in slices (progress every 10 s) reads it when something happens, not at every slice. `key`: the
        held call's; once its client cancelled it, it ends as cancelled before another look could claim the call.
        """
        give_up = time.monotonic() + within
        if key in self._abandoned:
            return Settled(ApprovalStatus.CANCELLED)
        standing, rings = (
            known if known is not None and known[1] == self.engine.waiter.rings else await self._look(request_id)
        )
        while True:
            status = standing.status
            if standing.claimed:
                return Settled(status, execute=True, claim=standing)
            if status in (ApprovalStatus.EXECUTING, ApprovalStatus.EXECUTED, ApprovalStatus.FAILED):
                return Settled(status, used=True)
            if status != ApprovalStatus.PENDING:
                return Settled(status)
            to_deadline = (standing.deadline - self.engine.now()).total_seconds()
            if to_deadline <= 0:
                await self.engine.expire_overdue()
            else:
                left = give_up - time.monotonic()
                if left <= 0:
                    return standing, rings
                rang = await self.engine.waiter.wait(request_id, min(left, to_deadline + 0.05))
                if not rang and left < to_deadline:
                    return standing, rings  # the time is up and nothing happened
            if key in self._abandoned:
                return Settled(ApprovalStatus.CANCELLED)
            standing, rings = await self._look(request_id)

    async def _leave_when(self, gone: Callable[[], Awaitable[None]], key: Key, request_id: UUID) -> None:
        """Once the client is gone, end its held call at its next look: a disconnect withdraws nothing."""
        await gone()
        self._abandoned.add(key)
        self.engine.waiter.notify(request_id)

    async def _look(self, request_id: UUID) -> Pending:
        rings = self.engine.waiter.rings  # counted before the read: a ring during it makes the next call read again
        return await self.engine.standing(request_id), rings

    async def answer(self, settled: Settled | None, request_id: UUID, message_id: Any, version: str | None) -> Message:
        """The answer to a held call that will not run now: its request's outcome, or (`settled` None) pending;
        shaped for the client's protocol `version`."""
        view, earlier = await self.engine.outcome(request_id)
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
        result = approval_outcome(view, self.engine.link(request_id), used=used, ran_before=ran_before)
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
        gone: Callable[[], Awaitable[None]] | None = None,
    ) -> Reply:
        """Hold one `tools/call` for up to `hold` seconds; answer with its outcome, or run it when approved.

        `version`: the client's `MCP-Protocol-Version`, which the answer's shape follows. `gone` returns once the
        client has disconnected: the held call then stops following the request (which stays open, for the
        client's repeat to join and run), rather than run the call for nobody to read.
        """
        key = (owner, message_id)
        until = await self.engine.hold(request_id, self.hold)
        if not stream:
            try:
                async with anyio.create_task_group() as tg:
                    if gone is not None:
                        tg.start_soon(self._leave_when, gone, key, request_id)
                    held = await self.settle(request_id, self.hold, key=key)
                    tg.cancel_scope.cancel()
            finally:
                self._held.pop(key, None)
                self._abandoned.discard(key)
            settled = held if isinstance(held, Settled) else None
            if settled is not None and settled.execute:
                return await execute(settled.claim)
            await self._let_go(request_id, until)
            return json_reply(await self.answer(settled, request_id, message_id, version))
        return Reply(
            status=200,
            headers=[("content-type", "text/event-stream"), ("cache-control", "no-cache")],
            stream=self._held_events(request_id, key, message_id, progress_token, execute, version, until),
        )

    async def _let_go(self, request_id: UUID, until: datetime) -> None:
        """This hold ended without running the call; unless another held call here waits on the same request (its
        hold ends later, and recorded so), no agent is waiting on it now."""
        if not any(r == request_id for r in self._held.values()):
            await self.engine.let_go(request_id, until)

    async def _held_events(
        self,
        request_id: UUID,
        key: Key,
        message_id: Any,
        token: Any,
        execute: Execute,
        version: str | None,
        until: datetime,
    ) -> AsyncIterator[bytes]:
        # Progress notifications keep clients that reset their timeout on progress waiting for the decision.
        started = time.monotonic()
        settled: Settled | None = None
        pending: Pending | None = None
        try:
            while (left := self.hold - (time.monotonic() - started)) > 0:
                held = await self.settle(request_id, min(left, self.progress_interval), pending, key)
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
                            "message": f"waiting for approval {request_id} ({self.engine.link(request_id)})",
                        },
                    }
                )
        finally:
            self._held.pop(key, None)
            self._abandoned.discard(key)
        if settled is None or not settled.execute:
            await self._let_go(request_id, until)
            yield sse_event(await self.answer(settled, request_id, message_id, version))
            return
        reply = await execute(settled.claim)
        try:
            if reply.stream is not None:
                async for chunk in reply.stream:
                    yield chunk
            else:
                yield b"event: message\ndata: " + reply.body + b"\n\n"
        finally:
            await reply.close()
