"""Slack, assembled: the Web API client, the notifier, the Bolt app, and HTTP or Socket Mode, for `app.py`.

`SlackIntegration(settings, approvers)` checks the settings when the app is created (so a bad [slack]
section is refused before serving). In the lifespan, `announce(store, base_url)` builds the client and the notifier
(which the approval engine is given), `listen(engine)` the Bolt app that decides through that engine; `start` and
`close` run and stop them. It knows nothing of the gateway.
"""

import logging
import secrets
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import anyio
from redis.asyncio import Redis
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_sdk.web.async_client import AsyncWebClient

from approvals.engine import ApprovalEngine
from approvals.models import utcnow
from approvals.service import Approver
from approvals.store import Store
from integrations.errors import ConfigError
from integrations.settings import ApproverSettings, SlackSettings
from integrations.slack.listeners import SlackDecisions, SlackEvents, build_bolt_app
from integrations.slack.notifier import SlackNotifier, StoreRecords
from integrations.slack.replays import DatabaseReplays, RedisReplays
from integrations.supervision import Spawner

__all__ = ["SlackIntegration", "api_base_url", "slack_approvers"]

logger = logging.getLogger(__name__)


def api_base_url(settings: SlackSettings) -> str:
    """`[slack] api_url` as slack_sdk wants it: ending in a slash."""
    return settings.api_url if settings.api_url.endswith("/") else settings.api_url + "/"


def slack_approvers(approvers: Iterable[ApproverSettings]) -> dict[str, Approver]:
    """Slack user id → approver, for every `[[approvers]]` entry with a `slack_user`."""
    mapped: dict[str, Approver] = {}
    for entry in approvers:
        if entry.slack_user and entry.slack_user not in mapped:
            mapped[entry.slack_user] = Approver(entry.name, entry.groups)
    return mapped


class SlackIntegration:
    """Everything Slack in one process; `events` is the ASGI app for `POST /slack/events`."""

    def __init__(self, settings: SlackSettings, approvers: dict[str, Approver]) -> None:
        if settings.bot_token is None:
            raise ConfigError("slack.bot_token is required: the Bot User OAuth Token (xoxb-...) of your Slack app")
        if settings.signing_secret is None and settings.app_token is None:
            raise ConfigError(
                "slack: set signing_secret (HTTP mode: Slack posts to /slack/events) or app_token "
                "(Socket Mode: signoff connects out to Slack)"
            )
        self.settings = settings
        self.approvers = approvers
        self.events = SlackEvents(enabled=settings.signing_secret is not None)
        self._client: AsyncWebClient | None = None
        self.notifier: SlackNotifier | None = None
        self.decisions: SlackDecisions | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._connected = False

    @property
    def mode(self) -> str:
        return "socket" if self.settings.app_token is not None else "http"

    @property
    def mentions(self) -> dict[str, str]:
        """How a request's message mentions its approvers: `<@U…>` for a person with a slack_user, and
        `<!subteam^S…>` for a group mapped in `[slack] groups`; anyone else stays plain text."""
        people = {approver.name: f"<@{user}>" for user, approver in self.approvers.items()}
        groups = {f"group:{name}": f"<!subteam^{team}>" for name, team in self.settings.groups.items()}
        return {**people, **groups}

    def announce(self, store: Store, base_url: str, now: Callable[[], datetime] = utcnow) -> SlackNotifier:
        """Build the Web API client and the notifier (one message per request); returns it for the Fanout."""
        bot_token = self.settings.bot_token.get_secret_value() if self.settings.bot_token else ""
        self._client = AsyncWebClient(token=bot_token, base_url=api_base_url(self.settings), timeout=10)
        self.notifier = SlackNotifier(
            self._client, StoreRecords(store, base_url, now), self.settings.channel, mentions=self.mentions
        )
        return self.notifier

    def listen(self, engine: ApprovalEngine, redis: Redis | None = None) -> None:
        """Build the Bolt app that takes decisions into `engine`, over HTTP (`events`) or Socket Mode; the replay
        cache of HTTP mode is Redis when configured, else `engine`'s database."""
        if self._client is None or self.notifier is None:
            raise RuntimeError("SlackIntegration.announce() comes first: the decisions use its client")
        client = self._client
        self.decisions = SlackDecisions(engine, client, self.approvers, refresh=self.notifier.refresh)
        secret = self.settings.signing_secret
        # Without a signing secret (Socket Mode only) nothing can verify against this random one.
        app = build_bolt_app(client, secret.get_secret_value() if secret else secrets.token_hex(32), self.decisions)
        if secret is not None:
            self.events.handler = AsyncSlackRequestHandler(app)
            self.events.secret = secret.get_secret_value()
            self.events.cache = RedisReplays(redis) if redis is not None else DatabaseReplays(engine.store)
        if self.settings.app_token is not None:
            self._socket = AsyncSocketModeHandler(app, self.settings.app_token.get_secret_value(), web_client=client)

    async def start(self, task_group: Spawner) -> None:
        if self.notifier is None:
            raise RuntimeError("SlackIntegration.announce() was not called")
        self.notifier.start(task_group)
        if self._socket is not None:
            task_group.start_soon(self._connect)

    async def _connect(self) -> None:
        # slack_sdk's connect() retries by itself until it is connected or closed: never block the startup on it.
        if self._socket is None:
            return
        try:
            await self._socket.connect_async()  # type: ignore[no-untyped-call]  # Bolt leaves it unannotated
            self._connected = True
            logger.info("Slack: connected in Socket Mode")
        except Exception:  # a background job's top-level handler
            logger.exception("Slack: Socket Mode connection failed")

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            if self._socket is not None:
                await self._socket.close_async()  # type: ignore[no-untyped-call]
            if self.notifier is not None:
                await self.notifier.close()

    def health(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"mode": self.mode}
        if self.notifier is not None:
            notifier = self.notifier
            detail.update(
                posted=notifier.posted,
                updated=notifier.updated,
                failed=notifier.failed,
                retries=notifier.retries,
                syncing=notifier.syncing,
                last_error=notifier.last_error,
                last_error_at=notifier.last_error_at,
            )
        if self.decisions is not None:
            detail.update(decided=self.decisions.decided, refused=self.decisions.refused)
        detail["rejected_requests"] = self.events.rejected
        if self._socket is not None:
            detail["socket_connected"] = self._connected and not self._socket.client.closed
        return detail
