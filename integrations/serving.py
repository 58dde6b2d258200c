"""How `signoff serve` runs uvicorn's HTTP/1.1 server: each response leaves in one write where it can.

uvicorn writes a response's status line and headers with one `send` and its body with another. Over
loopback or a LAN each `send` is a syscall, a TCP segment and a wake-up of the reader, and the client reads
the head before the body arrives. Here the connection's transport holds what is written during one turn
of the event loop and sends it in one piece at the end of that turn, or once the response is complete: a
JSON reply (head and body are written in the same turn) goes out whole, at once; an event stream's events
still go out as they are written, at most one loop turn later. Closing sends what is held first; more than
64 KiB held is sent at once.
"""

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HOLD_AT_MOST = 64 * 1024


class CoalescingTransport:
    """Wraps a transport: writes made in one loop turn go out with one `write` (see the module's docstring)."""

    __slots__ = ("_held", "_held_bytes", "_loop", "_transport")

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes | bytearray | memoryview] | None = None
        self._held_bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if self._held is None:
            self._held = [data]
            self._held_bytes = len(data)
            self._loop.call_soon(self.flush)
        else:
            self._held.append(data)
            self._held_bytes += len(data)
        if self._held_bytes > _HOLD_AT_MOST:
            self.flush()

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Send what is held now (the loop calls this at the end of the turn anyway)."""
        held, self._held = self._held, None
        if not held or self._transport.is_closing():
            return
        self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        held = self._held_bytes if self._held else 0
        return int(self._transport.get_write_buffer_size()) + held

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (httptools is a dependency: its C parser) over a `CoalescingTransport`."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._coalescing = CoalescingTransport(transport, asyncio.get_running_loop())
        super().connection_made(cast(asyncio.Transport, self._coalescing))

    def on_response_complete(self) -> None:
        self._coalescing.flush()  # the whole response is written: it leaves now, not at the end of the loop's turn
        super().on_response_complete()


def http_protocol() -> str:
    """The HTTP protocol for `uvicorn.Config(http=...)`: httptools', coalescing.

    An import string, not the class: with `--workers N` uvicorn hands the config to each worker process, and
    the workers import it.
    """
    return f"{__name__}:CoalescingHttpToolsProtocol"
