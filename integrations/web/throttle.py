"""Slows down guessing approver tokens on the sign-in form: failed sign-ins are counted, per client and page-wide.

Only failures count, and a blocked attempt is refused before its token is looked at, so a guesser learns
nothing while blocked. Counts live in this process (each replica counts its own) and are kept only for the
window, so memory stays bounded: once the page-wide limit is reached no further failure is recorded.
This module knows nothing of HTTP; the sign-in route asks it and answers 429.
"""

import ipaddress
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

FAILURES_PER_CLIENT = 5
FAILURES_PER_PAGE = 100
WINDOW_SECONDS = 300.0
# How long a client that signed in successfully is exempt from the page-wide limit (a session's lifetime).
KNOWN_SECONDS = 12 * 3600.0


class Scope(StrEnum):
    """Whose failures caused a block: this client's, or everyone's together."""

    CLIENT = "client"
    PAGE = "page"


@dataclass(frozen=True, slots=True)
class Blocked:
    """Sign-in is refused for `retry_after` more seconds (whole, at least 1), because of `scope`'s failures."""

    scope: Scope
    retry_after: int


def client_key(host: str | None) -> str:
    """The unit failures are counted per: an IPv4 address, or an IPv6 /64 (one subscriber holds a whole /64)."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return host or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class SignInThrottle:
    """Counts failed sign-ins in a sliding window and says when a client must wait.

    A client is blocked after `per_client` failures within `window` seconds, until the oldest of them is
    `window` old. The page-wide limit (`per_page` failures from anyone) stops guessing spread over many
    addresses; clients that signed in successfully within `known_for` seconds are exempt from it, so a flood of
    failures elsewhere does not lock out approvers who already use the page. A success does not clear a
    client's failures: an approver could otherwise interleave their own token with guesses at someone else's.
    """

    def __init__(
        self,
        *,
        per_client: int = FAILURES_PER_CLIENT,
        per_page: int = FAILURES_PER_PAGE,
        window: float = WINDOW_SECONDS,
        known_for: float = KNOWN_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if per_client < 1 or per_page < 1 or window <= 0:
            raise ValueError("sign-in limits and their window must be positive")
        self.per_client = per_client
        self.per_page = per_page
        self.window = window
        self.known_for = known_for
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._everyone: deque[float] = deque()
        self._known: dict[str, float] = {}

    def blocked(self, client: str) -> Blocked | None:
        """Whether `client` must wait before its next attempt, and for how long."""
        now = self.clock()
        self._forget(now)
        mine = self._failures.get(client)
        if mine is not None and len(mine) >= self.per_client:
            return Blocked(Scope.CLIENT, self._wait(mine[-self.per_client], now))
        if len(self._everyone) >= self.per_page and not self._is_known(client, now):
            return Blocked(Scope.PAGE, self._wait(self._everyone[-self.per_page], now))
        return None

    def failed(self, client: str) -> int:
        """Record a failed sign-in by `client`; returns how many it has in the window now."""
        now = self.clock()
        self._forget(now)
        mine = self._failures.setdefault(client, deque())
        mine.append(now)
        self._everyone.append(now)
        return len(mine)

    def succeeded(self, client: str) -> None:
        """Remember that `client` holds a valid token, so the page-wide limit does not lock it out."""
        now = self.clock()
        self._known = {c: t for c, t in self._known.items() if self._is_known(c, now)}
        self._known[client] = now

    def _is_known(self, client: str, now: float) -> bool:
        return self._known.get(client, -math.inf) > now - self.known_for

    def _wait(self, oldest: float, now: float) -> int:
        return max(1, math.ceil(oldest + self.window - now))

    def _forget(self, now: float) -> None:
        """Drop failures older than the window, and clients with none left, so memory follows the limits."""
        cutoff = now - self.window
        while self._everyone and self._everyone[0] <= cutoff:
            self._everyone.popleft()
        for client in list(self._failures):
            mine = self._failures[client]
            while mine and mine[0] <= cutoff:
                mine.popleft()
            if not mine:
                del self._failures[client]
