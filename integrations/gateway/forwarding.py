"""Forwarding a decided call to its upstream and checking what comes back.

`send_call` sends one `tools/call` and reports its outcome exactly once (ok, a tool error, an upstream failure,
the agent gone); `checked` turns an answer that is no usable JSON-RPC response (a 5xx, another request's id,
an event stream that ends or breaks before the response and cannot be resumed) into the failure the caller
builds; `unless_gone` gives a request up, cancelling it upstream, when its client disconnects; `send_reply`
writes a reply to the ASGI client. The endpoint and the approval holding both send calls this way.
"""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import anyio
from opentelemetry.trace import Span
from starlette.types import Receive, Send

from integrations.errors import UpstreamFailed, UpstreamUnavailable
from integrations.gateway.refusals import META_KEY, for_revision, upstream_failure
from integrations.gateway.sse import Cursor, rewrite_events
from integrations.gateway.upstream import ENDED, Reply, Upstream, UpstreamRequest, json_reply
from integrations.gateway.wire import VERSION_HEADER, Message, sse_event
from integrations.telemetry import Telemetry, carrying

logger = logging.getLogger(__name__)

T = TypeVar("T")
LISTEN_AFTER = 0.05  # seconds a call runs before `unless_gone` listens for its client going away


@dataclass(slots=True, frozen=True)
class Outbound:
    """A decided `tools/call` on its way upstream; `message` None: parse `body` again when it is sent."""

    server: str
    tool: str
    upstream: Upstream
    body: bytes
    headers: Mapping[str, str]
    identity: str
    message: Message | None


async def send_call(
    out: Outbound,
    report: Callable[[str, str], None],
    rewrite: Callable[[Message], Message | None] | None = None,
    *,
    telemetry: Telemetry | None = None,
    parent: Span | None = None,
) -> Reply:
    """Forward a decided `tools/call` upstream and `report(outcome, detail)` exactly once.

    An answer that is not a usable JSON-RPC response (a 5xx, bytes that are not JSON, another id, a
    stream that ends or breaks first, a timeout) reaches the agent as a tool error naming the server.
    `rewrite`: what the upstream's response becomes for the agent (None from it: unchanged), as `checked` takes it.
    `telemetry` times the upstream's part; with tracing, a client span (a child of `parent`) covers it, and the
    request carries that span's trace context in `_meta`.
    """
    message = out.message if out.message is not None else json.loads(out.body)
    request_id = message["id"]
    reported = False
    started = time.perf_counter()
    span = telemetry.upstream_started(parent, out.server, out.tool) if telemetry is not None else None
    if span is not None:
        message, body = carrying(message, span)
        out = replace(out, body=body, message=message)

    def once(outcome: str, detail: str) -> None:
        nonlocal reported
        if not reported:
            reported = True
            if telemetry is not None:
                telemetry.upstream_done(span, out.server, outcome, time.perf_counter() - started)
            report(outcome, detail)

    def failed(detail: str, *, reached: bool = True) -> Message:
        error = UpstreamFailed(out.server, detail) if reached else UpstreamUnavailable(out.server, detail)
        once("upstream_failure" if reached else "upstream_unavailable", detail)
        result = upstream_failure(out.server, out.tool, str(error), reached=reached)
        return {"jsonrpc": "2.0", "id": request_id, "result": for_revision(result, out.headers.get(VERSION_HEADER))}

    def observe(response: Message) -> Message | None:
        once(*call_outcome(response))
        return rewrite(response) if rewrite is not None else None

    try:
        reply = await out.upstream.post(UpstreamRequest(out.headers, out.identity, out.body, message))
    except UpstreamUnavailable as exc:
        return json_reply(failed(exc.detail, reached=isinstance(exc, UpstreamFailed)))
    except anyio.get_cancelled_exc_class():
        once("error", "the agent went away before the answer came")
        raise
    return await checked(reply, request_id, observe, failed, failed_status=200, unanswered=lambda: once("error", ""))


