"""Fixed-window rate-limit counters, in memory, and the words that describe a limit.

Windows are aligned to multiples of the window length since the epoch, so every process agrees on where a window
starts. Only the current window is kept per key. Not thread-safe: the gateway runs on one event loop.
"""

import math
from collections.abc import Sequence

from policies.model import Limit, Scope, ToolCall

Key = tuple[str, ...]


def limit_key(call: ToolCall, limit: Limit, counters: str = "") -> Key:
    """Return the counter key for a call: grant is per server and identity, agent per identity, global shared.

    `counters` is the policy's budget (`Policy.counters`): keys of different budgets never meet.
    """
    window = repr(limit.window_seconds)
    if limit.scope is Scope.GRANT:
        key: Key = ("grant", call.server, call.identity, limit.counter, window)
    elif limit.scope is Scope.AGENT:
        key = ("agent", call.identity, limit.counter, window)
    else:
        key = ("global", limit.counter, window)
    return (counters, *key) if counters else key


class RateLimiter:
    """In-memory fixed-window counters shared by every policy of one gateway process.

    Tools whose limits name the same counter (with the same window and scope) share one budget.
    """

    __slots__ = ("_windows",)

    def __init__(self) -> None:
        # key -> (index of the current window, calls counted in it)
        self._windows: dict[Key, tuple[int, int]] = {}

    def try_acquire(
        self, call: ToolCall, limits: Sequence[tuple[str, Limit]], now: float, counters: str = ""
    ) -> tuple[str, Limit, float] | None:
        """Count one call against every limit, but only if all of them have room.

        Args:
            call: The call being counted.
            limits: `(locator, limit)` pairs, e.g. `("tools[\"x\"].limits[0]", Limit(...))`.
            now: Seconds since the epoch.
            counters: The policy's budget (`Policy.counters`).

        Returns:
            None when the call was counted; otherwise the first exhausted limit's locator, the limit, and the
            seconds until its window rolls over. Nothing is counted in that case.
        """
        if not limits:
            return None
        planned: dict[Key, int] = {}
        for locator, limit in limits:
            key = limit_key(call, limit, counters)
            index = math.floor(now / limit.window_seconds)
            if key in planned:
                continue  # the same counter named twice counts once
            current, used = self._windows.get(key, (index, 0))
            if current != index:
                used = 0
            if used + 1 > limit.max:
                retry_after = (index + 1) * limit.window_seconds - now
                return locator, limit, retry_after
            planned[key] = index
        for key, index in planned.items():
            current, used = self._windows.get(key, (index, 0))
            self._windows[key] = (index, used + 1 if current == index else 1)
        return None

    def remaining(self, call: ToolCall, limit: Limit, now: float, counters: str = "") -> int:
        """Return how many more calls `limit` allows in the current window of budget `counters`."""
        current, used = self._windows.get(limit_key(call, limit, counters), (-1, 0))
        if current != math.floor(now / limit.window_seconds):
            used = 0
        return max(limit.max - used, 0)

    def prune(self, now: float) -> None:
        """Forget counters whose window has ended, so memory stays bounded by the keys active now."""
        # The last element of every key is the window length (see limit_key).
        stale = [k for k, (index, _) in self._windows.items() if (index + 1) * float(k[-1]) <= now]
        for key in stale:
            del self._windows[key]

    @property
    def key_count(self) -> int:
        """How many counters are held (one per key with calls in its current or a past window)."""
        return len(self._windows)


_WINDOW_WORDS = {1.0: "second", 60.0: "minute", 3600.0: "hour", 86400.0: "day"}
_SCOPE_WORDS = {
    Scope.GRANT: "per agent on this server",
    Scope.AGENT: "per agent across all servers",
    Scope.GLOBAL: "for all agents together",
}


def describe_window(seconds: float) -> str:
    """Say `minute` for 60, `90 seconds` for 90."""
    word = _WINDOW_WORDS.get(float(seconds))
    if word:
        return word
    shown = int(seconds) if float(seconds).is_integer() else seconds
    return f"{shown} seconds"


def format_seconds(seconds: float) -> str:
    """Render a wait as `12s`, `3m 5s` or `2h 1m`, rounding up to a whole second."""
    total = max(math.ceil(seconds), 1) if seconds > 0 else 0
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m" if minutes else f"{hours}h"


def describe_limit(limit: Limit, retry_after: float) -> str:
    """Explain a refusal, e.g. `counter "x" allows 10 calls per minute per agent on this server; retry in 12s`."""
    calls = "call" if limit.max == 1 else "calls"
    return (
        f'counter "{limit.counter}" allows {limit.max} {calls} per {describe_window(limit.window_seconds)} '
        f"{_SCOPE_WORDS[limit.scope]}; retry in {format_seconds(retry_after)}"
    )
