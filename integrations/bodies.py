"""Request bodies at the edge: bounded in size while they stream and in the time they take, then decoded.

`bounded(scope, receive, ...)` wraps an ASGI `receive` so that no route reads more than its limit or waits
longer than `body_timeout` for a body: it raises `BodyTooLarge` or `BodyTooSlow` (Starlette HTTP exceptions
that `app.py` answers as 413 and 408) the moment either is passed, never buffering past the limit.
`json_object` turns a body into the object adapters read, or a 400's message. This module
never answers a request itself and knows nothing of the routes behind it beyond their paths.
"""

import json
import time
from collections.abc import Callable
from typing import Any

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Message, Receive, Scope

__all__ = [
    "DRAIN_LIMIT",
    "FORM_LIMIT",
    "JSON_LIMIT",
    "SLACK_LIMIT",
    "BodyRefused",
    "BodyTooLarge",
    "BodyTooSlow",
    "bounded",
    "drain",
    "json_object",
    "limit_for",
]

SLACK_LIMIT = 1024 * 1024  # what Slack itself may send to /slack/events
JSON_LIMIT = 64 * 1024  # /api bodies: a reason of 2,000 characters, even all \uXXXX escapes, and a grant
FORM_LIMIT = 64 * 1024  # the web page's forms: a sign-in, a reason
DRAIN_LIMIT = 16 * 1024 * 1024  # the most of a refused body read (and dropped) so that its client reads the 413
DRAIN_TIME = 2.0  # seconds spent at most on that


def limit_for(path: str) -> int:
    """The most bytes a body to `path` may have (the MCP endpoint has its own: `[gateway] max_body_bytes`)."""
    if path == "/slack/events":
        return SLACK_LIMIT
    if path.startswith("/api/"):
        return JSON_LIMIT
    return FORM_LIMIT


class BodyRefused(HTTPException):
    """Raised when a request body may not be read any further; its status and detail are the answer."""


class BodyTooLarge(BodyRefused):
    """Raised when a request body, declared or received so far, is larger than its route accepts."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than this route accepts ({limit} bytes)")
        self.limit = limit


class BodyTooSlow(BodyRefused):
    """Raised when a request body has not fully arrived `timeout` seconds after its request began."""

    def __init__(self, timeout: float) -> None:
        super().__init__(408, f"The request body did not arrive within {timeout:g} s: send it all at once")
        self.timeout = timeout


def bounded(
    scope: Scope, receive: Receive, *, limit: int, timeout: float, clock: Callable[[], float] = time.monotonic
) -> Receive:
    """`receive`, except that a body past `limit` bytes or still arriving `timeout` s from now raises instead.

    Once the body is complete, or the client gone, messages pass untouched: apps also call `receive` to learn of a
    disconnect while they stream a response, and that wait has no bound.
    """
    declared = _declared_length(scope)
    deadline = clock() + timeout
    received = 0
    done = False

    async def wrapped() -> Message:
        nonlocal received, done
        if done:
            return await receive()
        if declared is not None and declared > limit:
            if declared <= DRAIN_LIMIT:
                await drain(receive)
            raise BodyTooLarge(limit)
        try:
            with anyio.fail_after(max(deadline - clock(), 0)):
                message = await receive()
        except TimeoutError:
            raise BodyTooSlow(timeout) from None
        if message["type"] != "http.request":
            done = True
            return message
        received += len(message.get("body", b""))
        done = not message.get("more_body", False)
        if received > limit:
            if not done:
                await drain(receive)
            raise BodyTooLarge(limit)
        return message

    return wrapped


async def drain(receive: Receive, *, most: int = DRAIN_LIMIT, seconds: float = DRAIN_TIME) -> bool:
    """Read and drop the rest of a refused body, up to `most` bytes or `seconds`; True if it ended.

    A server that answers 413 and closes while the client is still sending leaves unread bytes in its socket, and
    closing such a socket sends a reset that can destroy the 413 before the client reads it (RFC 9112 section
    9.6: a server "SHOULD" keep reading for a while before it closes, which nginx calls a lingering close). A client
    that sends more than `most`, or for longer, is cut off: it may see the reset, and nothing more is read from it.
    """
    dropped = 0
    with anyio.move_on_after(seconds):
        while dropped <= most:
            message = await receive()
            if message["type"] != "http.request":
                return False
            dropped += len(message.get("body", b""))
            if not message.get("more_body", False):
                return True
    return False


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            # ASCII digits only ("²".isdigit() is true), and short: a 5,000-digit header is not a length to convert.
            return int(value) if value.isdigit() and len(value) <= 18 else None
    return None


async def json_object(request: Request, example: str = '{"reason": "..."}') -> dict[str, Any] | str:
    """The body as a JSON object (an empty body is `{}`), or the message of the 400 that says why it is not one."""
    body = await request.body()
    if not body.strip():
        return {}
    try:
        payload = json.loads(body)
    except RecursionError:
        return "The body's JSON is nested too deeply"
    except ValueError as exc:  # UnicodeDecodeError too: the bytes are not UTF-8
        return f"The body is not valid JSON ({exc})"
    if not isinstance(payload, dict):
        return f"The body must be a JSON object like {example}, not {_kind(payload)}"
    return payload


def _kind(value: Any) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return kinds.get(type(value), "null")
