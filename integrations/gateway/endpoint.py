"""The MCP endpoint `/mcp/{server}`: authenticate, check, apply the policy, forward, audit.

A raw ASGI app rather than the SDK's server: the gateway forwards bytes and parses only what a policy
needs (the JSON-RPC envelope, `tools/list` results, `tools/call` params), which keeps the hop close to
a bare Starlette hop, and passes everything else (resources, prompts, completions, notifications,
server-to-client requests, the GET stream) through unchanged.
"""

import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import anyio
from mcp.shared.inbound import ERROR_CODE_HTTP_STATUS
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from opentelemetry.trace import Span
from starlette.types import Receive, Scope, Send

from approvals.audit import AuditRecord, canonical_json, redacted
from approvals.grantbook import ActiveGrant
from approvals.models import AuditKind
from approvals.service import CallForApproval, Standing
from integrations.auditing import AuditWriter
from integrations.bodies import DRAIN_LIMIT, drain
from integrations.errors import UpstreamUnavailable
from integrations.gateway.deadline import Deadline
from integrations.gateway.drift import ToolWatch
from integrations.gateway.edited import edit_of
from integrations.gateway.forwarding import (
    Outbound,
    checked,
    disconnected,
    send_call,
    send_reply,
    unchanged,
    unless_gone,
)
from integrations.gateway.holding import Holding
from integrations.gateway.ownership import SessionOwners
from integrations.gateway.refusals import for_revision, refusal
from integrations.gateway.revisions import PARAM_HEADER_PREFIX, notification_version_error, version_error
from integrations.gateway.rights import Rights, unreachable
from integrations.gateway.tasks import TaskCall, TaskDesk, declares_tasks, with_extension
from integrations.gateway.upstream import FORWARDED_REQUEST_HEADERS, Reply, Upstream, UpstreamRequest, json_reply
from integrations.gateway.wire import VERSION_HEADER, Message, is_modern, rpc_error
from integrations.limiting import SharedLimits, Uncounted
from integrations.metrics import OTHER_TOOL, Metrics
from integrations.oauth import Authenticator, Refusal
from integrations.telemetry import Telemetry, ended
from policies import Allow, Caller, Decision, DeferredLimits, Deny, Hidden, NeedsApproval, Policy, RateLimited, ToolCall
from policies.drift import apply_drift, is_shadowed, shadow_outcome
from policies.evaluate import evaluate, is_hidden, rule_for
from policies.model import reason_of

logger = logging.getLogger(__name__)

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
UPSTREAM_ERROR = -32000  # implementation-defined server error: the upstream's answer was unusable or missing
MAX_TOOL_NAME = 256  # the audit log's and approval requests' tool column
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_KIND: dict[type, AuditKind] = {
    Deny: AuditKind.DENIED,
    Hidden: AuditKind.HIDDEN,
    RateLimited: AuditKind.RATE_LIMITED,
    NeedsApproval: AuditKind.APPROVAL_REQUIRED,
}


@dataclass(slots=True)
class Served:
    """One upstream as the gateway serves it: the connection, the policy in force, and agents' own policies.

    An agent with a policy of its own in `agent_policies` is judged by it alone, instead of by `policy`. A policy
    reload replaces one of them (one assignment); each request reads its policy once, when it starts.
    """

    upstream: Upstream
    policy: Policy
    agent_policies: dict[str, Policy] = field(default_factory=dict)

    def policy_for(self, agent: str) -> Policy:
        """The policy `agent`'s calls on this server are judged by: its own, if it has one, else the server's."""
        return self.agent_policies.get(agent, self.policy)


