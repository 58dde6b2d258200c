"""Announcing approval requests to every configured channel through one `Notifier`."""

import logging
from typing import Any

from approvals.ports import Notifier

logger = logging.getLogger(__name__)


class Fanout:
    """Publishes each event to every channel; one failing channel never stops the others."""

    def __init__(self, *channels: Notifier) -> None:
        self.channels = list(channels)

    def publish(self, event: str, request: dict[str, Any]) -> None:
        logger.info(
            "%s %s %s/%s by %s",
            event,
            request.get("id"),
            request.get("server"),
            request.get("tool"),
            request.get("agent"),
        )
        for channel in self.channels:
            try:
                channel.publish(event, request)
            except Exception:  # a notifier must not raise; if one does, the others still hear of it
                logger.exception("Notifier %s failed on %s", type(channel).__name__, event)
