"""MCP-native waiting: a call that needs approval becomes a task (the `io.modelcontextprotocol/tasks` extension).

A 2026-07-28 client that declares the extension in a request's `_meta` is answered at once with a task handle
instead of being held: the task is the approval request (its id is the task's id), which is durable and already
bound to the server, tool, argument digest, caller, policy version and deadline. `tasks/get` reads the row: pending
is `working`; approved is claimed for this poll (one poll, on one replica, runs it: the claim is a compare-and-set),
judged afresh under the policy in force, run upstream once, and its result stored with its outcome, so every later
poll (here, on another replica, after a restart) reads the same result; a refusal (rejected, expired, withdrawn) is a
`completed` task whose result is the refusal a held call gets (`isError`). `tasks/cancel` withdraws the request.

A task is only its owner's: a `tasks/get` or `tasks/cancel` from another agent, or on another server's path, is
treated as naming no task of signoff's and passes to the upstream (whose own tasks it may name), exactly as an
unknown id does, so nobody learns of another's task.
"""

import json
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from mcp_types import CLIENT_CAPABILITIES_META_KEY

from approvals import service
from approvals.models import ApprovalRequest, ApprovalStatus
from integrations.gateway.edited import edit_of
from integrations.gateway.forwarding import Outbound, send_call
from integrations.gateway.holding import Holding
from integrations.gateway.refusals import approval_outcome, for_revision, upstream_failure
from integrations.gateway.upstream import FORWARDED_REQUEST_HEADERS, Upstream
from integrations.gateway.wire import Message
from integrations.telemetry import Telemetry
from policies import Policy

__all__ = ["EXTENSION", "TASK_CANCELLED", "TaskCall", "TaskDesk", "declares_tasks", "with_extension"]

EXTENSION = "io.modelcontextprotocol/tasks"
POLL_INTERVAL_MS = 2000
TASK_CANCELLED = "the agent cancelled the task"
_USED = (ApprovalStatus.EXECUTED, ApprovalStatus.FAILED)


def declares_tasks(message: Message) -> bool:
    """Whether a request's `_meta` declares the tasks extension among the client's capabilities (per request)."""
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    capabilities = meta.get(CLIENT_CAPABILITIES_META_KEY) if isinstance(meta, dict) else None
    extensions = capabilities.get("extensions") if isinstance(capabilities, dict) else None
    return isinstance(extensions, dict) and EXTENSION in extensions


def with_extension(message: Message) -> Message | None:
    """A `server/discover` response with the tasks extension added to the server's `capabilities.extensions`."""
    result = message.get("result")
    if not isinstance(result, dict):
        return None
    found = result.get("capabilities")
    capabilities: dict[str, Any] = found if isinstance(found, dict) else {}
    found = capabilities.get("extensions")
    extensions: dict[str, Any] = found if isinstance(found, dict) else {}
    capabilities = {**capabilities, "extensions": {**extensions, EXTENSION: {}}}
    return {**message, "result": {**result, "capabilities": capabilities}}


def _stamp(moment: datetime | None) -> str | None:
    return None if moment is None else service.as_utc(moment).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class TaskCall:
    """A `tasks/get` or `tasks/cancel` as the gateway received it: who asks, on which server, in which revision."""

    server: str
    identity: str
    upstream: Upstream
    policy: Policy  # the caller's policy in force now: an approved call is judged by it again before it runs
    headers: Mapping[str, str]
    meta: Mapping[str, Any]  # the request's `_meta`: the approved call is sent upstream with it
    version: str


