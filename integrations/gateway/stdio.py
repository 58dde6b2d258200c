"""A stdio upstream: one supervised child process shared by every downstream session.

The child speaks MCP over stdin/stdout and was built for one client, so this module is a small
multiplexer: it initializes the child once, answers each downstream `initialize` from that result,
renumbers request ids and progress tokens so sessions cannot collide, and routes what the child sends
to the one session it is for (`routing.py` says how; nothing reaches a session it was not for). A crashed
child fails its in-flight requests with a clear error and is restarted with backoff.
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
from anyio.abc import Process, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    LOG_LEVEL_META_KEY,
    PROTOCOL_VERSION_META_KEY,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION, MODERN_PROTOCOL_VERSIONS

from integrations.errors import UpstreamFailed, UpstreamUnavailable
from integrations.gateway.multiplex import (
    CHILD_CAPABILITIES,
    LEVELS,
    RELAYED_REQUESTS,
    DownstreamSession,
    Pending,
    modern_levels,
    most_verbose,
    params_of,
    refusal,
    the_one,
)
from integrations.gateway.refusals import upstream_failure
from integrations.gateway.upstream import Reply, json_reply

logger = logging.getLogger(__name__)

Message = dict[str, Any]
MAX_LINE = 16 * 1024 * 1024
INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, TIMED_OUT = -32600, -32601, -32602, -32001
MAX_ELICITATIONS = 10_000  # URL elicitations awaiting their end; a child that never ends them cannot grow this past it
REQUEST_CANCELLED = -32800  # the code the SDK's own server answers a cancelled request with
INITIALIZE_TIMEOUT = 30.0
# The 2026-07-28 per-request envelope; a child initialized on a handshake revision refuses requests carrying it.
# 2026-07-28 results of these methods carry caching directives; a handshake-era child sends none.
CACHEABLE_METHODS = frozenset(
    {"tools/list", "resources/list", "resources/templates/list", "prompts/list", "resources/read"}
)
ENVELOPE_KEYS = frozenset({PROTOCOL_VERSION_META_KEY, CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY})


class Unsendable(ValueError):
    """Raised when a message holds a lone UTF-16 surrogate: JSON can spell one, but a child reads UTF-8 lines."""

    def __init__(self) -> None:
        super().__init__("a string holds a lone UTF-16 surrogate, which a stdio server cannot read as UTF-8")


def _line(message: Message) -> bytes:
    """One message as the line a child reads: UTF-8 JSON (the spec's encoding for stdio)."""
    try:
        return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    except UnicodeEncodeError as exc:
        raise Unsendable from exc


def _deliver(send: MemoryObjectSendStream[Message], message: Message) -> None:
    # The waiting side may have gone (client disconnected, timed out); the message then has no reader.
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.WouldBlock):
        send.send_nowait(message)


def _error(request_id: Any, code: int, message: str) -> Message:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def _accepts_sse(headers: Mapping[str, str]) -> bool:
    return "text/event-stream" in headers.get("accept", "")


def _sse(message: Message) -> bytes:
    return b"event: message\ndata: " + json.dumps(message, separators=(",", ":")).encode() + b"\n\n"


