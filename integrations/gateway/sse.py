"""Server-sent events as the Streamable HTTP transport frames them: parse, inspect, rewrite one message.

The gateway streams upstream events through unchanged except the one event that answers the request
it is watching (a `tools/list` to filter, a `tools/call` to audit).
"""

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

Message = dict[str, Any]
Rewrite = Callable[[Message], Message | None]


def _split_lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines (without their endings) and the incomplete rest; accepts \\r\\n, \\n and \\r."""
    lines: list[bytes] = []
    start = 0
    i = 0
    size = len(buffer)
    while i < size:
        ch = buffer[i]
        if ch == 0x0A or ch == 0x0D:
            if ch == 0x0D and i + 1 == size:
                break  # a lone \r at the end may be half of \r\n
            lines.append(buffer[start:i])
            i += 2 if ch == 0x0D and buffer[i + 1] == 0x0A else 1
            start = i
        else:
            i += 1
    return lines, buffer[start:]


def _rewrite_event(lines: list[bytes], request_id: Any, rewrite: Rewrite) -> list[bytes]:
    data = [line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:")]
    if not data:
        return lines
    try:
        message = json.loads(b"\n".join(data))
    except ValueError:
        return lines
    if not isinstance(message, dict) or "method" in message or message.get("id") != request_id:
        return lines
    replaced = rewrite(message)
    if replaced is None:
        return lines
    kept = [line for line in lines if not line.startswith(b"data:")]
    return [*kept, b"data: " + json.dumps(replaced, separators=(",", ":")).encode()]


async def rewrite_events(chunks: AsyncIterator[bytes], request_id: Any, rewrite: Rewrite) -> AsyncIterator[bytes]:
    """Yield the SSE stream `chunks` event by event, passing the response to `request_id` through `rewrite`."""
    buffer = b""
    event: list[bytes] = []
    async for chunk in chunks:
        lines, buffer = _split_lines(buffer + chunk)
        out: list[bytes] = []
        for line in lines:
            if line:
                event.append(line)
                continue
            if event:
                out.extend(_rewrite_event(event, request_id, rewrite))
                event = []
            out.append(b"")
        if out:
            yield b"\n".join(out) + b"\n"
    tail = [*event, buffer] if buffer else event
    if tail:
        yield b"\n".join(_rewrite_event(tail, request_id, rewrite)) + b"\n\n"