@dataclass(slots=True)
class _Exchange:
    """What the gateway knows about one POST while it handles it."""

    server: str
    served: Served
    caller: Caller
    headers: dict[str, str]
    message: Message
    policy: Policy  # the caller's policy in force when the request arrived, kept for its whole life
    version: str | None = None  # the client's 2026-07-28-era revision, once its request passed that revision's checks
    started: float = field(default_factory=time.perf_counter)
    receive: Receive | None = None  # the request's ASGI channel, to notice the client going away
    note: str = ""  # added to every audit row of the call (its limits not counted: the store was down)
    span: Span | None = None  # the call's server span, when tracing (integrations/telemetry.py)
    audited: int = 0  # the place of the call's audit row in the writer's queue: committed before the answer

    @property
    def modern(self) -> bool:
        return self.version is not None

    @property
    def identity(self) -> str:
        return self.caller.name

    def outbound(self, body: bytes, tool: str) -> "Outbound":
        return Outbound(self.server, tool, self.served.upstream, body, self.headers, self.identity, self.message)

    def held(self, body: bytes, tool: str) -> "Outbound":
        """What a call held for approval keeps while it waits: its bytes and the headers it forwards (its
        `Mcp-Param-*` headers too: a 2026-07-28 server checks them against the arguments when the call runs)."""
        headers = {
            k: v for k, v in self.headers.items() if k in FORWARDED_REQUEST_HEADERS or k.startswith(PARAM_HEADER_PREFIX)
        }
        return Outbound(self.server, tool, self.served.upstream, body, headers, self.identity, None)


@dataclass(slots=True, eq=False)
class _Held:
    """A `tools/call` held for approval, as it waits: its request, where its answer goes, what runs if approved."""

    holding: Holding
    request_id: UUID
    owner: str
    message_id: Any
    progress_token: Any
    stream: bool
    outbound: Outbound
    receive: Receive | None = None
    telemetry: Telemetry | None = None
    span: Span | None = None  # the call's server span, ended once the agent has its answer

    async def answer(self) -> Reply:
        waiting = self.telemetry.child(self.span, "approval") if self.telemetry is not None else None
        try:
            reply = await self._answer()
        except BaseException:
            ended(self.span)
            raise
        finally:
            ended(waiting, **{"signoff.approval": str(self.request_id)})
        if self.span is not None and reply.stream is not None:  # the answer is still to come, in the stream
            return replace(reply, stream=_ending(reply.stream, self.span))
        ended(self.span)
        return reply

    async def _answer(self) -> Reply:
        return await self.holding.hold_call(
            self.request_id,
            self.owner,
            self.message_id,
            self.progress_token,
            self.stream,
            self.execute,
            self.outbound.headers.get(VERSION_HEADER),
            partial(disconnected, self.receive) if self.receive is not None else None,
        )

    async def execute(self, claim: Standing | None = None) -> Reply:
        """Run the approved call (with the arguments an approver edited it to, when `claim` says so, and a note
        of it in the result); its outcome is committed before the agent reads the answer (a crash between the
        two would otherwise leave the request `executing` with the call done)."""
        started = time.perf_counter()
        seen: list[tuple[str, str]] = []
        edit = edit_of(self.outbound, claim)
        outbound, note = (self.outbound, None) if edit is None else (edit.outbound, edit.note)
        reply = await send_call(
            outbound,
            lambda outcome, detail: seen.append((outcome, detail)),
            note,
            telemetry=self.telemetry,
            parent=self.span,
        )

        async def record() -> None:
            outcome, detail = seen[0] if seen else ("unknown", "the agent went away before the answer came")
            latency_ms = (time.perf_counter() - started) * 1000
            await self.holding.engine.finish(self.request_id, outcome == "ok", outcome, latency_ms, detail)

        if reply.stream is None:
            await record()
        else:
            return replace(reply, stream=_recorded_first(reply.stream, seen, record))
        return reply


async def _recorded_first(
    stream: AsyncIterator[bytes], seen: list[tuple[str, str]], record: Callable[[], Awaitable[None]]
) -> AsyncIterator[bytes]:
    """Pass `stream` on, awaiting `record()` before the chunk that carries the call's answer (or at its end)."""
    recorded = False
    try:
        async for chunk in stream:
            if seen and not recorded:
                recorded = True
                await record()
            yield chunk
    finally:
        if not recorded:
            with anyio.CancelScope(shield=True):
                await record()


