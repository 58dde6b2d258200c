"""Write-behind: work queued by the request path and done, in order, by one background task.

The audit writer, the tool-pin writer and each webhook's deliveries all follow one pattern, and it lives here once:
`put()` returns at once (from the event loop or from a worker thread); one task takes the items in order, in
batches of up to `max_batch`, after waiting `gather` seconds for more to arrive, and hands them to `handle`, which
says how many it dealt with (the rest are offered again). `flush()` waits until everything put so far is dealt
with; `close()` does the same for at most `close_timeout` seconds and returns what is left, so shutdown is bounded.

`Backoff` and `retry_after` are the retry arithmetic every writer and notifier shares (the webhooks, Slack).

The failure rules of the hardening work are here too, so no writer needs its own: a `handle` that raises does not
end the task or lose the queue. The first item of the batch is set aside (kept in `set_aside`, logged with the
traceback, shown by `health()`), the rest go on. A `handle` that must retry (a database that is down, a receiver
that answers 503) does so inside itself and returns 0 while it waits, or sleeps: the queue stays in order.
"""

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Generic, TypeVar

import anyio

from integrations.supervision import Spawner

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["Backoff", "WriteBehind", "retry_after"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """The pause before retry number `attempt` (from 1): `first` seconds, doubling, never more than `most`."""

    first: float
    most: float

    def __post_init__(self) -> None:
        if self.first < 0 or self.most < self.first:
            raise ValueError(f"need 0 <= first <= most, not {self.first} and {self.most}")

    def delay(self, attempt: int, asked: float | None = None) -> float:
        """The pause; `asked`: what the other side said to wait (`Retry-After`), honoured up to `most`."""
        return min(self.first * 2 ** (attempt - 1) if asked is None else asked, self.most)


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` header: delay-seconds or an HTTP date (RFC 9110 section 10.2.3), read
    against the wall clock `now`; None when there is none or it is not one of the two."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


class WriteBehind(Generic[T]):
    """A queue of `T` that one background task hands, in order, to `handle(batch) -> how many were dealt with`."""

    def __init__(
        self,
        name: str,
        handle: Callable[[Sequence[T]], Awaitable[int]],
        *,
        max_batch: int = 1,
        gather: float = 0.0,
        close_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self._handle = handle
        self._max_batch = max_batch
        self._gather = gather
        self.close_timeout = close_timeout
        self._items: list[T] = []
        # asyncio's own events, not anyio's: signoff runs on asyncio, and an anyio event costs ten times as much
        # to make and wait on (~6 µs against ~0.6), which the audit writer paid on every call's commit.
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # uncontended, as it nearly always is: taken without a loop turn
        self._closing = False
        self._closed = False
        self._running = anyio.CancelScope()
        self._loop_thread: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waking = False  # a wake-up is scheduled (see `put`)
        self.handled = 0
        self.set_aside: list[tuple[T, str]] = []  # items `handle` raised on, with why; never retried
        self._progress = asyncio.Event()  # set, and replaced, each time items are dealt with (see `reached`)

    @property
    def queued(self) -> int:
        return len(self._items)

    @property
    def items(self) -> list[T]:
        """The items not yet dealt with, oldest first (the list itself: a writer may look, not change it)."""
        return self._items

    def put(self, item: T) -> None:
        """Queue `item`; returns at once and never raises. Call it from the event loop or from a worker thread."""
        self._items.append(item)  # one bytecode: safe from any thread under the GIL
        if self._loop is None:
            self._wake.set()
            return
        try:
            if threading.get_ident() != self._loop_thread:  # an asyncio event is not thread-safe: set it on the loop
                self._loop.call_soon_threadsafe(self._wake.set)
            elif not self._waking:  # woken after this turn of the loop: an item dealt with meanwhile costs nothing
                self._loop.call_soon(self._wake_if_queued)
                self._waking = True
        except RuntimeError:  # the loop is stopping; the item is queued and close() or flush() will see it
            logger.warning("%s: an item was queued while signoff is stopping", self.name)

    def _wake_if_queued(self) -> None:
        """Wake the writer's task if something is still queued: not for an item `handle_now` already dealt with
        (a sequential call's audit row), which would cost the writer two task steps for nothing."""
        self._waking = False
        if self._items:
            self._wake.set()

    def health(self) -> dict[str, Any]:
        return {
            "ok": not self.set_aside,
            "queued": self.queued,
            "handled": self.handled,
            "set_aside": len(self.set_aside),
        }

    async def flush(self) -> None:
        """Deal with every item queued so far (waits while `handle` waits, e.g. for a database that is down)."""
        async with self._lock:
            while self._items:
                batch = self._items[: self._max_batch]
                try:
                    done = await self._handle(batch)
                except Exception as exc:  # the writer's top-level handler: set the item aside, go on with the rest
                    logger.exception("%s: an item could not be handled and is set aside", self.name)
                    self.set_aside.append((batch[0], f"{type(exc).__name__}: {exc}"[:500]))
                    done = 1
                self._dealt_with(done)

    def handle_now(self, handle: Callable[[Sequence[T]], int]) -> None:
        """Deal with the first batch queued on the caller's own task, at once, with `handle` (which returns how
        many it dealt with), unless the writer's task is busy with it: then nothing happens.

        `handle` runs synchronously, so nothing can cancel it between writing and counting. A request that is
        alone in the gateway needs no hand-off to the writer's task and back (two loop turns and two task
        switches on its way to the answer); concurrent ones leave it to the writer, which groups them.
        """
        if self._items and not self._lock.locked():
            self._dealt_with(handle(self._items[: self._max_batch]))

    def _dealt_with(self, done: int) -> None:
        del self._items[:done]
        self.handled += done
        if done:
            self._progress.set()
            self._progress = asyncio.Event()

    @property
    def accepted(self) -> int:
        """How many items were ever put: the place of the last one, for `reached`. Read it on the event loop."""
        return self.handled + len(self._items)

    async def reached(self, place: int) -> bool:
        """Wait until the first `place` items were dealt with (written, or set aside); False if the queue closed
        first. Every waiter whose item was in one batch wakes on its one event: a group commit."""
        while self.handled < place:
            if self._closed:
                return False
            await self._progress.wait()
        return True

    async def run(self) -> None:
        self._loop_thread = threading.get_ident()
        self._loop = asyncio.get_running_loop()
        with self._running:
            while not self._closing:
                if not self._items:
                    await self._wake.wait()
                    await asyncio.sleep(self._gather)  # let more items arrive: one batch for many
                self._wake = asyncio.Event()  # before the flush: an item put from here on wakes the next round
                await self.flush()

    def start(self, spawner: Spawner) -> None:
        spawner.start_soon(self.run, name=self.name)

    async def close(self) -> list[T]:
        """Stop; deal with what is queued for at most `close_timeout` seconds. Returns what is left, oldest first,
        and lets go of it: the caller says what becomes of it (logged, counted as failed).

        When it returns, `handle` is not running and will not run again (so a writer may close its connection).
        """
        self._closing = True
        self._wake.set()
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self.close_timeout):
                await self.flush()
            self._running.cancel()
            with anyio.move_on_after(self.close_timeout):
                async with self._lock:  # a handle still running (a worker thread cannot be cancelled) ends first
                    pass
        left = list(self._items)
        self._items.clear()
        self._closed = True
        self._progress.set()  # whoever waits for an item that was not dealt with hears so
        return left
