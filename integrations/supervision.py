"""Keeps signoff's background parts running, and says when one is not.

Every background task (the audit writer, the tool watch, the decision poll, a webhook worker, the outcome of an
approved call) starts through `Parts`. One that raises is logged with its traceback and started again after a pause
that doubles, up to `restarts` times; past that it stays stopped. Until it runs again `health()` names it, and
/healthz answers 503 "failing", so a supervisor or a load balancer can act. An exception never leaves a part: before
this, one bad record could end the lifespan's task group and leave uvicorn serving 503s with /healthz still "ok".
"""

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup

from approvals.ports import Spawner

__all__ = ["Parts", "Spawner"]

logger = logging.getLogger(__name__)

FIRST_PAUSE, LONGEST_PAUSE = 1.0, 30.0


@dataclass(slots=True)
class _Down:
    error: str
    failures: int
    restarting: bool


class Parts:
    """Starts background tasks in `task_group`, each restarted when it fails (see the module docstring)."""

    def __init__(self, task_group: TaskGroup, *, restarts: int = 5, first_pause: float = FIRST_PAUSE) -> None:
        self._task_group = task_group
        self._restarts = restarts
        self._first_pause = first_pause
        self._down: dict[str, _Down] = {}
        self.restarted: dict[str, int] = {}

    def start_soon(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: object = None) -> None:
        part = str(name) if name is not None else getattr(func, "__qualname__", repr(func))
        self._task_group.start_soon(self._keep, part, func, args, name=part)

    async def _keep(self, part: str, func: Callable[..., Coroutine[Any, Any, Any]], args: tuple[Any, ...]) -> None:
        for failures in range(1, self._restarts + 2):
            try:
                await func(*args)
            except Exception as exc:  # the top-level handler of every background task: log, restart, report
                restarting = failures <= self._restarts
                logger.exception(
                    "Background part %s failed (%d times); %s",
                    part,
                    failures,
                    "restarting" if restarting else "stopped",
                )
                self._down[part] = _Down(f"{type(exc).__name__}: {exc}"[:300], failures, restarting)
                if not restarting:
                    return
                await anyio.sleep(min(self._first_pause * 2 ** (failures - 1), LONGEST_PAUSE))
                del self._down[part]
                self.restarted[part] = self.restarted.get(part, 0) + 1
            else:
                return

    def health(self) -> dict[str, Any]:
        """Parts that are down now (restarting or stopped for good) and how often each was restarted."""
        return {
            "ok": not self._down,
            "down": {
                part: {"error": d.error, "failures": d.failures, "state": "restarting" if d.restarting else "stopped"}
                for part, d in sorted(self._down.items())
            },
            "restarted": dict(sorted(self.restarted.items())),
        }