async def _ending(stream: AsyncIterator[bytes], span: Span) -> AsyncIterator[bytes]:
    """Pass `stream` on, then end `span`: a call's span covers its answer, which may come last in the stream."""
    try:
        async for chunk in stream:
            yield chunk
    finally:
        span.end()


def _decoded(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    # A field value excludes the spaces and tabs around it (RFC 9110 section 5.5); httptools keeps them, h11 does not.
    return {k.decode("latin-1").lower(): v.decode("latin-1").strip(" \t") for k, v in headers}


def _origin_allowed(origin: str, allowed: frozenset[str]) -> bool:
    if "*" in allowed or origin in allowed:
        return True
    host = urlsplit(origin).hostname or ""
    return host in ("localhost", "127.0.0.1", "::1")


class Gateway:
    """The ASGI app mounted at `/mcp/{server}`."""

    def __init__(
        self,
        *,
        servers: Mapping[str, Served],
        authenticator: Authenticator,
        owners: SessionOwners,
        audit: AuditWriter,
        limits: SharedLimits,
        allowed_origins: Iterable[str] = (),
        max_body_bytes: int = 4 * 1024 * 1024,
        body_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        holding: Holding | None = None,
        tools: ToolWatch | None = None,
        rights: Mapping[str, Rights] | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        """`agents` maps static tokens to agents' names, `rights` names to what each may do; `owners` has sessions'."""
        self.servers = dict(servers)
        # Static agent tokens and, with [auth], OAuth access tokens (integrations/oauth).
        self.authenticator = authenticator
        self._rights = dict(rights or {})
        self._owners = owners
        self._audit = audit
        self.limits = limits
        self._allowed_origins = frozenset(allowed_origins)
        self._max_body = max_body_bytes
        self._body_timeout = body_timeout
        self._clock = clock
        self.holding = holding
        self.telemetry = telemetry or Telemetry(Metrics())
        self.metrics = self.telemetry.metrics
        # MCP-native waiting (tasks.py)
        self.tasks = TaskDesk(holding, clock, self.telemetry) if holding is not None else None
        self.tools = tools
        # POSTs being decided or forwarded now, not held calls nor streams: a sequential agent's call is alone, and
        # its audit row is committed on its own task (`AuditWriter.committed`); GET streams that stay open do not
        # count, nor an answer still streaming (its row is committed when the answer's event comes).
        self._posting = 0

    # -- ASGI ------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("path_params", {}).get("server", "")
        reply = await self._handle(scope["method"], server, _decoded(scope["headers"]), receive)
        if isinstance(reply, _Held):  # awaited here, so the wait keeps only what the held call needs, no frames
            reply = await reply.answer()
        await send_reply(reply, send, receive)

    def rights_of(self, agent: str) -> Rights:
        return self._rights.get(agent) or Rights(Caller(agent))  # not configured: every server, in no group

    async def _handle(self, method: str, server: str, headers: dict[str, str], receive: Receive) -> "Reply | _Held":
        caller = await self.authenticator.authenticate(headers.get("authorization", ""), server, headers.get("host"))
        if isinstance(caller, Refusal):
            return _http_error(caller.status, caller.message, list(caller.headers))
        identity = caller.name
        rights = self.rights_of(identity)
        if caller.method == "oauth":  # an access token's groups claim adds to the config's groups
            extra = sorted(caller.groups.difference(rights.caller.groups))
            if extra:
                rights = replace(rights, caller=replace(rights.caller, groups=(*rights.caller.groups, *extra)))
        origin = headers.get("origin")
        if origin is not None and not _origin_allowed(origin, self._allowed_origins):
            return _http_error(403, f"Origin {origin!r} is not allowed")
        garbled = _garbled_header(headers)
        if garbled is not None:  # the upstream would read it: shield it from bytes no MCP header carries
            return _http_error(400, f"The {garbled} header must be printable ASCII")
        served = self.servers.get(server)
        if served is None:
            known = ", ".join(sorted(self.servers)) or "none"
            return json_reply(rpc_error(None, INVALID_REQUEST, f"Unknown server {server!r}; configured: {known}"), 404)
        if not rights.may_reach(server):  # before anything goes upstream, whatever the method
            return await self._unreachable(rights, server, method)
        session_id = headers.get("mcp-session-id")
        if session_id is not None:
            refused = await self._owners.refusal(session_id, identity, server)
            if refused is not None:
                status, code, why = refused
                return json_reply(rpc_error(None, code, why), status)
        try:
            if method == "POST":
                self._posting += 1
                try:
                    return await self._post(server, served, rights.caller, headers, receive)
                finally:
                    self._posting -= 1
            if method == "GET":
                return await served.upstream.get(UpstreamRequest(headers, identity))
            if method == "DELETE":
                reply = await served.upstream.delete(UpstreamRequest(headers, identity))
                if session_id is not None and reply.status < 300:
                    await self._owners.release(session_id)
                return reply
        except UpstreamUnavailable as exc:
            return json_reply(rpc_error(None, -32000, str(exc)), 502)
        return _http_error(
            405, f"Method {method} is not allowed; use POST, GET or DELETE", [("allow", "GET, POST, DELETE")]
        )

    async def _unreachable(self, rights: Rights, server: str, method: str) -> Reply:
        """403 for an agent asking for a server outside its `servers`, naming those it may reach; audited first."""
        self.metrics.refused(server, AuditKind.SERVER_REFUSED.value)
        error, record = unreachable(rights, server, method, self.servers)
        await self._audit.committed(self._audit.record(record))
        return json_reply(error, 403)

    async def _read_body(self, headers: Mapping[str, str], receive: Receive) -> bytes | None:
        declared = headers.get("content-length")
        if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > self._max_body:
            if int(declared) <= DRAIN_LIMIT:
                await drain(receive)  # so that the client, still sending, reads the 413 instead of a reset
            return None
        chunks, size = [], 0
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                break
            chunk = event.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                if event.get("more_body", False):
                    await drain(receive)
                return None
            chunks.append(chunk)
            if not event.get("more_body", False):
                break
        return b"".join(chunks)

    # -- POST ------------------------------------------------------------------------------------

    async def _post(
        self, server: str, served: Served, caller: Caller, headers: dict[str, str], receive: Receive
    ) -> "Reply | _Held":
        identity = caller.name
        with Deadline(self._body_timeout) as reading:  # a body that trickles must not hold a request
            body = await self._read_body(headers, receive)
        if reading.expired:
            slow = f"The request body did not arrive within {self._body_timeout:g} s: send it all at once"
            return json_reply(rpc_error(None, INVALID_REQUEST, slow), 408, [("connection", "close")])
        if body is None:
            too_large = f"Request body is larger than {self._max_body} bytes"
            return json_reply(rpc_error(None, INVALID_REQUEST, too_large), 413, [("connection", "close")])
        try:
            message = json.loads(body)
        except ValueError as exc:
            return json_reply(rpc_error(None, PARSE_ERROR, f"Parse error: body is not valid JSON ({exc})"), 400)
        except RecursionError:
            return json_reply(rpc_error(None, PARSE_ERROR, "Parse error: JSON nested too deeply"), 400)
        problem = _envelope_problem(message)
        if problem is not None:
            request_id = message.get("id") if isinstance(message, dict) and _valid_id(message.get("id")) else None
            return json_reply(rpc_error(request_id, INVALID_REQUEST, problem), 400)
        version = headers.get(VERSION_HEADER)
        policy = served.policy_for(identity)
        exchange = _Exchange(server, served, caller, headers, message, policy, receive=receive)
        if is_modern(version) and "method" in message:
            # Judged by what the upstream serves, as a direct client would be; signoff's own list stands in for
            # an upstream that cannot say (unreachable, or of the handshake revisions only: it answers for itself).
            supported = await served.upstream.modern_versions() or MODERN_PROTOCOL_VERSIONS
            if "id" in message:
                refused = version_error(message, headers, supported)
                exchange.version = version
            else:
                refused = notification_version_error(version, supported)
            if refused is not None:
                status, error = refused
                return json_reply(error, status)
        method = message.get("method")
        if method == "notifications/cancelled" and self.holding is not None:
            cancelled = message.get("params", {}).get("requestId")
            if isinstance(cancelled, str | int) and not isinstance(cancelled, bool):  # else no request has that id
                await self.holding.cancel_held(headers.get("mcp-session-id") or identity, cancelled)
        if method in ("tasks/get", "tasks/cancel") and exchange.modern and self.tasks is not None:
            answered = await self._task(self.tasks, exchange)
            if answered is not None:
                return answered
        if method == "tools/call":
            if "id" not in message:  # a notification would reach the upstream without a decision
                return json_reply(rpc_error(None, INVALID_REQUEST, "tools/call must be a request with an id"), 400)
            return await self._call_tool(exchange, body)
        reply = await unless_gone(receive, served.upstream.post(UpstreamRequest(headers, identity, body, message)))
        if method is not None and "id" in message:  # a request; a client's response to the server gets a bare 202
            request_id = message["id"]

            def failed(detail: str) -> Message:
                return rpc_error(request_id, UPSTREAM_ERROR, f"upstream server {server!r} failed: {detail}")

            rewrite: Callable[[Message], Message | None] = unchanged
            if method == "tools/list":
                rewrite = partial(self._filter_tools, exchange=exchange)
            elif method == "server/discover" and self.tasks is not None:
                rewrite = with_extension
            reply = await checked(reply, request_id, rewrite, failed)
        if method == "initialize":
            return await self._track_session(reply, identity, server)
        return reply

    async def _track_session(self, reply: Reply, identity: str, server: str) -> Reply:
        """Record the session the upstream opened as `identity`'s before the answer naming it leaves; one whose
        owner cannot be recorded is not handed out, since no request in it could be checked."""
        for name, value in reply.headers:
            if name == "mcp-session-id" and not await self._owners.claim(value, identity, server):
                await reply.close()
                failed = "signoff could not record the new session; retry initialize"
                return json_reply(rpc_error(None, UPSTREAM_ERROR, failed), 503)
        return reply

    def _tool_label(self, server: str, tool: str) -> str:
        """`tool` as a metric label: its name once the upstream listed it, else `other` (see integrations/metrics)."""
        return tool if self.tools is not None and (server, tool) in self.tools.descriptions else OTHER_TOOL

    def _filter_tools(self, message: Message, exchange: _Exchange) -> Message | None:
        """The `tools/list` result as the caller's policy lets it see it: hidden and held-back drifted tools left out.

        A 2026-07-28 result is marked `cacheScope: "private"`, always: the list is the caller's, computed under its
        own policy (an agent's own, or the server's), and whether anyone else would get the same one depends on
        every other agent's rights, which can change with a policy reload. "private" keeps a shared cache (a
        gateway or proxy in front) from serving one agent's list to another, while the client's own cache still
        works; an upstream's "public" described the upstream's list, not this one.
        """
        result = message.get("result")
        if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
            return None
        listed, policy, modern = result["tools"], exchange.policy, exchange.modern
        version = exchange.served.policy.digest  # pins are the server's, whoever lists
        drifted = self.tools.observe(exchange.server, policy, listed, version) if self.tools else frozenset()
        private = modern and result.get("cacheScope") != "private"
        if policy.shadow:  # nothing is enforced, so nothing is left out
            return {**message, "result": {**result, "cacheScope": "private"}} if private else None

        def left_out(tool: Any) -> bool:
            if not isinstance(tool, dict):
                return False
            name = str(tool.get("name"))
            return is_hidden(policy, name) or (name in drifted and not is_shadowed(policy, name))

        tools = [t for t in listed if not left_out(t)]
        if len(tools) == len(listed) and not private:
            return None
        return {**message, "result": {**result, "tools": tools, **({"cacheScope": "private"} if modern else {})}}

    async def _call_tool(self, exchange: _Exchange, body: bytes) -> "Reply | _Held":
        """Decide the call; the agent reads the answer only once the call's audit row is committed (with every
        other row committed meanwhile: a group commit), and with tracing the call has a span of its own. A held
        call's row was committed long before its answer; its span ends when the answer is sent."""
        meta = exchange.message.get("params", {}).get("_meta")
        session = exchange.headers.get("mcp-session-id")
        exchange.span = span = self.telemetry.call_span(meta, exchange.server, exchange.identity, session)
        try:
            reply = await self._decide_call(exchange, body)
            if isinstance(reply, _Held):
                reply.span = span
                await self._audit.committed(exchange.audited)
                return reply
            if reply.stream is not None:  # the answer is still to come, in the stream
                return replace(reply, stream=self._audited_first(reply.stream, exchange))
            await self._audit.committed(exchange.audited, alone=self._posting == 1)
        except BaseException:
            ended(span)
            raise
        ended(span)
        return reply

    async def _audited_first(self, stream: AsyncIterator[bytes], exchange: _Exchange) -> AsyncIterator[bytes]:
        """Pass `stream` on, awaiting the commit of the call's audit row before the chunk that carries its answer
        (the row is queued as the answer is read); then end the call's span."""
        try:
            async for chunk in stream:
                if exchange.audited:
                    await self._audit.committed(exchange.audited, alone=self._posting == 0)
                    exchange.audited = 0
                yield chunk
        finally:
            ended(exchange.span)

    async def _decide_call(self, exchange: _Exchange, body: bytes) -> "Reply | _Held":
        message = exchange.message
        params = message.get("params")
        name = params.get("name") if isinstance(params, dict) else None
        arguments = params.get("arguments", {}) if isinstance(params, dict) else None
        if not isinstance(name, str) or not isinstance(arguments, dict):
            problem = "tools/call needs params.name (a string) and params.arguments (an object, if given)"
            # 2026-07-28 maps JSON-RPC error codes to HTTP statuses; the handshake revisions answer 200.
            status = ERROR_CODE_HTTP_STATUS.get(INVALID_PARAMS, 400) if exchange.modern else 200
            return json_reply(rpc_error(message["id"], INVALID_PARAMS, problem), status)
        policy = exchange.policy
        caller = exchange.caller
        call = ToolCall(exchange.server, name, arguments, caller.name, caller.groups)
        unfit = _tool_name_problem(name)
        if unfit is not None:  # no server has such a tool, and no row could hold its name as sent
            self._record(exchange, call, Deny("params.name", unfit), outcome="invalid", detail=unfit)
            status = ERROR_CODE_HTTP_STATUS.get(INVALID_PARAMS, 400) if exchange.modern else 200
            return json_reply(rpc_error(message["id"], INVALID_PARAMS, f"Invalid params.name: {unfit}"), status)
        if exchange.span is not None:
            exchange.span.update_name(f"tools/call {name}")
            exchange.span.set_attribute("gen_ai.tool.name", name)
        judging = self.telemetry.child(exchange.span, "policy")
        now = self._clock()
        reached = DeferredLimits()
        decision = evaluate(policy, call, reached, now)
        # Limits come after every deny check and before approval or allow, so a call that reached them is decided
        # Allow or NeedsApproval (or Deny: evaluation failing closed on an error, which counts nothing), and a
        # refusal from the shared store replaces that, as the in-process count did (integrations/limiting.py).
        if reached.limits and not isinstance(decision, Deny):
            counted = await self.limits.count(policy, call, reached.limits, now)
            if isinstance(counted, RateLimited):
                decision = counted
            elif isinstance(counted, Uncounted):
                exchange.note = counted.detail
        if self.tools is not None:
            drift = self.tools.drifted.get((exchange.server, name))
            if drift is not None:
                decision = apply_drift(policy, drift, decision)
        ended(judging, **{"signoff.decision": type(decision).__name__, "signoff.rule": decision.rule})
        if isinstance(decision, Allow):
            return await self._forward_call(exchange, body, call, decision)
        if is_shadowed(policy, name):  # audited as what it would have been; the call runs
            return await self._forward_call(exchange, body, call, decision, shadow=True)
        if isinstance(decision, NeedsApproval) and self.holding is not None:
            if decision.grant_max is not None:
                grant = self.holding.engine.find_grant(exchange.server, name, exchange.identity)
                if grant is not None:  # a grant replaces only the approval step: deny rules and limits passed
                    return await self._forward_call(exchange, body, call, decision, grant=grant)
            held = await self._hold(self.holding, exchange, body, call, decision)
            if exchange.version is not None and self.tasks is not None and declares_tasks(message):
                self.holding.as_task((held.owner, held.message_id))  # answered now: nothing is held
                task = await self.tasks.created(held.request_id, exchange.version)
                return json_reply({"jsonrpc": "2.0", "id": message["id"], "result": task})
            return held
        self._record(exchange, call, decision, outcome="refused", detail=reason_of(decision) or "hidden")
        result = for_revision(refusal(decision, name, policy.digest), exchange.version)
        return json_reply({"jsonrpc": "2.0", "id": message["id"], "result": result})

    async def _forward_call(
        self,
        exchange: _Exchange,
        body: bytes,
        call: ToolCall,
        decision: Decision,
        *,
        shadow: bool = False,
        grant: ActiveGrant | None = None,
    ) -> Reply:
        def record(outcome: str, detail: str) -> None:
            if shadow:
                why = reason_of(decision) or "hidden by policy"
                self._record(
                    exchange, call, decision, outcome=shadow_outcome(decision), detail=f"{why}; ran: {outcome}"
                )
            elif grant is not None:
                until = grant.expires_at.isoformat(timespec="seconds")
                used = f"grant {grant.id} from {grant.granted_by} until {until}" + (f": {detail}" if detail else "")
                self._record(exchange, call, decision, outcome=outcome, detail=used, kind=AuditKind.GRANT_USED)
            else:
                self._record(exchange, call, decision, outcome=outcome, detail=detail)

        sent = send_call(exchange.outbound(body, call.tool), record, telemetry=self.telemetry, parent=exchange.span)
        return await unless_gone(exchange.receive, sent)

    async def _task(self, tasks: TaskDesk, exchange: _Exchange) -> Reply | None:
        """Answer a `tasks/get` or `tasks/cancel` naming one of the caller's approval requests on this server;
        None for any other task id (the upstream's own tasks, another agent's): it passes upstream unchanged."""
        message, version = exchange.message, exchange.version
        params = message.get("params") or {}
        found = params.get("_meta")
        meta: dict[str, Any] = found if isinstance(found, dict) else {}
        call = TaskCall(
            exchange.server,
            exchange.identity,
            exchange.served.upstream,
            exchange.policy,
            exchange.headers,
            meta,
            version or "",
        )
        request = await tasks.owned(call, params.get("taskId"))
        if request is None:
            return None
        if message.get("method") == "tasks/cancel":
            await tasks.cancel(request)
            return json_reply({"jsonrpc": "2.0", "id": message["id"], "result": for_revision({}, version)})
        return json_reply({"jsonrpc": "2.0", "id": message["id"], "result": await tasks.get(call, request)})

    async def _hold(
        self, holding: Holding, exchange: _Exchange, body: bytes, call: ToolCall, decision: NeedsApproval
    ) -> "_Held":
        policy = exchange.policy
        rule = rule_for(policy, call.tool)
        pending = CallForApproval(
            call=call,
            rule=decision.rule,
            policy_version=policy.digest,
            reason=decision.reason,
            spec=decision.approval,
            redact=rule.redact if rule else (),
            grant_max=decision.grant_max,
            description=self.tools.description(exchange.server, call.tool) if self.tools is not None else "",
        )
        message, headers = exchange.message, exchange.headers
        owner = headers.get("mcp-session-id") or exchange.identity
        request_id = await holding.open(pending, (owner, message["id"]))
        self._record(exchange, call, decision, outcome="held", detail=f"approval {request_id}")
        meta = message["params"].get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        stream = token is not None and "text/event-stream" in headers.get("accept", "")
        outbound = exchange.held(body, call.tool)
        return _Held(
            holding, request_id, owner, message["id"], token, stream, outbound, exchange.receive, self.telemetry
        )

    def _record(
        self,
        exchange: _Exchange,
        call: ToolCall,
        decision: Decision,
        *,
        outcome: str,
        detail: str,
        kind: AuditKind | None = None,
    ) -> None:
        kind = kind or _KIND.get(type(decision), AuditKind.ALLOWED)
        if exchange.note:
            detail = f"{detail}; {exchange.note}" if detail else exchange.note
        latency = time.perf_counter() - exchange.started
        decided = outcome if outcome.startswith("shadow_") else kind.value
        self.metrics.call(call.server, self._tool_label(call.server, call.tool), decided, latency)
        if exchange.span is not None:
            exchange.span.set_attributes({"signoff.decision": decided, "signoff.outcome": outcome})
        rule = rule_for(exchange.policy, call.tool)
        latency_ms = latency * 1000
        # Built by the audit writer as it writes (in its worker thread, or on SQLite as it commits on the loop).
        exchange.audited = self._audit.record(
            partial(
                _call_record,
                kind,
                call,
                decision.rule,
                exchange.policy.digest,
                rule.redact if rule else (),
                outcome,
                detail[:2000],
                latency_ms,
                datetime.now(UTC),
            )
        )


def _call_record(
    kind: AuditKind,
    call: ToolCall,
    rule: str,
    policy_version: str,
    redact: tuple[str, ...],
    outcome: str,
    detail: str,
    latency_ms: float,
    at: datetime,
) -> AuditRecord:
    canonical = canonical_json(call.arguments)  # digest_arguments' own spelling, computed once
    return AuditRecord(
        kind=kind,
        server=call.server,
        tool=call.tool,
        identity=call.identity,
        rule=rule,
        policy_version=policy_version,
        args_digest=hashlib.sha256(canonical.encode()).hexdigest(),
        arguments=canonical_json(redacted(call.arguments, redact)) if redact else canonical,
        outcome=outcome,
        detail=detail,
        latency_ms=latency_ms,
        at=at,
    )


def _tool_name_problem(name: str) -> str | None:
    """Why `name` cannot be a tool's name: empty, longer than the audit log's column, or holding a control
    character or a lone surrogate (MCP tool names are short printable identifiers)."""
    if not name:
        return "a tool name cannot be empty"
    if len(name) > MAX_TOOL_NAME:
        return f"a tool name has at most {MAX_TOOL_NAME} characters, not {len(name)}"
    bad = _UNPRINTABLE.search(name)
    if bad is not None:
        return f"a tool name cannot hold the character U+{ord(bad.group()):04X} (at {bad.start()})"
    return None


def _garbled_header(headers: Mapping[str, str]) -> str | None:
    """The first header signoff forwards upstream whose value is not printable ASCII, if any."""
    for name in FORWARDED_REQUEST_HEADERS:
        value = headers.get(name)
        if value is not None and not (value.isascii() and value.isprintable()):
            return name
    return None


def _valid_id(value: Any) -> bool:
    """A JSON-RPC id an answer can carry back exactly: an integer, or a string that UTF-8 can encode."""
    if isinstance(value, str):
        return value.isascii() or _SURROGATE.search(value) is None
    return isinstance(value, int) and not isinstance(value, bool)


def _envelope_problem(message: Any) -> str | None:
    if isinstance(message, list):
        return "JSON-RPC batches are not supported; send one message per request"
    if not isinstance(message, dict):
        return "A JSON-RPC message must be an object"
    if message.get("jsonrpc") != "2.0":
        return 'The message must have "jsonrpc": "2.0"'
    if "method" in message:
        if not isinstance(message["method"], str):
            return '"method" must be a string'
        if "id" in message and not _valid_id(message["id"]):
            return '"id" must be a string or an integer (a string without lone UTF-16 surrogates, to echo back)'
        if "params" in message and not isinstance(message["params"], dict):
            return '"params" must be an object'
        return None
    if "id" in message and ("result" in message or "error" in message):
        return None
    return 'A JSON-RPC message needs "method" (a request or notification) or "result"/"error" (a response)'


def _http_error(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Reply:
    return json_reply(rpc_error(None, INVALID_REQUEST, message), status, headers)
