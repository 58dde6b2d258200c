"""Timeouts that fail closed: a job at each request's deadline, and a sweep at startup and on an interval.

APScheduler 3 keeps jobs in memory and drops a date job that came due while the process was down, so the
database row's deadline is the truth: the jobs only make expiry prompt, and the sweep makes it certain.
"""

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from uuid import UUID

from apscheduler.schedulers.asyncio import AsyncIOScheduler

logger = logging.getLogger(__name__)


class ExpiryScheduler:
    """Runs `expire` at each deadline and `sweep` every `interval` seconds."""

    def __init__(
        self,
        expire: Callable[[UUID], Awaitable[object]],
        sweep: Callable[[], Awaitable[object]],
        *,
        interval: float = 30.0,
    ) -> None:
        self._expire = expire
        self._sweep = sweep
        self._interval = interval
        self._scheduler = AsyncIOScheduler(timezone="UTC")

    async def _run_expire(self, request_id: UUID) -> None:
        try:
            await self._expire(request_id)
        except Exception:  # a scheduler job's top-level handler: the next sweep retries
            logger.exception("Expiring approval request %s failed", request_id)

    async def _run_sweep(self) -> None:
        try:
            await self._sweep()
        except Exception:  # a scheduler job's top-level handler: the next sweep retries
            logger.exception("Sweeping overdue approval requests failed")

    def start(self) -> None:
        self._scheduler.add_job(
            self._run_sweep, "interval", seconds=self._interval, id="sweep", coalesce=True, max_instances=1
        )
        self._scheduler.start()

    def schedule(self, request_id: UUID, deadline: datetime) -> None:
        """Expire `request_id` at `deadline`; a job that comes due late still runs (misfire_grace_time=None)."""
        self._scheduler.add_job(
            self._run_expire,
            "date",
            run_date=deadline,
            args=[request_id],
            id=f"expire-{request_id}",
            replace_existing=True,
            misfire_grace_time=None,
        )

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
