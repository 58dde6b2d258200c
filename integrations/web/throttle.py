"""Slows down guessing approver tokens on the sign-in form: failed sign-ins are counted, per client and page-wide.

Only failures count, and a blocked attempt is refused before its token is looked at, so a guesser learns
nothing while blocked. Counts are shared by every replica (`failures.py`: Redis or the database) and kept only
for the window; once the page-wide limit is reached no further failure is recorded. This module does the
arithmetic and knows nothing of HTTP; the sign-in route asks it and answers 429 (or 503 when the store is down).
"""

import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from integrations.web.failures import FailureStore, Limits, Seen, admits

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

    Each attempt is counted as a failure from `begin` on, and taken back by `succeeded` or `withdrawn`: so guesses
    that arrive together, on any replicas, cannot all pass the check before one is counted.
    """

    def __init__(
        self,
        store: FailureStore,
        *,
        per_client: int = FAILURES_PER_CLIENT,
        per_page: int = FAILURES_PER_PAGE,
        window: float = WINDOW_SECONDS,
        known_for: float = KNOWN_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if per_client < 1 or per_page < 1 or window <= 0:
            raise ValueError("sign-in limits and their window must be positive")
        self.store = store
        self.limits = Limits(per_client, per_page, window, known_for)
        self.per_client = per_client
        self.window = window
        self.clock = clock

    async def begin(self, client: str) -> "Blocked | Attempt":
        """Whether `client` must wait (and how long); if not, its attempt, counted as a failure until settled.
        Raises SignInStoreDown."""
        now = self.clock()
        seen = await self.store.attempt(client, now, self.limits)
        if seen.recorded is None:
            blocked = self._blocked(seen, now)
            return blocked if blocked is not None else Blocked(Scope.CLIENT, 1)
        after = Seen((now, *seen.mine), (now, *seen.page), seen.known, seen.recorded)
        return Attempt(client, seen.recorded, len(seen.mine) + 1, self._blocked(after, now))

    async def succeeded(self, attempt: "Attempt") -> None:
        """The token was right: not a failure, and the client is exempt from the page-wide pause for a while."""
        await self.store.settle(attempt.client, attempt.recorded, self.clock())

    async def withdrawn(self, attempt: "Attempt") -> None:
        """The attempt checked no token (an expired form): not a failure."""
        await self.store.settle(attempt.client, attempt.recorded, None)

    def _blocked(self, seen: Seen, now: float) -> Blocked | None:
        limits = self.limits
        if admits(limits, len(seen.mine), len(seen.page), seen.known):
            return None
        if len(seen.mine) >= limits.per_client:
            return Blocked(Scope.CLIENT, self._wait(seen.mine[limits.per_client - 1], now))
        return Blocked(Scope.PAGE, self._wait(seen.page[limits.per_page - 1], now))

    def _wait(self, oldest: float, now: float) -> int:
        return max(1, math.ceil(oldest + self.window - now))


@dataclass(frozen=True, slots=True)
class Attempt:
    """A sign-in being checked: counted as `client`'s failure number `failures`; `blocks`: what it blocks if it
    stays one."""

    client: str
    recorded: str
    failures: int
    blocks: Blocked | None
