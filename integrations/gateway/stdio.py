"""A stdio upstream: one supervised child process shared by every downstream session.

The child speaks MCP over stdin/stdout and was built for one client, so this module is a small
multiplexer: it initializes the child once, answers each downstream `initialize` from that result,
renumbers request ids and progress tokens so sessions cannot collide, and routes what the child sends
to the one session it is for (`multiplex.py` says how; nothing reaches a session it was not for). A crashed
child fails its in-flight requests with a clear error and is restarted with backoff (`child.py`).
"""

import contextlib
import itertools
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream
from mcp.shared.subscriptions import SUBSCRIPTION_ID_META_KEY
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    LOG_LEVEL_META_KEY,
    PROTOCOL_VERSION_META_KEY,
    SERVER_INFO_META_KEY,
)
from mcp_types.version import (
    HANDSHAKE_PROTOCOL_VERSIONS,
    LATEST_HANDSHAKE_VERSION,
    LATEST_MODERN_VERSION,
    MODERN_PROTOCOL_VERSIONS,
)

from integrations.errors import UpstreamFailed, UpstreamUnavailable
from integrations.gateway.child import Declined, SupervisedChild, Unsendable, line_of
from integrations.gateway.multiplex import (
    CHILD_CAPABILITIES,
    INPUT_KEY,
    RELAYED_REQUESTS,
    DownstreamSession,
    Listener,
    Multiplexer,
    Pending,
    Round,
    deliver,
    honoured_filter,
    modern_levels,
    params_of,
)
from integrations.gateway.ownership import session_digest
from integrations.gateway.refusals import upstream_failure
from integrations.gateway.revisions import (
    REMOVED_METHODS,
    error_status,
    method_not_found,
    param_header_error,
    wants_param_check,
)
from integrations.gateway.upstream import Reply, UpstreamRequest, json_reply
from integrations.gateway.wire import is_modern, rpc_error, sse_event

logger = logging.getLogger(__name__)

Message = dict[str, Any]
INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, TIMED_OUT = -32600, -32601, -32602, -32001
INITIALIZE_TIMEOUT = 30.0
DISCOVER_TIMEOUT = 10.0  # a child that serves only the handshake may not answer a discover before initialize at all
MAX_TOOL_PAGES = 100
MAX_LISTENERS = 1024  # listen streams signoff serves for one handshake-era child (the SDK's server allows as many)
# The 2026-07-28 per-request envelope; a child initialized on a handshake revision refuses requests carrying it.
# 2026-07-28 results of these methods carry caching directives; a handshake-era child sends none.
CACHEABLE_METHODS = frozenset(
    {"tools/list", "resources/list", "resources/templates/list", "prompts/list", "resources/read"}
)
ENVELOPE_KEYS = frozenset({PROTOCOL_VERSION_META_KEY, CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY})


class NoModernEra(Declined):
    """Raised when a child started for 2026-07-28 clients does not serve that revision (its discover fails)."""


def _accepts_sse(headers: Mapping[str, str]) -> bool:
    return "text/event-stream" in headers.get("accept", "")