class StdioUpstream:
    """Spawns `command`, keeps it running, and multiplexes downstream sessions onto it."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        request_timeout: float = 300.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.name = name
        self._command = list(command)
        self._env = dict(env) if env else None
        self._cwd = cwd
        self._request_timeout = request_timeout
        self._max_backoff = max_backoff
        self._ids = itertools.count(1)
        self._pending: dict[int, Pending] = {}
        self._sessions: dict[str, DownstreamSession] = {}
        self._asked: dict[str | int, str] = {}  # the child's requests relayed to a client, and to which session
        self._elicitations: dict[str, str] = {}  # URL elicitations relayed, and to which session (for their end)
        self.unattributed = 0  # messages the child sent while several sessions waited: sent to none
        self._process: Process | None = None
        self._ready = anyio.Event()
        self._init_result: Message | None = None
        self._write_lock = anyio.Lock()
        self._closing = False
        self._output_lost = False  # the running child closed its stdout and was killed for it
        self.restarts = 0
        self.last_exit: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, task_group: TaskGroup) -> None:
        task_group.start_soon(self._supervise)

    async def wait_ready(self, within: float) -> None:
        with anyio.move_on_after(within):
            await self._ready.wait()
        if not self._ready.is_set():
            raise UpstreamUnavailable(self.name, self.last_exit or "the server process is still starting")

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def aclose(self) -> None:
        self._closing = True
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            with anyio.move_on_after(5):
                await self._process.wait()
            if self._process.returncode is None:
                self._process.kill()

    async def _supervise(self) -> None:
        backoff = 0.25
        while not self._closing:
            try:
                await self._run_once()
                backoff = 0.25
            except Exception as exc:
                self.last_exit = f"{type(exc).__name__}: {exc}"
                logger.warning("Upstream %s failed: %s", self.name, self.last_exit)
            self._ready = anyio.Event()
            self._fail_pending(self.last_exit or "the server process exited")
            if self._closing:
                return
            self.restarts += 1
            logger.warning("Restarting upstream %s in %.2fs", self.name, backoff)
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    async def _run_once(self) -> None:
        process = await anyio.open_process(self._command, env=self._env, cwd=self._cwd)
        self._process = process
        self._output_lost = False
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._drain_stderr, process)
                tg.start_soon(self._read, process)
                with anyio.fail_after(INITIALIZE_TIMEOUT):
                    await self._initialize()
                self._ready.set()
                logger.info("Upstream %s is ready (pid %s)", self.name, process.pid)
                code = await process.wait()
                if self._output_lost:
                    self.last_exit = "the server process closed its output"
                else:
                    self.last_exit = f"the server process exited with code {code}"
                tg.cancel_scope.cancel()
        finally:
            if process.returncode is None:
                process.kill()
            with anyio.CancelScope(shield=True):
                await process.aclose()

    async def _drain_stderr(self, process: Process) -> None:
        if process.stderr is None:
            return
        stream = BufferedByteReceiveStream(process.stderr)
        while True:
            try:
                line = await stream.receive_until(b"\n", MAX_LINE)
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.DelimiterNotFound, anyio.ClosedResourceError):
                return
            logger.info("[%s] %s", self.name, line.decode(errors="replace").rstrip())

    async def _read(self, process: Process) -> None:
        if process.stdout is None:
            return
        stream = BufferedByteReceiveStream(process.stdout)
        while True:
            try:
                line = await stream.receive_until(b"\n", MAX_LINE)
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.ClosedResourceError):
                await self._output_closed(process)
                return
            except anyio.DelimiterNotFound:
                logger.error("Upstream %s wrote a line over %d bytes; restarting it", self.name, MAX_LINE)
                process.kill()
                return
            if not line.strip():
                continue
            try:
                message = json.loads(line)
            except ValueError:
                logger.warning("Upstream %s wrote a line that is not JSON: %.200r", self.name, line)
                continue
            if isinstance(message, dict):
                await self._dispatch(message)

    async def _output_closed(self, process: Process) -> None:
        """The child closed its stdout: it usually exits next; one that lives on can answer nothing, so restart it."""
        with anyio.move_on_after(1.0):
            await process.wait()
        if process.returncode is None:
            self._output_lost = True
            logger.warning("Upstream %s closed its output but kept running; restarting it", self.name)
            process.kill()

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

    async def _call(self, method: str, params: Message) -> Message:
        uid = next(self._ids)
        send, receive = anyio.create_memory_object_stream[Message](1)
        self._pending[uid] = Pending(downstream_id=uid, send=send)  # signoff's own: no owner, attributed to none
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

    async def _write(self, message: Message | bytes) -> None:
        """Send one message (or the line `_line` made of it) to the child."""
        process = self._process
        if process is None or process.stdin is None or process.returncode is not None:
            raise UpstreamUnavailable(self.name, self.last_exit or "the server process is not running")
        data = message if isinstance(message, bytes) else _line(message)
        async with self._write_lock:
            try:
                await process.stdin.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                raise UpstreamUnavailable(self.name, "the server process closed its input") from exc

    def _failure(self, pending: Pending, code: int, reason: str) -> Message:
        """The answer to a request the child will not answer: a tool error for a tool call, else a JSON-RPC error."""
        detail = str(UpstreamFailed(self.name, reason))
        if pending.tool is not None:  # a tool error the model can read and act on
            result = upstream_failure(self.name, pending.tool, detail)
            return {"jsonrpc": "2.0", "id": pending.downstream_id, "result": result}
        return _error(pending.downstream_id, code, detail)

    def _fail_pending(self, reason: str) -> None:
        for pending in list(self._pending.values()):
            _deliver(pending.send, self._failure(pending, -32000, reason))
            pending.send.close()
        self._pending.clear()
        self._asked.clear()  # the child that asked is gone; a client's late answer must not reach the next one
        self._elicitations.clear()

    # -- messages from the child -------------------------------------------------------------------
    # -- messages from the child -------------------------------------------------------------------

    async def _dispatch(self, message: Message) -> None:
        method = message.get("method")
        if method is None:
            uid = message.get("id")
            pending = self._pending.pop(uid, None) if isinstance(uid, int) else None
            if pending is not None:  # answered: no longer in flight, and nothing more is for it
                _deliver(pending.send, {**message, "id": pending.downstream_id})
                pending.send.close()
            return
        if "id" in message:
            await self._answer_child_request(message)
            return
        params = params_of(message)
        if method == "notifications/progress":
            # signoff rewrote each request's progress token to its own upstream id
            token = params.get("progressToken")
            pending = self._pending.get(token) if isinstance(token, int) else None
            if pending is not None and pending.progress_token is not None and pending.owner is not None:
                forwarded = {**message, "params": {**params, "progressToken": pending.progress_token}}
                self._to_request(pending, forwarded)
        elif method == "notifications/cancelled":  # the child gave up on a request it sent a client
            asked = params.get("requestId")
            owner = self._asked.pop(asked, None) if isinstance(asked, str | int) else None
            if owner is not None:
                self._to_owner(owner, message)
        elif method == "notifications/resources/updated":
            for session in self._sessions.values():
                if params.get("uri") in session.subscriptions:
                    _broadcast(session, message)
        elif method.endswith("/list_changed"):
            for session in self._sessions.values():
                _broadcast(session, message)
        elif method == "notifications/elicitation/complete":  # ends a URL elicitation: for the session asked
            owner = self._elicitations.pop(str(params.get("elicitationId")), None)
            if owner is not None:
                self._to_owner(owner, message)
        else:  # a log message, or one the protocol does not place: for the request in flight, or for everyone
            self._attributed(message, params.get("level") if method == "notifications/message" else None)

    def _attributed(self, message: Message, level: Any) -> None:
        owner, busy = the_one(pending.owner for pending in self._pending.values())
        if owner is not None:
            self._to_owner(owner, message, level)
        elif not busy:
            for session in self._sessions.values():
                if level is None or session.wants(level):
                    _broadcast(session, message)
        else:
            self.unattributed += 1
            logger.debug("Upstream %s: %s while several sessions wait; sent to none", self.name, message.get("method"))

    def _to_owner(self, owner: str, message: Message, level: Any = None) -> bool:
        """Send `message` to `owner`: on the stream of a request of its in flight, else its GET streams."""
        session = self._sessions.get(owner)
        if level is not None and session is not None and not session.wants(level):
            return False
        for pending in self._pending.values():
            if pending.owner == owner:
                if level is not None and session is None and level not in pending.levels:
                    return False
                if pending.streams:
                    _deliver(pending.send, message)
                    return True
        return session is not None and _broadcast(session, message)

    def _to_request(self, pending: Pending, message: Message) -> None:
        if pending.streams:
            _deliver(pending.send, message)
        elif (session := self._sessions.get(pending.owner or "")) is not None:
            _broadcast(session, message)

    async def _answer_child_request(self, message: Message) -> None:
        method, request_id = message.get("method"), message["id"]
        if method == "ping":
            await self._write({"jsonrpc": "2.0", "id": request_id, "result": {}})
        elif method == "roots/list":
            await self._write({"jsonrpc": "2.0", "id": request_id, "result": {"roots": []}})
        elif method in RELAYED_REQUESTS:
            problem = self._relay(message)
            if problem is not None:
                logger.info("Upstream %s asked for %s; refused: %s", self.name, method, problem)
                await self._write(_error(request_id, INVALID_REQUEST, f"signoff cannot relay {method}: {problem}"))
        else:
            await self._write(_error(request_id, METHOD_NOT_FOUND, "signoff does not relay this request to clients"))

    def _relay(self, message: Message) -> str | None:
        """Send a server-to-client request to the session whose request caused it; why not, if it cannot."""
        request_id = message["id"]
        if not isinstance(request_id, str | int) or request_id in self._asked:
            return "its id is not a string or number, or is already in use"
        owner, busy = the_one(pending.owner for pending in self._pending.values())
        if owner is None:
            return "requests of several sessions are in flight" if busy else "no client request is in flight"
        problem = refusal(self._sessions.get(owner), message)
        if problem is not None:
            return problem
        self._asked[request_id] = owner
        if not self._to_owner(owner, message):
            del self._asked[request_id]
            return "the client has no open stream to carry it"
        elicitation = params_of(message).get("elicitationId")
        if isinstance(elicitation, str) and len(self._elicitations) < MAX_ELICITATIONS:
            self._elicitations[elicitation] = owner
        return None

    # -- downstream ------------------------------------------------------------------------------

    def owner(self, session_id: str) -> str | None:
        session = self._sessions.get(session_id)
        return session.identity if session else None

    async def post(self, body: bytes, message: Message, headers: Mapping[str, str], identity: str) -> Reply:
        version = headers.get("mcp-protocol-version", "")
        modern = version in MODERN_PROTOCOL_VERSIONS
        method = message.get("method")
        session_id = headers.get("mcp-session-id")
        if method is None or "id" not in message:
            if method is None and not modern:
                await self._answer_from_client(message, session_id)
            elif method is not None and method != "notifications/initialized" and not modern:
                await self.wait_ready(self._request_timeout)
                forwarded = self._renumbered_notification(message, session_id)
                if forwarded is not None:
                    try:
                        await self._write(forwarded)
                    except Unsendable as exc:
                        return json_reply(_error(None, INVALID_PARAMS, f"Invalid params: {exc}"), 400)
            return Reply(status=202, headers=[])
        if method == "initialize":
            return await self._initialize_session(message, identity)
        session = None
        if not modern:
            if session_id is None:
                return json_reply(_error(message["id"], -32600, "Bad Request: Missing Mcp-Session-Id"), 400)
            session = self._sessions.get(session_id)
            if session is None:
                return json_reply(_error(message["id"], -32001, "Session not found"), 404)
        await self.wait_ready(self._request_timeout)
        if method == "server/discover":
            return json_reply({"jsonrpc": "2.0", "id": message["id"], "result": self._discover_result()})
        if session is not None and session_id is not None:
            local = self._session_request(session_id, session, message)
            if isinstance(local, Reply):
                return local
            message = local
        owner = session_id if session is not None else None  # a 2026-07-28 request has no session
        return await self._request(message, headers, method if modern else None, owner)

    def _session_request(self, session_id: str, session: DownstreamSession, message: Message) -> Message | Reply:
        """Keep what a session asked for: its log level, its subscriptions. The child serves them all at once."""
        method, params = message.get("method"), message.get("params")
        if not isinstance(params, dict):
            return message
        if method == "logging/setLevel" and params.get("level") in LEVELS:
            session.level = params["level"]
            level = most_verbose(other.level for other in self._sessions.values())
            return {**message, "params": {**params, "level": level}}
        uri = params.get("uri")
        if method not in ("resources/subscribe", "resources/unsubscribe") or not isinstance(uri, str):
            return message
        others = any(uri in other.subscriptions for sid, other in self._sessions.items() if sid != session_id)
        if method == "resources/subscribe":
            session.subscriptions.add(uri)
        else:
            session.subscriptions.discard(uri)
        if others:  # the child's subscription stays as it is, for the other sessions
            return json_reply({"jsonrpc": "2.0", "id": message["id"], "result": {}})
        return message

    async def _answer_from_client(self, message: Message, session_id: str | None) -> None:
        """A client's answer to a request the child sent: only the session it was sent to may give it."""
        request_id = message.get("id")
        if not isinstance(request_id, str | int) or session_id is None or self._asked.get(request_id) != session_id:
            return
        del self._asked[request_id]
        answer: Message = {key: message[key] for key in ("jsonrpc", "id", "result", "error") if key in message}
        with contextlib.suppress(Unsendable, UpstreamUnavailable):
            await self._write(answer)

    def _renumbered_notification(self, message: Message, session_id: str | None) -> Message | None:
        """What reaches the child of a client's notification: a cancel only for a request of that session's."""
        if message.get("method") != "notifications/cancelled":
            return message
        params = message.get("params") or {}
        for uid, pending in self._pending.items():
            if pending.owner == session_id and pending.downstream_id == params.get("requestId"):
                del self._pending[uid]  # answered now, so a late answer is ignored and no later cancel hits it
                _deliver(pending.send, _error(pending.downstream_id, REQUEST_CANCELLED, "Request cancelled"))
                pending.send.close()
                return {**message, "params": {**params, "requestId": uid}}
        return None  # no request of this session's: its id means nothing to the child, or another session's call

    def _discover_result(self) -> Message:
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
        return result

    async def _initialize_session(self, message: Message, identity: str) -> Reply:
        await self.wait_ready(self._request_timeout)
        init = dict(self._init_result or {})
        params = params_of(message)
        requested = params.get("protocolVersion")
        if requested in HANDSHAKE_PROTOCOL_VERSIONS:
            init["protocolVersion"] = requested
        capabilities = params.get("capabilities")
        session_id = uuid.uuid4().hex
        self._sessions[session_id] = DownstreamSession(
            identity=identity, capabilities=capabilities if isinstance(capabilities, dict) else {}
        )
        return json_reply(
            {"jsonrpc": "2.0", "id": message["id"], "result": init}, headers=[("mcp-session-id", session_id)]
        )

    async def _request(
        self, message: Message, headers: Mapping[str, str], modern: str | None, session_id: str | None
    ) -> Reply:
        """Forward one request; `modern` is its method when the client speaks 2026-07-28."""
        params = message.get("params")
        meta = params.get("_meta", {}) if isinstance(params, dict) else {}
        if not isinstance(meta, dict):
            problem = _error(message["id"], INVALID_PARAMS, "Invalid params: params._meta must be an object")
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
        )
        if session_id is None:
            pending.levels = modern_levels(meta, LOG_LEVEL_META_KEY)
        forwarded = {**message, "id": uid}
        if isinstance(params, dict) and "_meta" in params:
            meta = {k: v for k, v in meta.items() if k not in ENVELOPE_KEYS}
            if token is not None:
                meta["progressToken"] = uid
            forwarded["params"] = {**params, "_meta": meta}
        try:
            line = _line(forwarded)
        except Unsendable as exc:  # the child would drop it unanswered, and the call would wait out the timeout
            send.close()
            receive.close()
            return json_reply(_error(message["id"], INVALID_PARAMS, f"Invalid params: {exc}"), 400 if modern else 200)
        self._pending[uid] = pending
        try:
            await self._write(line)
        except UpstreamUnavailable:
            self._forget(uid)
            raise
        deadline = anyio.current_time() + self._request_timeout
        if not pending.streams:
            with receive:
                final = await self._next(uid, pending, receive, deadline, final_only=True)
            return json_reply(self._finish(final, modern))
        first = None
        if token is None:  # an event stream only if something comes before the answer (a log, a sampling request)
            first = await self._next(uid, pending, receive, deadline, final_only=False)
            if "method" not in first:
                receive.close()
                return json_reply(self._finish(first, modern))

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
                yield _sse(first)
            while True:
                item = await self._next(uid, pending, receive, deadline, final_only=False)
                if "method" in item:
                    yield _sse(item)
                    continue
                yield _sse(self._finish(item, modern))
                return

    async def _abandon(self, uid: int, reason: str) -> None:
        """Stop waiting for request `uid`; if the child still owes its answer, tell the child to stop."""
        pending = self._pending.pop(uid, None)
        if pending is None:
            return
        pending.send.close()
        with anyio.move_on_after(5, shield=True):
            await self._cancel(uid, reason)

    async def _cancel(self, uid: int, reason: str) -> None:
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": uid, "reason": reason}}
        with contextlib.suppress(UpstreamUnavailable):
            await self._write(cancel)

    def _forget(self, uid: int) -> None:
        pending = self._pending.pop(uid, None)
        if pending is not None:
            pending.send.close()

    @staticmethod
    def _finish(message: Message, modern: str | None) -> Message:
        """Give a handshake-era result the fields a 2026-07-28 client requires."""
        if modern is None or not isinstance(message.get("result"), dict):
            return message
        result = {"resultType": "complete", **message["result"]}
        if modern in CACHEABLE_METHODS:
            result = {"ttlMs": 0, "cacheScope": "private", **result}
        return {**message, "result": result}

    async def get(self, headers: Mapping[str, str], identity: str) -> Reply:
        session = self._sessions.get(headers.get("mcp-session-id", ""))
        if session is None:
            return json_reply(_error(None, -32001, "Session not found"), 404)
        send, receive = anyio.create_memory_object_stream[Message](math.inf)
        session.listeners.append(send)

        async def events() -> AsyncIterator[bytes]:
            async with receive:
                async for item in receive:
                    yield _sse(item)

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

    async def delete(self, headers: Mapping[str, str], identity: str) -> Reply:
        session_id = headers.get("mcp-session-id", "")
        session = self._sessions.pop(session_id, None)
        if session is None:
            return json_reply(_error(None, -32001, "Session not found"), 404)
        for listener in session.listeners:
            listener.close()
        for uid in [uid for uid, pending in self._pending.items() if pending.owner == session_id]:
            await self._abandon(uid, "the client ended its session")
        for request_id in [request_id for request_id, owner in self._asked.items() if owner == session_id]:
            del self._asked[request_id]
            with contextlib.suppress(UpstreamUnavailable):
                await self._write(_error(request_id, INVALID_REQUEST, "the client ended its session"))
        for elicitation in [key for key, owner in self._elicitations.items() if owner == session_id]:
            del self._elicitations[elicitation]
        wanted = set().union(*(other.subscriptions for other in self._sessions.values()))
        for uri in sorted(session.subscriptions - wanted):  # nobody else wants it: the child may stop watching
            with anyio.move_on_after(5), contextlib.suppress(UpstreamUnavailable):
                await self._call("resources/unsubscribe", {"uri": uri})
        return Reply(status=200, headers=[])


def _broadcast(session: DownstreamSession, message: Message) -> bool:
    for listener in session.listeners:
        _deliver(listener, message)
    return bool(session.listeners)
