"""What the approval engine needs from the edges, as Protocols implemented in `integrations`."""

from collections.abc import Callable, Coroutine
from typing import Any, Protocol


class Notifier(Protocol):
    """Tells the outside world about an approval request: webhooks today, Slack and the web page next.

    Implementations must return quickly and never raise: delivery, retries and their failures are theirs.
    """

    def publish(self, event: str, request: dict[str, Any]) -> None:
        """Queue `event` ("approval.requested", "approval.approved", ...) about `request` (its public JSON)."""
        ...


class Spawner(Protocol):
    """Starts background work: `integrations.supervision.Parts` (which restarts what fails), or a task group."""

    def start_soon(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: object = None) -> Any: ...
