"""Waking the tool calls held for a decision, in this process, the moment the decision commits.

The database row is the truth; this is only the bell. A decision taken by another process is noticed by
the gateway's poll of new decisions, which rings the same bell.

Ten thousand calls may wait at once, so a wait costs one future and one timer handle, not an event and a
cancel scope: at that scale the difference is tens of megabytes.
"""

import asyncio
from uuid import UUID


def _ring(waiter: "asyncio.Future[bool]", rang: bool) -> None:
    if not waiter.done():
        waiter.set_result(rang)


class DecisionWaiter:
    """The calls waiting on each request; `notify` wakes all of a request's waiters at once."""

    def __init__(self) -> None:
        self._waiting: dict[UUID, list[asyncio.Future[bool]]] = {}
        # Every ring, waited for or not: a caller between two waits tells from it that it may have missed one.
        self.rings = 0

    def notify(self, request_id: UUID) -> None:
        """Wake everything waiting on `request_id` (a decision, an expiry, a withdrawal committed)."""
        self.rings += 1
        for waiter in self._waiting.pop(request_id, ()):
            _ring(waiter, True)

    async def wait(self, request_id: UUID, within: float) -> bool:
        """Wait up to `within` seconds for `notify(request_id)`; True if it rang."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        waiters = self._waiting.setdefault(request_id, [])
        waiters.append(waiter)
        timer = loop.call_later(max(within, 0.0), _ring, waiter, False)
        try:
            return await waiter
        finally:
            timer.cancel()
            if self._waiting.get(request_id) is waiters:
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters:
                    del self._waiting[request_id]
