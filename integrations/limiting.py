"""The gateway's rate limits: counted in the log every replica shares, and refused or let through when it is down.

`policies` stays pure and synchronous, so the gateway evaluates a call with `DeferredLimits`, which admits it and
records the limits it reached, and then `SharedLimits.count` counts those in the shared log (Redis, or the
database: `integrations.ratelogs`). The order is today's: evaluation reaches limits only after every deny check
and before approval or allow, and the decision it returns past them is Allow or NeedsApproval, which a refusal
replaces. A call that reached no limit never touches the store. When the store cannot be reached, a limited call
is refused (fail closed: the limit may guard a destructive tool) unless `[gateway] limits_unavailable` or the
policy's own `limits_unavailable` says "allow"; then it runs uncounted, and the audit log says so.
"""

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from integrations.errors import LimitStoreUnavailable
from integrations.metrics import Metrics
from integrations.ratelogs import Entry, RateLog
from policies import Limit, LimitsUnavailable, Policy, RateLimited, ToolCall
from policies.limits import Key, describe_limit, distinct_keys

__all__ = ["SharedLimits", "Uncounted", "key_name"]

logger = logging.getLogger(__name__)

RETRY_SHORTLY = 1.0  # the retry_after of a refusal because the store is down: the next call tries it again
_LONGEST_NAME = 256  # rate_hits.key holds 512 characters


def key_name(key: Key) -> str:
    """A limit key as the store names it: its parts as JSON (no separator to forge), hashed when long."""
    name = json.dumps(list(key), ensure_ascii=False, separators=(",", ":"))
    if len(name) <= _LONGEST_NAME:
        return name
    return f"{name[:160]}…{hashlib.sha256(name.encode()).hexdigest()}"


@dataclass(frozen=True, slots=True)
class Uncounted:
    """The store could not be reached and the policy lets limited calls through: the call runs, not counted."""

    detail: str


class SharedLimits:
    """Counts limited calls in `log` and keeps what /healthz and /metrics show of it."""

    def __init__(
        self, log: RateLog, *, unavailable: LimitsUnavailable = LimitsUnavailable.REFUSE, metrics: Metrics | None = None
    ) -> None:
        self._log = log
        self._metrics = metrics or Metrics()
        self._unavailable = unavailable
        self.ok = True
        self.last_error: str | None = None
        self.refused = 0  # calls refused because a limit was exhausted
        self.refused_unreachable = 0  # limited calls refused because the store could not be reached
        self.uncounted = 0  # limited calls let through uncounted because the store could not be reached

    @property
    def backend(self) -> str:
        return self._log.backend

    async def count(
        self, policy: Policy, call: ToolCall, limits: Sequence[tuple[str, Limit]], now: float
    ) -> RateLimited | Uncounted | None:
        """Count `call` against the `limits` it reached under `policy` (in its budget), if every one has room.

        Returns None when it was counted; RateLimited naming the first exhausted limit and exactly when the call
        would fit, or because the store cannot be reached and the call is refused; Uncounted when it is let through.
        """
        keyed = distinct_keys(call, limits, policy.counters)  # the same counter named twice counts once
        entries: list[Entry] = [(key_name(key), limit.window_seconds, limit.max) for key, _, limit in keyed]
        try:
            refused = await self._log.acquire(entries, now)
        except LimitStoreUnavailable as exc:
            return self._unreachable(policy, keyed[0][1], keyed[0][2], exc)
        if not self.ok:
            logger.warning("The rate-limit store (%s) can be reached again", self.backend)
        self.ok = True
        if refused is None:
            return None
        index, retry_after = refused
        _, locator, limit = keyed[index]
        self.refused += 1
        self._metrics.limit_refusals.labels("exhausted").inc()
        return RateLimited(locator, limit.counter, retry_after, describe_limit(limit, retry_after))

    def _unreachable(
        self, policy: Policy, locator: str, limit: Limit, exc: LimitStoreUnavailable
    ) -> RateLimited | Uncounted:
        if self.ok:
            logger.warning("%s", exc)
        self.ok = False
        self.last_error = exc.detail
        if (policy.limits_unavailable or self._unavailable) is LimitsUnavailable.ALLOW:
            self.uncounted += 1
            self._metrics.limits_uncounted.inc()
            return Uncounted(
                f"not counted against its limits: the rate-limit store ({self.backend}) cannot be reached, and "
                "limits_unavailable is allow"
            )
        self.refused_unreachable += 1
        self._metrics.limit_refusals.labels("store_unreachable").inc()
        reason = (
            f"the rate-limit store ({self.backend}) cannot be reached, so calls this policy limits are refused; "
            "retry shortly"
        )
        return RateLimited(locator, limit.counter, RETRY_SHORTLY, reason)

    def health(self) -> dict[str, Any]:
        """For /healthz: the backend, whether its last count reached it, its last error, and the refusals."""
        return {
            "backend": self.backend,
            "ok": self.ok,
            "last_error": self.last_error,
            "refused_unreachable": self.refused_unreachable,
            "uncounted": self.uncounted,
            "unavailable": self._unavailable.value,
        }
