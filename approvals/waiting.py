"""Waking the tool calls held for a decision, in this process, the moment the decision commits.

The database row is the truth; this is only the bell. A decision taken by another process is noticed by
the gateway's poll of watched requests, which rings the same bell.
"""

from uuid import UUID

import anyio


class DecisionWaiter:
    """One event per watched request; every call waiting on it wakes when `notify` rings."""

    def __init__(self) -> None:
        self._events: dict[UUID, anyio.Event] = {}
        self._waiting: dict[UUID, int] = {}

    def notify(self, request_id: UUID) -> None:
        """Wake everything waiting on `request_id` (a decision, an expiry, a withdrawal committed)."""
        event = self._events.pop(request_id, None)
        if event is not None:
            event.set()

    async def wait(self, request_id: UUID, within: float) -> bool:
        """Wait up to `within` seconds for `notify(request_id)`; True if it rang."""
        event = self._events.get(request_id)
        if event is None:
            event = self._events[request_id] = anyio.Event()
        self._waiting[request_id] = self._waiting.get(request_id, 0) + 1
        try:
            with anyio.move_on_after(within):
                await event.wait()
            return event.is_set()
        finally:
            left = self._waiting[request_id] - 1
            if left:
                self._waiting[request_id] = left
            else:
                del self._waiting[request_id]
                if self._events.get(request_id) is event:
                    del self._events[request_id]

    def watched(self) -> list[UUID]:
        """The requests some call is waiting on now."""
        return list(self._waiting)