async def unless_gone(receive: Receive | None, work: Awaitable[Reply]) -> Reply:
    """Await `work`, the forwarding of a request, but give it up if the client disconnects first.

    Giving up cancels the call upstream: a stdio child is sent `notifications/cancelled`, an HTTP upstream's
    request is closed. A call held for approval never comes here: it stays when its client goes (README).
    """
    if receive is None:
        return await work
    gone, reply = await _or_gone(receive, work)
    return Reply(status=499, headers=[]) if gone or reply is None else reply  # 499: nobody is left to read it


async def _or_gone(receive: Receive, work: Awaitable[T]) -> tuple[bool, T | None]:
    """`(False, what work returned)`, or `(True, None)` once the client disconnected and `work` was cancelled.

    One plain task listens for the disconnect and cancels this task, as `asyncio.timeout` does, and the
    cancellation it caused is taken back (`uncancel`) once it has ended the work: an anyio task group per call
    cost ~44 µs of CPU and an anyio cancel scope ~7 µs (each measured alone), against ~1 µs for this. The listener
    can only run while this task waits in `await work`, so the cancellation always lands there. It starts only
    once the work has taken `LISTEN_AFTER` seconds: most calls are answered sooner, and a task per call was a
    few percent of the gateway's CPU; a client gone sooner than that is noticed then.
    """
    task = asyncio.current_task()
    assert task is not None  # noqa: S101 - an ASGI request always runs in a task
    loop = asyncio.get_running_loop()
    gone = False
    listener: asyncio.Task[None] | None = None

    def cancel() -> None:
        nonlocal gone
        gone = True
        task.cancel()

    def listen() -> None:
        nonlocal listener
        listener = loop.create_task(_cancel_on_disconnect(receive, cancel))

    timer = loop.call_later(LISTEN_AFTER, listen)
    try:
        done = await work
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:  # ours alone (a shutdown's cancellation still propagates)
            return True, None
        raise
    finally:
        timer.cancel()
        if listener is not None:
            listener.cancel()
    if gone:  # the work swallowed the cancellation it was sent: take it back all the same
        task.uncancel()
    return False, done


def call_outcome(response: Message) -> tuple[str, str]:
    """How a `tools/call` went, for the audit log: ok, tool_error, error or one of signoff's own outcomes."""
    result = response.get("result")
    if isinstance(result, dict):
        outcome, detail = ("tool_error", _first_text(result)) if result.get("isError") else ("ok", "")
        ours = (result.get("_meta") or {}).get(META_KEY)
        if isinstance(ours, dict):
            outcome = str(ours.get("outcome", outcome))
        return outcome, detail
    error = response.get("error")
    return "error", str(error.get("message", "")) if isinstance(error, dict) else ""


def _first_text(result: Message) -> str:
    for block in result.get("content") or ():
        if isinstance(block, dict) and block.get("type") == "text":
            return str(block.get("text", ""))
    return ""


def unchanged(message: Message) -> None:
    return None


def _response_problem(message: Message) -> str | None:
    """Why `message`, which carries the request's id, is not a JSON-RPC response; None if it is one."""
    if isinstance(message.get("result"), dict) or isinstance(message.get("error"), dict):
        return None
    return "its answer has neither a result object nor an error object"


def _status_problem(reply: Reply) -> str:
    problem = f"it answered HTTP {reply.status}"
    try:
        error = json.loads(reply.body).get("error") if reply.content_type == "application/json" else None
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        problem += f" ({error['message'][:200]})"
    return problem


def _json_problem(reply: Reply, request_id: Any) -> tuple[str | None, Message | None]:
    """Why a non-streamed 2xx `reply` is not the response to `request_id`, or the response."""
    if reply.content_type != "application/json":
        what = f"a {reply.content_type} body" if reply.content_type else "no JSON body"
        return f"it answered HTTP {reply.status} with {what}, not a JSON-RPC response", None
    try:
        message = json.loads(reply.body)
    except (ValueError, RecursionError):
        return "its answer is not valid JSON", None
    if not isinstance(message, dict):
        return "its answer is not a JSON-RPC message", None
    if message.get("id") != request_id:
        return f"its answer is for request id {json.dumps(message.get('id'))[:40]}, not this request", None
    return _response_problem(message), message


