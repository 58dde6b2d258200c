"""Rate-limit arithmetic: the sliding log every limit is counted in, in memory, and the words that describe a limit.

A limit means "at most `max` calls in any span of `window` seconds". A sliding log keeps the time of each call a
limit admitted and counts those within the last `window` seconds, which is exact: no span of that length ever holds
more than `max`. Fixed windows aligned to the clock (what this was) let `2 * max` through across a boundary; GCRA,
the other common choice, admits a burst of `max` and then one call every `window / max`, so some window-long span
holds more than `max` too. The price of exactness is O(max) entries per key, bounded because an entry is added
only while the key has room. The gateway keeps the same log in a shared store (`integrations.limiting`); this one
serves `policy explain`, policy tests and replays, which must agree with it. Not thread-safe; pure.
"""

import math
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from policies.model import Limit, Scope, ToolCall

Key = tuple[str, ...]
Exhausted = tuple[str, Limit, float]  # the exhausted limit's locator, the limit, seconds until the call would fit


class Limiter(Protocol):
    """What evaluation needs of the counters it is handed: `RateLimiter`, or the gateway's `DeferredLimits`."""

    def try_acquire(
        self, call: ToolCall, limits: Sequence[tuple[str, Limit]], now: float, counters: str = ""
    ) -> Exhausted | None: ...

    def remaining(self, call: ToolCall, limit: Limit, now: float, counters: str = "") -> int: ...


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


def distinct_keys(
    call: ToolCall, limits: Sequence[tuple[str, Limit]], counters: str = ""
) -> list[tuple[Key, str, Limit]]:
    """Each limit's key with its locator, in order, the same counter named twice kept once (it counts once)."""
    seen: dict[Key, tuple[Key, str, Limit]] = {}
    for locator, limit in limits:
        key = limit_key(call, limit, counters)
        if key not in seen:
            seen[key] = (key, locator, limit)
    return list(seen.values())


def wait_for_room(times: Sequence[float], window: float, most: int, now: float) -> float:
    """Seconds until a log holding `times` (ascending, all within the window) has room for one more call.

    With `count` entries, `count - most + 1` of them must leave; the last of those, `times[count - most]`, leaves
    `window` seconds after it was admitted. 0 when there is room already.
    """
    count = len(times)
    if count < most:
        return 0.0
    return max(times[count - most] + window - now, 0.0)


class RateLimiter:
    """In-memory sliding logs shared by every policy of one process (explain, policy tests, replay).

    Tools whose limits name the same counter (with the same window and scope) share one budget. An entry at `at`
    counts while `now < at + window`.
    """

    __slots__ = ("_logs",)

    def __init__(self) -> None:
        # key -> the times of the calls admitted within the key's window, oldest first
        self._logs: dict[Key, deque[float]] = {}

    def _log(self, key: Key, window: float, now: float) -> deque[float]:
        log = self._logs.get(key)
        if log is None:
            return deque()
        while log and log[0] <= now - window:
            log.popleft()
        return log

    def try_acquire(
        self, call: ToolCall, limits: Sequence[tuple[str, Limit]], now: float, counters: str = ""
    ) -> Exhausted | None:
        """Count one call against every limit, but only if all of them have room.

        Args:
            call: The call being counted.
            limits: `(locator, limit)` pairs, e.g. `("tools[\"x\"].limits[0]", Limit(...))`.
            now: Seconds since the epoch.
            counters: The policy's budget (`Policy.counters`).

        Returns:
            None when the call was counted; otherwise the first exhausted limit's locator, the limit, and the
            seconds until the entry that must leave for the call to fit does leave. Nothing is counted then.
        """
        if not limits:
            return None
        planned = []
        for key, locator, limit in distinct_keys(call, limits, counters):
            log = self._log(key, limit.window_seconds, now)
            if len(log) >= limit.max:
                return locator, limit, wait_for_room(log, limit.window_seconds, limit.max, now)
            planned.append((key, log))
        for key, log in planned:
            log.append(now)
            self._logs[key] = log
        return None

    def remaining(self, call: ToolCall, limit: Limit, now: float, counters: str = "") -> int:
        """Return how many more calls `limit` allows now in budget `counters`."""
        log = self._logs.get(limit_key(call, limit, counters), ())
        used = sum(1 for at in log if at > now - limit.window_seconds)
        return max(limit.max - used, 0)

    def prune(self, now: float) -> None:
        """Forget keys whose every entry has left its window, so memory stays bounded by the keys active now."""
        # The last element of every key is the window length (see limit_key).
        stale = [k for k, log in self._logs.items() if not log or log[-1] + float(k[-1]) <= now]
        for key in stale:
            del self._logs[key]

    @property
    def key_count(self) -> int:
        """How many keys are held (one per key with a call admitted and not yet pruned)."""
        return len(self._logs)


class DeferredLimits:
    """A `Limiter` that admits every call and remembers the limits it was asked to count, and in which budget.

    The gateway evaluates with one, then counts what it recorded in the shared store, which is async and so cannot
    be called from `evaluate`: limits are the one check that needs I/O, and evaluation reaches them at most once,
    after every deny check and before approval or allow, so counting afterwards keeps the order (see
    `integrations.limiting`). A call that never reaches its limits leaves `limits` empty and touches no store.
    """

    __slots__ = ("counters", "limits")

    def __init__(self) -> None:
        self.limits: tuple[tuple[str, Limit], ...] = ()
        self.counters = ""

    def try_acquire(
        self, call: ToolCall, limits: Sequence[tuple[str, Limit]], now: float, counters: str = ""
    ) -> Exhausted | None:
        """Record `limits` and `counters`; admit the call (the store decides later)."""
        self.limits = tuple(limits)
        self.counters = counters
        return None

    def remaining(self, call: ToolCall, limit: Limit, now: float, counters: str = "") -> int:
        """Unknown here: the store holds the counts. Says `limit.max`."""
        return limit.max


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
