"""`Deadline`: give up what the current task awaits after some seconds, at a fraction of a cancel scope's cost.

The gateway bounds every request's body read (a body that trickles must not hold a request). An anyio cancel
scope costs ~8 µs of CPU to enter and leave, `asyncio.timeout` as much; one timer handle on the loop, which
cancels the task if it fires and takes that cancellation back (`uncancel`), costs about half. Both are paid by
every call, so the hot path takes the cheaper; anything that nests scopes or shields keeps anyio's.
"""

import asyncio
from types import TracebackType


class Deadline:
    """`with Deadline(seconds) as d: await ...`: the await is cancelled after `seconds`, the block is left
    quietly, and `d.expired` is True. A cancellation from elsewhere (shutdown, a client gone) still propagates.

    Only for a block that awaits one thing and shields nothing: the cancellation lands wherever the task waits.
    """

    __slots__ = ("_seconds", "_task", "_timer", "expired")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self.expired = False

    def __enter__(self) -> "Deadline":
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadline needs a running task")
        self._task = task
        self._timer = asyncio.get_running_loop().call_later(self._seconds, self._expire)
        return self

    def _expire(self) -> None:
        self.expired = True
        self._task.cancel()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> bool:
        self._timer.cancel()
        if not self.expired:
            return False
        # Ours, taken back; swallowed only when no other cancellation is pending (as asyncio.timeout does).
        return self._task.uncancel() == 0 and kind is asyncio.CancelledError