class TaskDesk:
    """The tasks of this gateway's approval requests: create the handle, answer polls, run, cancel."""

    def __init__(
        self, holding: Holding, clock: Callable[[], float] = time.time, telemetry: Telemetry | None = None
    ) -> None:
        self.holding = holding
        self.telemetry = telemetry
        self.engine = holding.engine
        self.clock = clock

    async def owned(self, call: TaskCall, task_id: Any) -> ApprovalRequest | None:
        """The request `task_id` names, if it is the caller's on this server; None for anything else."""
        try:
            request_id = UUID(task_id) if isinstance(task_id, str) else None
        except ValueError:
            request_id = None
        request = None if request_id is None else await self.engine.task(request_id)
        if request is None or request.identity != call.identity or request.server != call.server:
            return None
        return request

    def _task(self, request: ApprovalRequest, status: str, message: str | None) -> dict[str, Any]:
        created = service.as_utc(request.requested_at)
        updated = request.finished_at or request.claimed_at or request.responded_at or request.requested_at
        keep = service.as_utc(request.deadline) + self.engine.remember - created
        task: dict[str, Any] = {
            "taskId": str(request.id),
            "status": status,
            "createdAt": _stamp(created),
            "lastUpdatedAt": _stamp(updated),
            "ttlMs": max(0, int(keep.total_seconds() * 1000)),
            "pollIntervalMs": POLL_INTERVAL_MS,
        }
        if message is not None:
            task["statusMessage"] = message
        return task

    def _waiting(self, request: ApprovalRequest) -> str:
        approvers = ", ".join(json.loads(request.approvers)) or "any approver"
        return (
            f'waiting for approval by {approvers} of this call to "{request.tool}" ({request.reason}): '
            f"{self.engine.link(request.id)}; it expires at {_stamp(request.deadline)}"
        )

    async def created(self, request_id: UUID, version: str) -> Message:
        """The `CreateTaskResult` for a call just recorded as `request_id` (committed: a poll finds it)."""
        request = await self._read(request_id)  # just written, and requests are never deleted
        if request.status == ApprovalStatus.PENDING:  # the agent polls its task until then: an approval runs at once
            seconds = (service.as_utc(request.deadline) - self.engine.now()).total_seconds()
            await self.engine.hold(request_id, max(0.0, seconds))
        # Seeded with where the request stands: usually working, but a repeat of a call refused within the remember
        # window joins that refusal, and its task is completed from the start.
        seed = {k: v for k, v in self._answer(version, request).items() if k not in ("result", "error")}
        return {**seed, "resultType": "task"}

    async def get(self, call: TaskCall, request: ApprovalRequest) -> Message:
        """The `tasks/get` result for the caller's own `request`: run it first if it was approved and not yet run."""
        if request.status == ApprovalStatus.PENDING and service.as_utc(request.deadline) <= self.engine.now():
            await self.engine.expire_overdue()
            request = await self._read(request.id)
        if request.status == ApprovalStatus.APPROVED:
            if await self.engine.recheck_before_use(request, call.policy, self.clock()) is None:
                standing = await self.engine.standing(request.id)
                if standing.claimed:
                    await self._run(call, request, standing)
            request = await self._read(request.id)
        return self._answer(call.version, request)

    async def cancel(self, request: ApprovalRequest) -> None:
        """Withdraw the caller's request (pending, or approved and not yet run); a finished one stays as it is."""
        await self.engine.withdraw(request.id, TASK_CANCELLED, approved_too=True)

    async def _read(self, request_id: UUID) -> ApprovalRequest:
        return await self.engine.store.run(service.get_request, request_id)

    def _answer(self, version: str, request: ApprovalRequest) -> Message:
        status = request.status
        if request.task_result is not None:
            stored = json.loads(request.task_result)
            if "error" in stored:
                return for_revision({**self._task(request, "failed", None), "error": stored["error"]}, version)
            return for_revision({**self._task(request, "completed", None), "result": stored["result"]}, version)
        if status == ApprovalStatus.PENDING:
            return for_revision(self._task(request, "working", self._waiting(request)), version)
        if status in (ApprovalStatus.APPROVED, ApprovalStatus.EXECUTING):
            running = f'approved by {request.responded_by}; the call to "{request.tool}" is running'
            return for_revision(self._task(request, "working", running), version)
        if status == ApprovalStatus.CANCELLED and request.comment == TASK_CANCELLED:
            return for_revision(self._task(request, "cancelled", TASK_CANCELLED), version)
        # Rejected, expired, withdrawn, or run by a held repeat of the call: the refusal a held call reads.
        refused = approval_outcome(self.engine.view(request), self.engine.link(request.id), used=status in _USED)
        completed = {**self._task(request, "completed", None), "result": for_revision(refused, version)}
        return for_revision(completed, version)

    async def _run(self, call: TaskCall, request: ApprovalRequest, standing: service.Standing) -> None:
        """Send the approved call upstream (as edited, if it was) and store its result with its outcome."""
        started = time.perf_counter()
        meta = dict(call.meta)
        capabilities = meta.get(CLIENT_CAPABILITIES_META_KEY)
        if isinstance(capabilities, dict) and isinstance(capabilities.get("extensions"), dict):
            # The upstream is asked for the call's result, not for a task of its own.
            extensions = {k: v for k, v in capabilities["extensions"].items() if k != EXTENSION}
            meta[CLIENT_CAPABILITIES_META_KEY] = {**capabilities, "extensions": extensions}
        params = {"name": request.tool, "arguments": json.loads(request.arguments), "_meta": meta}
        message = {"jsonrpc": "2.0", "id": f"signoff-task-{request.id}", "method": "tools/call", "params": params}
        headers = {k: v for k, v in call.headers.items() if k in FORWARDED_REQUEST_HEADERS and k != "mcp-session-id"}
        headers |= {"mcp-method": "tools/call", "mcp-name": request.tool}
        body = json.dumps(message, separators=(",", ":")).encode()
        outbound = Outbound(call.server, request.tool, call.upstream, body, headers, call.identity, message)
        edit = edit_of(outbound, standing)
        if edit is not None:
            outbound = edit.outbound
        seen: list[tuple[str, str]] = []
        answers: list[Message] = []

        def observe(response: Message) -> Message | None:
            noted = edit.note(response) if edit is not None else None
            answers.append(noted or response)
            return noted

        reply = await send_call(
            outbound, lambda outcome, detail: seen.append((outcome, detail)), observe, telemetry=self.telemetry
        )
        try:
            if reply.stream is not None:
                async for _chunk in reply.stream:
                    pass
        finally:
            await reply.close()
        if not answers:  # signoff's own answer: the upstream failed or could not be reached
            with suppress(ValueError):
                answers.append(json.loads(reply.body))
        answer = answers[-1] if answers else {}
        if isinstance(answer.get("error"), dict):
            stored: dict[str, Any] = {"error": answer["error"]}
        elif isinstance(answer.get("result"), dict):
            stored = {"result": answer["result"]}
        else:
            failure = upstream_failure(call.server, request.tool, f"HTTP {reply.status} without a JSON-RPC response")
            stored = {"result": for_revision(failure, call.version)}
        outcome, detail = seen[0] if seen else ("unknown", "the upstream gave no answer")
        latency_ms = (time.perf_counter() - started) * 1000
        result = json.dumps(stored, separators=(",", ":"))
        await self.engine.finish(request.id, outcome == "ok", outcome, latency_ms, detail, task_result=result)
