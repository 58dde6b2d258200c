"""Timeouts that fail closed: an expiry at the earliest pending deadline, and a sweep at startup and on an interval.

One APScheduler job stands for every pending request: it fires at the earliest deadline, expires whatever is
due, then moves itself to the next earliest deadline the database holds. Ten thousand waiting requests cost
one job, not ten thousand. APScheduler 3 keeps jobs in memory and drops a date job that came due while the
process was down, so the database row's deadline is the truth: the job makes expiry prompt, the sweep certain.
"""

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

logger = logging.getLogger(__name__)

# A deadline the sweep just left pending again (a clock that disagrees with the scheduler's) is retried this
# much later rather than at once, so the job can never spin.
RETRY = timedelta(seconds=1)


class ExpiryScheduler:
    """Runs `sweep` at the earliest deadline it was told of (then at the next one `next_deadline` finds) and
    every `interval` seconds."""

    def __init__(
        self,
        sweep: Callable[[], Awaitable[object]],
        next_deadline: Callable[[], Awaitable[datetime | None]],
        *,
        interval: float = 30.0,
    ) -> None:
        self._sweep = sweep
        self._next_deadline = next_deadline
        self._interval = interval
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        self._due: datetime | None = None

    @property
    def due(self) -> datetime | None:
        """When the expiry job fires next, or None when no request is waiting for one."""
        return self._due

    async def _run_sweep(self) -> None:
        try:
            await self._sweep()
        except Exception:  # a scheduler job's top-level handler: the next sweep retries
            logger.exception("Sweeping overdue approval requests failed")

    async def _run_due(self) -> None:
        fired = datetime.now(UTC)
        self._due = None
        await self._run_sweep()
        try:
            upcoming = await self._next_deadline()
        except Exception:  # a scheduler job's top-level handler: the interval sweep still expires what is due
            logger.exception("Finding the next approval deadline failed")
            return
        if upcoming is not None:
            self.schedule(max(upcoming, fired + RETRY) if upcoming <= fired else upcoming)

    def start(self) -> None:
        self._scheduler.add_job(
            self._run_sweep, "interval", seconds=self._interval, id="sweep", coalesce=True, max_instances=1
        )
        self._scheduler.start()

    def schedule(self, deadline: datetime) -> None:
        """Make sure an expiry runs at `deadline`; a job that comes due late still runs (misfire_grace_time=None)."""
        if self._due is not None and self._due <= deadline:
            return
        self._due = deadline
        self._scheduler.add_job(
            self._run_due,
            "date",
            run_date=deadline,
            id="expire-due",
            replace_existing=True,
            misfire_grace_time=None,
            max_instances=3,  # a deadline that comes due while the last expiry still runs is not skipped
        )

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