async def checked(
    reply: Reply,
    request_id: Any,
    rewrite: Callable[[Message], Message | None],
    fail: Callable[[str], Message],
    *,
    failed_status: int = 502,
    unanswered: Callable[[], None] | None = None,
) -> Reply:
    """The upstream's `reply` to request `request_id`, whether JSON or an event stream, made safe to send.

    The response passes through `rewrite`. When the upstream gave no usable response (a 5xx, a body that is
    not the JSON-RPC response, an event stream that breaks or ends without it), the client gets `fail(detail)`
    instead: as the JSON body (with `failed_status`) or as the stream's last event. An event stream the upstream
    ends early is resumed first, if the reply can be (`Reply.resume`). `unanswered` is called when there is neither
    to report: a 3xx or 4xx passed through, or the client went away first.
    """
    if reply.status >= 500:
        await reply.close()
        if reply.stream is not None and (aclose := getattr(reply.stream, "aclose", None)) is not None:
            await aclose()
        return json_reply(fail(_status_problem(reply)), failed_status)
    if reply.stream is not None:
        return replace(reply, stream=_checked_events(reply.stream, reply.resume, request_id, rewrite, fail, unanswered))
    if reply.status >= 300:  # a redirect or a 4xx (a lost session, a refused header): for the client to act on
        if unanswered is not None:
            unanswered()
        return reply
    problem, message = _json_problem(reply, request_id)
    if problem is not None or message is None:
        return json_reply(fail(problem or "its answer is not a JSON-RPC response"), failed_status)
    replaced = rewrite(message)
    if replaced is not None:
        return replace(reply, body=json.dumps(replaced, separators=(",", ":")).encode())
    return reply


async def _checked_events(
    stream: AsyncIterator[bytes],
    resume: Callable[[Cursor], Awaitable[AsyncIterator[bytes]]] | None,
    request_id: Any,
    rewrite: Callable[[Message], Message | None],
    fail: Callable[[str], Message],
    unanswered: Callable[[], None] | None,
) -> AsyncIterator[bytes]:
    answered = False
    cursor = Cursor()
    first = stream

    def watch(message: Message) -> Message | None:
        nonlocal answered
        answered = True
        problem = _response_problem(message)
        return fail(problem) if problem is not None else rewrite(message)

    try:
        while True:
            try:
                async with aclosing(rewrite_events(stream, request_id, watch, cursor)) as events:
                    async for chunk in events:
                        yield chunk
                        if answered and stream is not first:  # a resumed stream may stay open (the SDK's does)
                            break
                if answered:
                    return
                if resume is None:
                    answered = True
                    yield sse_event(fail(ENDED))
                    return
                # The upstream ended the stream early (SEP-1699 polling): read on where it left off, until the answer.
                resumed = await resume(cursor)
            except UpstreamFailed as exc:
                if not answered:
                    answered = True
                    yield sse_event(fail(exc.detail))
                return
            if stream is not first:
                await _aclose(stream)
            stream = resumed
    finally:
        if stream is not first:  # the streams it opened are its own to close; the first is the reply's
            with anyio.CancelScope(shield=True):
                await _aclose(stream)
        if not answered and unanswered is not None:
            unanswered()


async def _aclose(stream: AsyncIterator[bytes]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


async def send_reply(reply: Reply, send: Send, receive: Receive) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
    if reply.stream is None:
        headers.append((b"content-length", str(len(reply.body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
        return
    headers.append((b"x-accel-buffering", b"no"))
    stream = reply.stream
    try:
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await _or_gone(receive, _relay(stream, send))  # a client gone: the stream is closed below
    except OSError:
        logger.debug("Client went away while streaming")
    finally:
        with anyio.CancelScope(shield=True):
            await reply.close()
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()


async def _relay(stream: AsyncIterator[bytes], send: Send) -> None:
    try:
        async for chunk in stream:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except UpstreamUnavailable:
        pass  # a stream no request waits on (GET) broke upstream; it ends here and the client may reconnect
    await send({"type": "http.response.body", "body": b""})


async def disconnected(receive: Receive) -> None:
    """Return once the client disconnects (the request's body has been read: nothing else comes)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _cancel_on_disconnect(receive: Receive, cancel: Callable[[], None]) -> None:
    """`cancel()` once the client disconnects (the request's body has been read: nothing else comes)."""
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except Exception:  # the server is done with the request: there is nothing to listen for, nor anyone to tell
        return
    cancel()
