"""What the approval engine needs from the edges, as Protocols implemented in `integrations`."""

from collections.abc import Callable, Coroutine
from enum import StrEnum
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


class Topic(StrEnum):
    """What changed in the shared store, as the other replicas are told: they hold a copy of it or wait on it."""

    REQUEST = "request"  # a request settled (decided, expired, withdrawn, failed): its held calls may answer
    GRANTS = "grants"  # a grant was given or revoked: reload the grant book
    DRIFT = "drift"  # a server's tool drift was accepted: read its pins again
    POLICIES = "policies"  # a policy file was reloaded: check the policy files now
    SESSION = "session"  # an MCP session ended: forget it (about: the SHA-256 of its id, never the id)


class Broadcaster(Protocol):
    """Tells every other process on the same store that something changed (integrations/broadcast.py).

    Called after the change committed, so whoever acts on it reads the new row. Implementations must return at once
    and never raise: delivery is best effort, and each receiver also polls for what a lost message would have said.
    """

    def send(self, topic: Topic, about: str) -> None:
        """Queue a message: `topic` and the id it is about (a request id, a server name); never a secret."""
        ...
