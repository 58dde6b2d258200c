"""The approval lifecycle: request (or join), decide, claim, finish, expire, withdraw; grants beside it.

Every edge that takes part in an approval calls this one object: the gateway's holding of a call, the API, the web
page, Slack, the scheduler. Each step runs one domain function in the database (the row is the truth), then rings
the bell for the calls held on that request (`DecisionWaiter`), tells the other replicas (`Broadcaster`: their
held calls wake at once; their poll of decisions is the fallback) and tells the notifier (webhooks, Slack) what
happened. Nothing here knows HTTP, MCP or Slack.
"""

import logging
import os
import socket
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import anyio
from sqlmodel import Session

from approvals import binding, grants, service
from approvals.errors import AlreadyDecided
from approvals.grantbook import ActiveGrant, GrantBook
from approvals.models import ApprovalRequest, ApprovalStatus, Grant, Verdict, utcnow
from approvals.ports import Broadcaster, Notifier, Spawner, Topic
from approvals.store import Store
from approvals.waiting import DecisionWaiter
from policies import NeedsApproval, Policy

__all__ = ["CLAIMANT_HOST", "ApprovalEngine", "Outcome"]

logger = logging.getLogger(__name__)

POLL_INTERVAL = 2.0
DECISION_LOOKBACK = 100  # decision rows the poll reads again each time (see poll_decisions)
CLAIMANT_HOST = socket.gethostname().replace(":", "_")[:100]
GRANT_REFRESH = 5.0  # how soon a grant given or revoked on another replica takes effect here
# While the bus between replicas is connected it brings other replicas' decisions and grants at once, and the polls
# are only a safety net (for a message lost at a crash); the moment it is lost they poll now and at the pace above.
POLL_WHILE_TOLD = 30.0
Outcome = tuple[dict[str, Any], ApprovalRequest | None]  # a request's public view, and the last run of its call


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class ApprovalEngine:
    """The approval requests and grants of this gateway, on `store`; see the module docstring.

    `remember`: how long a finished request still answers a repeat of its call. `lease`: longer than any approved
    call may run; one claimed and executing for longer was left behind by a process that stopped.
    """

    def __init__(
        self,
        store: Store,
        waiter: DecisionWaiter,
        notifier: Notifier,
        *,
        base_url: str,
        remember: timedelta = timedelta(minutes=10),
        lease: timedelta = timedelta(minutes=10),
        now: Callable[[], datetime] = utcnow,
        broadcast: Broadcaster | None = None,
    ) -> None:
        self.store = store
        self.broadcast = broadcast
        self.waiter = waiter
        self.notifier = notifier
        self.base_url = base_url
        self.remember = remember
        self.lease = lease
        self.now = now
        self.claimant = f"{CLAIMANT_HOST}:{os.getpid()}:{uuid4().hex[:12]}"
        self.grants = GrantBook()
        self._spawner: Spawner | None = None
        self._seen_decision: int | None = None  # the newest decision row the poll has looked at
        self._told = False  # whether the bus between replicas is connected (see `told`)
        self._poll_now = {"approvals.poll": anyio.Event(), "approvals.grants": anyio.Event()}
        # Told when an approval must be used by (the scheduler's expiry job); set by the composition root.
        self.schedule_expiry: Callable[[datetime], None] = lambda _at: None

    def link(self, request_id: UUID | str) -> str:
        return f"{self.base_url}/approvals/{request_id}"

    def view(self, request: ApprovalRequest) -> dict[str, Any]:
        return {**service.public_view(request, now=self.now()), "url": self.link(request.id)}

    def _publish(self, event: str, request: ApprovalRequest) -> None:
        self.notifier.publish(event, self.view(request))

    def _ring(self, request_id: UUID) -> None:
        """Wake the calls held on a request that just settled, here and (told after the commit) on every replica."""
        self.waiter.notify(request_id)
        if self.broadcast is not None:
            self.broadcast.send(Topic.REQUEST, str(request_id))

    def _grants_changed(self) -> None:
        if self.broadcast is not None:
            self.broadcast.send(Topic.GRANTS, "")

    async def _settled(self, event: str, request_id: UUID) -> None:
        """Wake the calls held on a request that just ended, then announce it."""
        self._ring(request_id)
        self._publish(event, await self.store.run(service.get_request, request_id))

    # -- running -----------------------------------------------------------------------------------

    def start(self, spawner: Spawner) -> None:
        """Start the decision poll and the grant refresh (other replicas' decisions and grants reach here so)."""
        self._spawner = spawner
        spawner.start_soon(self._poll_decisions, name="approvals.poll")
        spawner.start_soon(self._refresh_grants, name="approvals.grants")

    async def poll_decisions(self) -> None:
        """Ring for the requests voted on since the last look; a decision committed by another replica rings no
        bell here otherwise. A held call also wakes at its deadline, so another replica's expiry needs no poll."""
        seen = self._seen_decision
        # Rows a little older than the newest seen are read again: PostgreSQL may commit a lower id after a
        # higher one was seen. A request rung twice only reads its row once more.
        since = None if seen is None else seen - DECISION_LOOKBACK
        newest, voted = await self.store.run(service.decided_since, since)
        self._seen_decision = newest if seen is None else max(seen, newest)
        for request_id in voted:
            self.waiter.notify(request_id)

    def told(self, connected: bool) -> None:
        """The bus between replicas connected (other replicas' decisions and grants ring here at once, so the polls
        slow down) or was lost (they poll now, and at their usual pace until it is back)."""
        self._told = connected
        for event in self._poll_now.values():
            event.set()

    async def _pause(self, loop: str, interval: float) -> None:
        with anyio.move_on_after(POLL_WHILE_TOLD if self._told else interval):
            await self._poll_now[loop].wait()
        self._poll_now[loop] = anyio.Event()

    async def _poll_decisions(self) -> None:
        while True:
            try:
                await self.poll_decisions()
            except Exception:  # a background loop's top-level handler: log, keep polling
                logger.exception("Polling approval decisions failed")
            await self._pause("approvals.poll", POLL_INTERVAL)

    # -- a held call's request -------------------------------------------------------------------------

    async def request(self, pending: service.CallForApproval) -> tuple[UUID, datetime | None]:
        """Record the request for a call, or join the open one for the same call; its id and, if new, when the
        scheduler must next look at it (its first escalation or reminder, else its deadline)."""
        request, created = await self.store.run(service.request_approval, pending, self.now(), self.remember)
        if not created:
            if request.status in binding.OPEN and request.policy_version != pending.policy_version:
                asked = NeedsApproval(pending.rule, pending.reason, pending.spec, pending.grant_max)
                if await self.store.run(binding.recheck, request.id, asked, pending.policy_version, self.now()):
                    await self._settled("approval.cancelled", request.id)
            return request.id, None
        self._publish("approval.requested", request)
        due = service.as_utc(request.deadline)
        return request.id, min(due, service.as_utc(request.notice_at)) if request.notice_at else due

    async def standing(self, request_id: UUID) -> service.Standing:
        """Where a request stands; an approved one is claimed for this process in the same transaction."""
        standing = await self.store.run(service.standing, request_id, self.claimant, self.now())
        if standing.expired_now:  # approved, but unused past its `use_within`: expired by this look
            await self._settled("approval.expired", request_id)
        return standing

    async def hold(self, request_id: UUID, seconds: float) -> datetime:
        """A call is held open on the request for up to `seconds`: recorded, so a decision can tell whether an agent
        is still waiting (it runs now) or was told to call again. Returns until when, for `let_go`."""
        until = self.now() + timedelta(seconds=seconds)
        await self.store.run(service.hold, request_id, until)
        return until

    async def let_go(self, request_id: UUID, until: datetime) -> None:
        """The hold `hold` recorded ended early or answered "pending": no call waits on the request (unless another
        hold extended it)."""
        await self.store.run(service.let_go, request_id, until, self.now())

    async def outcome(self, request_id: UUID) -> Outcome:
        """A request as the API shows it and, while it waits, the last run of the same call (its repeat may be
        asking about that one)."""
        now = self.now()

        def read(session: Session) -> tuple[ApprovalRequest, ApprovalRequest | None]:
            request = service.get_request(session, request_id)
            waiting = request.status in (ApprovalStatus.PENDING, ApprovalStatus.APPROVED)
            return request, service.last_run(session, request, now, self.remember) if waiting else None

        request, earlier = await self.store.run(read)
        return self.view(request), earlier

    async def finish(
        self,
        request_id: UUID,
        ok: bool,
        outcome: str,
        latency_ms: float,
        detail: str = "",
        task_result: str | None = None,
    ) -> None:
        """Record what an approved call did (and, for a task, its result); insisted on, because a request left
        `executing` could never run again."""
        request = await self.store.insist(
            f"Recording the outcome of approval {request_id}",
            service.finish_execution,
            request_id,
            ok,
            outcome,
            latency_ms,
            self.now(),
            detail,
            task_result,
        )
        if request is not None:
            self._publish(f"approval.{request.status}", request)

    async def rebind(self, policy_for: binding.PolicyFor, clock: float) -> list[UUID]:
        """Withdraw every open request the policy now in force no longer stands behind (after a reload, at start)."""
        withdrawn = await self.store.run(binding.rebind, policy_for, self.now(), clock)
        for request_id in withdrawn:
            logger.info("Approval %s withdrawn: the policy changed", request_id)
            await self._settled("approval.cancelled", request_id)
        return withdrawn

    async def task(self, request_id: UUID) -> ApprovalRequest | None:
        """The request an MCP task stands for, whole (None: no such request); read on every `tasks/get`."""
        return await self.store.run(lambda session: session.get(ApprovalRequest, request_id))

    async def recheck_before_use(self, request: ApprovalRequest, policy: Policy, clock: float) -> str | None:
        """Judge an approved request's call afresh under `policy` just before it runs; withdraw it (policy_changed)
        if the policy no longer stands behind it. Why it was withdrawn, or None: it may run."""
        why = binding.judged(request, policy, clock)
        if why is None:
            return None

        def withdraw(session: Session) -> bool:
            won = binding.withdraw_for_policy(session, request, self.now(), why)
            session.commit()
            return won

        if await self.store.run(withdraw):
            await self._settled("approval.cancelled", request.id)
        return why

    async def withdraw(
        self, request_id: UUID, why: str = "the agent cancelled the call", *, approved_too: bool = False
    ) -> bool:
        withdrawn = await self.store.run(service.cancel, request_id, self.now(), why, approved_too)
        if withdrawn:
            await self._settled("approval.cancelled", request_id)
        return withdrawn

    # -- decisions from the API, the web page, Slack -------------------------------------------------

    async def decide(
        self,
        request_id: UUID,
        approver: service.Approver,
        verdict: Verdict,
        comment: str,
        channel: str,
        grant_seconds: float | None = None,
        arguments: Mapping[str, Any] | None = None,
    ) -> service.VoteResult:
        try:
            result = await self.store.run(
                service.decide, request_id, approver, verdict, comment, channel, self.now(), grant_seconds, arguments
            )
        except AlreadyDecided as exc:
            if exc.expired_now:  # the decision came after the deadline and expired the request itself
                await self._settled("approval.expired", request_id)
            raise
        if result.grant is not None:
            self.grants.add(result.grant)
            self._grants_changed()
        if result.settled:
            if result.request.use_by is not None:
                self.schedule_expiry(service.as_utc(result.request.use_by))
            self._ring(request_id)
            self._publish(f"approval.{result.request.status}", result.request)
        else:
            self._publish("approval.voted", result.request)
        return result

    # -- expiry ------------------------------------------------------------------------------------

    async def next_deadline(self) -> datetime | None:
        return await self.store.run(service.next_deadline)

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
        resolved = await self.store.run(service.resolve_abandoned, self.now(), self.lease, self.left_behind)
        for request_id in resolved:
            logger.warning("Approval %s was left executing by a stopped gateway: failed, result unknown", request_id)
            await self._settled("approval.failed", request_id)
        return resolved

    async def notify_due(self) -> list[service.Notice]:
        """Announce the escalations (`approval.escalated`) and reminders (`approval.reminded`) that came due, each
        once; the event's `notice` says to whom (`approvers`) and, for an escalation, where (`channel`)."""
        notices = await self.store.run(service.notify_due, self.now())
        for notice in notices:
            request = await self.store.run(service.get_request, notice.request_id)
            view = self.view(request)
            if notice.escalation is None:
                self.notifier.publish("approval.reminded", {**view, "notice": {"approvers": view["approvers"]}})
                continue
            escalation = view["escalate"][notice.escalation]
            told = {"approvers": escalation["approvers"], "channel": escalation["channel"], "at": escalation["at"]}
            self.notifier.publish("approval.escalated", {**view, "notice": told})
        return notices

    async def expire_overdue(self) -> list[UUID]:
        await self.resolve_abandoned()
        expired = await self.store.run(service.expire_overdue, self.now())
        for request_id in expired:
            await self._settled("approval.expired", request_id)
        await self.notify_due()
        for grant_id in await self.store.run(grants.expire_overdue_grants, self.now()):
            self.grants.remove(grant_id)
        return expired

    # -- grants ----------------------------------------------------------------------------------------

    async def load_grants(self) -> None:
        """Hold every active grant (at start; the refresh loop keeps the book in step with other replicas)."""
        version = self.grants.version
        active = await self.store.run(grants.active_grants, self.now())
        if self.grants.version == version:  # a grant made or revoked here meanwhile: the next refresh sees it
            self.grants.replace(active)

    async def _refresh_grants(self) -> None:
        while True:
            await self._pause("approvals.grants", GRANT_REFRESH)
            try:
                await self.load_grants()
            except Exception:  # a background loop's top-level handler: log, keep the book, try again
                logger.exception("Reloading grants failed")

    def find_grant(self, server: str, tool: str, identity: str) -> ActiveGrant | None:
        """The grant that lets this agent's call to this tool skip approval now; one dict lookup, no database."""
        grant, expired = self.grants.find((server, tool, identity), self.now())
        for grant_id in expired:  # stopped already; record the expiry once, off the call's path
            if self._spawner is not None:
                self._spawner.start_soon(self._record_expiry, grant_id)
        return grant

    async def _record_expiry(self, grant_id: UUID) -> None:
        try:
            await self.store.run(grants.expire_grant, grant_id, self.now())
        except Exception:  # a background task's top-level handler: the periodic sweep records it instead
            logger.exception("Recording the expiry of grant %s failed", grant_id)

    async def revoke_grant(self, grant_id: UUID, by: str, reason: str, channel: str) -> Grant:
        grant = await self.store.run(grants.revoke_grant, grant_id, by, reason, channel, self.now())
        self.grants.remove(grant_id)
        self._grants_changed()
        return grant
