"""What the approval engine needs from the edges, as Protocols implemented in `integrations`."""

from typing import Any, Protocol


class Notifier(Protocol):
    """Tells the outside world about an approval request: webhooks today, Slack and the web page next.

    Implementations must return quickly and never raise: delivery, retries and their failures are theirs.
    """

    def publish(self, event: str, request: dict[str, Any]) -> None:
        """Queue `event` ("approval.requested", "approval.approved", ...) about `request` (its public JSON)."""
        ...