class StdioUpstream(SupervisedChild):
    """Spawns `command`, keeps it running, and multiplexes downstream sessions onto it.

    The child is initialized at a handshake revision; its SDK then serves that era only (the era of a stdio
    connection is fixed by its first request). 2026-07-28 clients are served by a second child of the same
    command, started when the first such client comes and spoken to at that revision (`modern`): its requests
    pass with their own `_meta`, so it judges their capabilities and may answer `input_required` (MRTR). A child
    that does not serve 2026-07-28 (its `server/discover` fails) is stopped, and signoff translates for it.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        request_timeout: float = 300.0,
        max_backoff: float = 30.0,
        modern: bool = False,
    ) -> None:
        super().__init__(name, command, env=env, cwd=cwd, max_backoff=max_backoff)
        self.modern = modern  # spoken to at 2026-07-28 (for 2026-07-28 clients), not initialized
        self._request_timeout = request_timeout
        self._ids = itertools.count(1)
        self._mux = Multiplexer()
        self._init_result: Message | None = None
        self._modern_child: StdioUpstream | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def unattributed(self) -> int:
        """Messages the child sent while requests of several sessions were in flight: they went to no session."""
        return self._mux.unattributed

    def health(self) -> dict[str, Any]:
        """For `/healthz`: both children as one (ready when each that runs is, their restarts summed), and how
        2026-07-28 clients are served: `not yet` (none came), `by a child at 2026-07-28`, or translated, and why."""
        child = self._modern_child
        ready, restarts, last_exit = self.ready, self.restarts, self.last_exit
        if child is None:
            modern = "not yet"
        elif child.declined is not None:
            modern = f"translated for a handshake-era child: {child.declined}"
        else:
            modern = "by a child at 2026-07-28"
            ready = ready and (child.ready or not child._decided.is_set())
            restarts += child.restarts
            last_exit = child.last_exit or last_exit
        return {
            "ready": ready,
            "restarts": restarts,
            "last_exit": last_exit,
            "unattributed": self.unattributed + (child.unattributed if child else 0),
            "modern": modern,
        }

    async def aclose(self) -> None:
        if self._modern_child is not None:
            await self._modern_child.aclose()
        await super().aclose()

    async def _open(self) -> None:
        if self.modern:
            await self._discover()
        else:
            with anyio.fail_after(INITIALIZE_TIMEOUT):
                await self._initialize()

    async def _initialize(self) -> None:
        result = await self._call(
            "initialize",
            {
                "protocolVersion": LATEST_HANDSHAKE_VERSION,
                "capabilities": CHILD_CAPABILITIES,
                "clientInfo": {"name": "signoff", "version": "0.1.0"},
            },
        )
        self._init_result = result
        await self._write({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def _discover(self) -> None:
        """Ask the child at 2026-07-28 what it serves; NoModernEra if it does not answer so."""
        envelope = {
            PROTOCOL_VERSION_META_KEY: LATEST_MODERN_VERSION,
            CLIENT_CAPABILITIES_META_KEY: {},
            CLIENT_INFO_META_KEY: {"name": "signoff", "version": "0.1.0"},
        }
        try:
            with anyio.fail_after(DISCOVER_TIMEOUT):
                result = await self._call("server/discover", {"_meta": envelope})
        except (TimeoutError, UpstreamUnavailable) as exc:
            if self._process is None or self._process.returncode is not None:
                raise UpstreamUnavailable(self.name, "the server process exited while starting") from exc
            if isinstance(exc, TimeoutError):
                raise NoModernEra(f"server/discover had no answer within {DISCOVER_TIMEOUT:g} s") from exc
            raise NoModernEra(exc.detail) from exc
        versions = result.get("supportedVersions")
        if not isinstance(versions, list) or LATEST_MODERN_VERSION not in versions:
            raise NoModernEra(f"its server/discover names {json.dumps(versions)[:200]}, not {LATEST_MODERN_VERSION}")
        self._init_result = result

    async def _call(self, method: str, params: Message) -> Message:
        uid = next(self._ids)
        send, receive = anyio.create_memory_object_stream[Message](1)
        self._mux.pending[uid] = Pending(downstream_id=uid, send=send)  # signoff's own: no owner, attributed to none
        try:
            await self._write({"jsonrpc": "2.0", "id": uid, "method": method, "params": params})
            async with receive:
                reply = await receive.receive()
        finally:
            self._forget(uid)
        if "error" in reply:
            raise UpstreamUnavailable(self.name, f"{method} failed: {reply['error'].get('message')}")
        result: Message = reply.get("result", {})
        return result

    def _failure(self, pending: Pending, code: int, reason: str) -> Message:
        """The answer to a request the child will not answer: a tool error for a tool call, else a JSON-RPC error."""
        detail = str(UpstreamFailed(self.name, reason))
        if pending.tool is not None:  # a tool error the model can read and act on
            result = upstream_failure(self.name, pending.tool, detail)
            return {"jsonrpc": "2.0", "id": pending.downstream_id, "result": result}
        return rpc_error(pending.downstream_id, code, detail)

    def _fail_pending(self, reason: str) -> None:
        for pending in self._mux.forget_requests():
            deliver(pending.send, self._failure(pending, -32000, reason))
            pending.send.close()

    # -- messages from the child -------------------------------------------------------------------

    async def _dispatch(self, message: Message) -> None:
        if message.get("method") is None:
            self._mux.answered(message)
        elif "id" in message:
            await self._answer_child_request(message)
        else:
            self._mux.notified(message)

    async def _answer_child_request(self, message: Message) -> None:
        method, request_id = message.get("method"), message["id"]
        if method == "ping":
            await self._write({"jsonrpc": "2.0", "id": request_id, "result": {}})
        elif method == "roots/list":
            await self._write({"jsonrpc": "2.0", "id": request_id, "result": {"roots": []}})
        elif method in RELAYED_REQUESTS:
            problem = self._mux.relay(message)
            if problem is not None:
                logger.info("Upstream %s asked for %s; refused: %s", self.name, method, problem)
                await self._write(rpc_error(request_id, INVALID_REQUEST, f"signoff cannot relay {method}: {problem}"))
            for state, round in list(self._mux.rounds.items()):
                if round.asked == request_id and self._task_group is not None:  # asked in a round: it may expire
                    self._task_group.start_soon(self._expire_round, state)
        else:
            await self._write(rpc_error(request_id, METHOD_NOT_FOUND, "signoff does not relay this request to clients"))

    # -- downstream ------------------------------------------------------------------------------

    async def modern_versions(self) -> tuple[str, ...]:
        """signoff itself serves the 2026-07-28-era revisions for the child, whatever revision the child speaks."""
        return MODERN_PROTOCOL_VERSIONS

    def owner(self, session_id: str) -> str | None:
        session = self._mux.sessions.get(session_id)
        return session.identity if session else None

    async def post(self, request: UpstreamRequest) -> Reply:
        message, headers, identity = request.message, request.headers, request.identity
        modern = is_modern(headers.get("mcp-protocol-version"))
        method = message.get("method")
        session_id = headers.get("mcp-session-id")
        if method is None or "id" not in message:
            if modern or method == "notifications/initialized":
                return Reply(status=202, headers=[])
            await self.wait_ready(self._request_timeout)
            if method is None:  # a client's answer to a request the child sent
                forwarded = self._mux.client_answer(message, session_id)
            else:
                forwarded = self._mux.client_notification(message, session_id)
            if forwarded is not None:
                try:
                    await self._write(forwarded)
                except Unsendable as exc:
                    return json_reply(rpc_error(None, INVALID_PARAMS, f"Invalid params: {exc}"), 400)
            return Reply(status=202, headers=[])
        if modern:
            return await self._modern_request(message, headers, method, identity)
        if method == "initialize":
            return await self._initialize_session(message, identity)
        if session_id is None:
            return json_reply(rpc_error(message["id"], -32600, "Bad Request: Missing Mcp-Session-Id"), 400)
        self._adopt(session_id, identity)
        await self.wait_ready(self._request_timeout)
        if method == "server/discover":
            return json_reply({"jsonrpc": "2.0", "id": message["id"], "result": self._discover_result()})
        forwarded = self._mux.session_request(session_id, message)
        if forwarded is None:  # the child already does what the session asked
            return json_reply({"jsonrpc": "2.0", "id": message["id"], "result": {}})
        return await self._request(forwarded, headers, None, session_id)

    async def _modern_request(self, message: Message, headers: Mapping[str, str], method: str, identity: str) -> Reply:
        """A 2026-07-28 request (it has no session): to the child of that revision if the command serves it, else
        translated for the handshake child; a method the revision removed is unknown either way."""
        if method in REMOVED_METHODS:
            status, problem = method_not_found(message["id"])
            return json_reply(problem, status)
        target = await self._modern() or self
        await target.wait_ready(self._request_timeout)
        if wants_param_check(message, headers):  # over stdio no header reaches the child: signoff checks them
            refused = param_header_error(await target._input_schema(message), message, headers)
            if refused is not None:
                status, problem = refused
                return json_reply(problem, status)
        if target is self and method == "server/discover":
            return json_reply({"jsonrpc": "2.0", "id": message["id"], "result": self._discover_result()})
        if target is self and method == "subscriptions/listen":
            return await self._listen(message, headers)
        if target is self and (round := self._mux.resume(params_of(message).get("requestState"), identity)):
            return await self._resume(message, headers, method, round)
        return await target._request(message, headers, method, None, identity)

    async def _modern(self) -> "StdioUpstream | None":
        """The child for 2026-07-28 clients, started with the first of them; None if the command does not serve it."""
        if self._modern_child is None:
            if self._task_group is None or self.modern:
                return None
            self._modern_child = StdioUpstream(
                self.name,
                self._command,
                env=self._env,
                cwd=self._cwd,
                request_timeout=self._request_timeout,
                max_backoff=self._max_backoff,
                modern=True,
            )
            self._modern_child.start(self._task_group)
        child = self._modern_child
        with anyio.move_on_after(DISCOVER_TIMEOUT + INITIALIZE_TIMEOUT):  # its spawn (npx, uvx), then its discover
            await child._decided.wait()
        return None if child.declined is not None else child

    async def _input_schema(self, message: Message) -> Any:
        """The `inputSchema` the child lists for the tool `message` calls (at the caller's envelope, as the SDK's
        server looks it up); None when it lists none or cannot say, and the headers go unchecked (fail open)."""
        params = params_of(message)
        meta = params.get("_meta")
        query: Message = {}
        if self.modern and isinstance(meta, dict):
            query["_meta"] = {key: value for key, value in meta.items() if key in ENVELOPE_KEYS}
        with anyio.move_on_after(INITIALIZE_TIMEOUT):
            for _ in range(MAX_TOOL_PAGES):
                try:
                    result = await self._call("tools/list", query)
                except UpstreamUnavailable:
                    return None
                for tool in result.get("tools") or ():
                    if isinstance(tool, dict) and tool.get("name") == params.get("name"):
                        return tool.get("inputSchema")
                cursor = result.get("nextCursor")
                if not isinstance(cursor, str):
                    return None
                query = {**query, "cursor": cursor}
        return None

    def _discover_result(self) -> Message:
        """signoff's `server/discover` answer for a handshake-era child, from its `initialize` result."""
        init = self._init_result or {}
        result: Message = {
            "supportedVersions": list(MODERN_PROTOCOL_VERSIONS),
            "capabilities": init.get("capabilities", {}),
            "resultType": "complete",
            "ttlMs": 0,
            "cacheScope": "private",
        }
        if init.get("instructions"):
            result["instructions"] = init["instructions"]
        if isinstance(init.get("serverInfo"), dict):
            result["_meta"] = {SERVER_INFO_META_KEY: init["serverInfo"]}
        return result

    async def _listen(self, message: Message, headers: Mapping[str, str]) -> Reply:
        """`subscriptions/listen` for a handshake-era child, served by signoff: acknowledged with what the child
        can send, then its list-changed and resource-updated notifications as the filter asks, tagged with the
        request's id; the child is subscribed to the resources asked for while some stream or session wants them."""
        if not _accepts_sse(headers):
            problem = rpc_error(message["id"], INVALID_REQUEST, "subscriptions/listen answers with an event stream")
            return json_reply(problem, 406)
        if len(self._mux.listeners) >= MAX_LISTENERS:
            return json_reply(rpc_error(message["id"], -32603, "Subscription limit reached"))
        capabilities = (self._init_result or {}).get("capabilities")
        honoured = honoured_filter(params_of(message).get("notifications"), capabilities)
        send, receive = anyio.create_memory_object_stream[Message](math.inf)
        listener = Listener(subscription=message["id"], send=send, honoured=honoured)
        for uri in self._mux.listen(listener):
            await self._watch("resources/subscribe", uri)
        ack = {
            "jsonrpc": "2.0",
            "method": "notifications/subscriptions/acknowledged",
            "params": {"notifications": honoured, "_meta": {SUBSCRIPTION_ID_META_KEY: message["id"]}},
        }

        async def events() -> AsyncIterator[bytes]:
            with receive:
                yield sse_event(ack)
                async for item in receive:
                    yield sse_event(item)

        async def close() -> None:
            for uri in self._mux.unlisten(listener):
                await self._watch("resources/unsubscribe", uri)

        return Reply(
            status=200,
            headers=[("content-type", "text/event-stream"), ("cache-control", "no-cache")],
            stream=events(),
            close=close,
        )

    async def _watch(self, method: str, uri: str) -> None:
        """Subscribe the child to `uri`, or unsubscribe it, for signoff's own bookkeeping (a failure is logged)."""
        with anyio.move_on_after(5, shield=True) as scope:
            try:
                await self._call(method, {"uri": uri})
            except UpstreamUnavailable as exc:
                logger.info("Upstream %s: %s %s failed: %s", self.name, method, uri, exc.detail)
        if scope.cancelled_caught:
            logger.info("Upstream %s: %s %s had no answer within 5 s", self.name, method, uri)

    def _adopt(self, session_id: str, identity: str) -> DownstreamSession:
        """The session `session_id`, taken on here if another process opened it.

        The gateway checked the id against the session owners in the database before the request came here: it
        is a live session of this agent on this server. When it was opened by another worker or replica (each
        has its own child), this child serves it from now on too. What the other process knew of it stays
        there: its client's capabilities (so the child's sampling or elicitation requests are not relayed to it
        from here), its log level and its resource subscriptions.
        """
        session = self._mux.sessions.get(session_id)
        if session is None:
            session = self._mux.sessions[session_id] = DownstreamSession(identity=identity)
        return session

    async def _initialize_session(self, message: Message, identity: str) -> Reply:
        await self.wait_ready(self._request_timeout)
        init = dict(self._init_result or {})
        params = params_of(message)
        requested = params.get("protocolVersion")
        if requested in HANDSHAKE_PROTOCOL_VERSIONS:
            init["protocolVersion"] = requested
        capabilities = params.get("capabilities")
        session_id = uuid.uuid4().hex
        self._mux.sessions[session_id] = DownstreamSession(
            identity=identity, capabilities=capabilities if isinstance(capabilities, dict) else {}
        )
        return json_reply(
            {"jsonrpc": "2.0", "id": message["id"], "result": init}, headers=[("mcp-session-id", session_id)]
        )

    async def _request(
        self,
        message: Message,
        headers: Mapping[str, str],
        modern: str | None,
        session_id: str | None,
        identity: str | None = None,
    ) -> Reply:
        """Forward one request; `modern` is its method when the client speaks 2026-07-28."""
        params = message.get("params")
        meta = params.get("_meta", {}) if isinstance(params, dict) else {}
        if not isinstance(meta, dict):
            problem = rpc_error(message["id"], INVALID_PARAMS, "Invalid params: params._meta must be an object")
            return json_reply(problem, 400 if modern else 200)  # 2026-07-28 maps -32602 to 400
        uid = next(self._ids)
        send, receive = anyio.create_memory_object_stream[Message](math.inf)
        token = meta.get("progressToken")
        tool = params.get("name") if message.get("method") == "tools/call" and isinstance(params, dict) else None
        pending = Pending(
            downstream_id=message["id"],
            send=send,
            owner=session_id if session_id is not None else f"request:{uid}",
            progress_token=token,
            tool=tool,
            streams=_accepts_sse(headers),
            tagged=self.modern and modern == "subscriptions/listen",
        )
        if session_id is None:
            pending.levels = modern_levels(meta, LOG_LEVEL_META_KEY)
            if not self.modern:  # the child may ask its client a question: in a round (MRTR), if it declared so
                declared = meta.get(CLIENT_CAPABILITIES_META_KEY)
                pending.capabilities, pending.identity = (declared if isinstance(declared, dict) else {}), identity
        forwarded = {**message, "id": uid}
        if isinstance(params, dict) and "_meta" in params:
            if not self.modern:  # a child initialized on a handshake revision refuses the envelope
                meta = {k: v for k, v in meta.items() if k not in ENVELOPE_KEYS}
            if token is not None:
                meta["progressToken"] = uid
            forwarded["params"] = {**params, "_meta": meta}
        try:
            line = line_of(forwarded)
        except Unsendable as exc:  # the child would drop it unanswered, and the call would wait out the timeout
            send.close()
            receive.close()
            return json_reply(
                rpc_error(message["id"], INVALID_PARAMS, f"Invalid params: {exc}"), 400 if modern else 200
            )
        self._mux.pending[uid] = pending
        try:
            await self._write(line)
        except UpstreamUnavailable:
            self._forget(uid)
            raise
        return await self._await(uid, pending, receive, modern)

    async def _await(
        self, uid: int, pending: Pending, receive: MemoryObjectReceiveStream[Message], modern: str | None
    ) -> Reply:
        """The answer to request `uid` as its client reads it: JSON, or an event stream of what comes first."""
        token = pending.progress_token
        deadline = anyio.current_time() + self._request_timeout
        if modern == "subscriptions/listen":  # a stream that lasts until the client ends it
            deadline = math.inf
        if not pending.streams:
            with receive:
                final = await self._next(uid, pending, receive, deadline, final_only=True)
            return self._answer(final, modern)
        first = None
        if token is None:  # an event stream only if something comes before the answer (a log, a sampling request)
            first = await self._next(uid, pending, receive, deadline, final_only=False)
            if "method" not in first:
                receive.close()
                return self._answer(first, modern)

        async def close() -> None:
            receive.close()
            await self._abandon(uid, "the client went away")

        return Reply(
            status=200,
            headers=[("content-type", "text/event-stream"), ("cache-control", "no-cache")],
            stream=self._events(uid, pending, receive, modern, deadline, first),
            close=close,
        )

    async def _next(
        self,
        uid: int,
        pending: Pending,
        receive: MemoryObjectReceiveStream[Message],
        deadline: float,
        *,
        final_only: bool,
    ) -> Message:
        """The next message for the request (its answer, or with `final_only` unset anything before it)."""
        try:
            with anyio.fail_after(max(deadline - anyio.current_time(), 0)):
                async for item in receive:
                    if not final_only or "method" not in item:
                        return item
        except TimeoutError:
            await self._abandon(uid, "signoff timed out waiting for the upstream")
            return self._failure(pending, TIMED_OUT, f"it did not answer within {self._request_timeout:g} s")
        except anyio.get_cancelled_exc_class():  # the client went away: the child should stop too
            await self._abandon(uid, "the client went away")
            raise
        return self._failure(pending, -32000, "it closed the request without an answer")

    async def _events(
        self,
        uid: int,
        pending: Pending,
        receive: MemoryObjectReceiveStream[Message],
        modern: str | None,
        deadline: float,
        first: Message | None,
    ) -> AsyncIterator[bytes]:
        with receive:
            if first is not None:
                yield sse_event(first)
            while True:
                item = await self._next(uid, pending, receive, deadline, final_only=False)
                if "method" in item:
                    yield sse_event(item)
                    continue
                yield sse_event(self._finish(item, modern))
                return

    async def _resume(self, message: Message, headers: Mapping[str, str], method: str, round: Round) -> Reply:
        """A 2026-07-28 retry carrying the answer to a question the child asked in a round: the answer goes to the
        child, and the retry waits for what the child's request does next (another question, or its result)."""
        pending = self._mux.pending.get(round.uid)
        if pending is None:
            gone = "Invalid params: the request this answers is gone (its server restarted or gave up)"
            return json_reply(rpc_error(message["id"], INVALID_PARAMS, gone), 400)
        responses = params_of(message).get("inputResponses")
        answer = responses.get(INPUT_KEY) if isinstance(responses, dict) else None
        if isinstance(answer, dict):
            reply = {"jsonrpc": "2.0", "id": round.asked, "result": answer}
        else:
            reply = rpc_error(round.asked, INVALID_REQUEST, "the client gave no answer")
        send, receive = anyio.create_memory_object_stream[Message](math.inf)
        pending.send, pending.downstream_id, pending.round = send, message["id"], None
        pending.streams = _accepts_sse(headers)
        try:
            await self._write(reply)
        except Unsendable as exc:
            await self._write(rpc_error(round.asked, INVALID_REQUEST, "the client's answer cannot be sent over stdio"))
            logger.info("Upstream %s: a client's answer was not sent: %s", self.name, exc)
        return await self._await(round.uid, pending, receive, method)

    async def _expire_round(self, state: str) -> None:
        """A question whose client never came back: after the request timeout, the child's request is given up."""
        await anyio.sleep(self._request_timeout)
        round = self._mux.rounds.pop(state, None)
        pending = self._mux.pending.get(round.uid) if round is not None else None
        if round is None or pending is None or pending.round != state:
            return
        pending.round = None
        with contextlib.suppress(UpstreamUnavailable):
            await self._write(rpc_error(round.asked, INVALID_REQUEST, "the client did not answer in time"))
        await self._abandon(round.uid, "the client did not answer the server's question in time")

    async def _abandon(self, uid: int, reason: str) -> None:
        """Stop waiting for request `uid`; if the child still owes its answer, tell the child to stop (unless the
        client was asked a question in a round: it answers with a new request, and the round has its own expiry)."""
        pending = self._mux.pending.get(uid)
        if pending is None or pending.round is not None:
            return
        del self._mux.pending[uid]
        pending.send.close()
        with anyio.move_on_after(5, shield=True):
            await self._cancel(uid, reason)

    async def _cancel(self, uid: int, reason: str) -> None:
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": uid, "reason": reason}}
        with contextlib.suppress(UpstreamUnavailable):
            await self._write(cancel)

    def _forget(self, uid: int) -> None:
        pending = self._mux.pending.pop(uid, None)
        if pending is not None:
            pending.send.close()

    def _answer(self, message: Message, modern: str | None) -> Reply:
        """The child's answer as JSON; for a 2026-07-28 client with the spec's status for its error code."""
        return json_reply(self._finish(message, modern), error_status(message) if modern else 200)

    @staticmethod
    def _finish(message: Message, modern: str | None) -> Message:
        """Give a handshake-era result the fields a 2026-07-28 client requires."""
        if modern is None or not isinstance(message.get("result"), dict):
            return message
        result = {"resultType": "complete", **message["result"]}
        if modern in CACHEABLE_METHODS:
            result = {"ttlMs": 0, "cacheScope": "private", **result}
        return {**message, "result": result}

    async def get(self, request: UpstreamRequest) -> Reply:
        session_id = request.headers.get("mcp-session-id")
        if session_id is None:
            return json_reply(rpc_error(None, -32001, "Session not found"), 404)
        session = self._adopt(session_id, request.identity)
        send, receive = anyio.create_memory_object_stream[Message](math.inf)
        session.listeners.append(send)

        async def events() -> AsyncIterator[bytes]:
            async with receive:
                async for item in receive:
                    yield sse_event(item)

        async def close() -> None:
            if send in session.listeners:
                session.listeners.remove(send)
            send.close()

        return Reply(
            status=200,
            headers=[("content-type", "text/event-stream"), ("cache-control", "no-cache")],
            stream=events(),
            close=close,
        )

    async def delete(self, request: UpstreamRequest) -> Reply:
        session_id = request.headers.get("mcp-session-id")
        if session_id is None:
            return json_reply(rpc_error(None, -32001, "Session not found"), 404)
        self._adopt(session_id, request.identity)
        await self._end_session(session_id)
        return Reply(status=200, headers=[])

    async def forget_session(self, digest: str) -> None:
        """End here the session whose id hashes to `digest`: the agent ended it through another replica."""
        for session_id in [s for s in self._mux.sessions if session_digest(s) == digest]:
            await self._end_session(session_id)

    async def _end_session(self, session_id: str) -> None:
        uids, asked, unwanted = self._mux.session_ended(session_id)
        for uid in uids:
            await self._abandon(uid, "the client ended its session")
        for request_id in asked:
            with contextlib.suppress(UpstreamUnavailable):
                await self._write(rpc_error(request_id, INVALID_REQUEST, "the client ended its session"))
        for uri in unwanted:  # nobody else wants it: the child may stop watching
            with anyio.move_on_after(5), contextlib.suppress(UpstreamUnavailable):
                await self._call("resources/unsubscribe", {"uri": uri})
