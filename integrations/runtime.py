"""What the lifespan builds, typed, for the routes: `Runtime`, kept in `app.state.signoff`.

The routes (the API, the web page, /healthz, /metrics) read the running parts from here rather than from loose
`app.state` attributes, so each name has one type and a missing one is an error at the first request, not a
`None` somewhere later.
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx2
from redis.asyncio import Redis
from sqlalchemy.engine import Engine
from starlette.requests import HTTPConnection

from approvals.engine import ApprovalEngine
from approvals.service import Approver
from integrations.audit_sinks import AuditTail
from integrations.auditing import AuditWriter
from integrations.broadcast import Broadcast
from integrations.checkpointing import Checkpointer
from integrations.gateway.drift import ToolWatch
from integrations.gateway.endpoint import Gateway
from integrations.reloading import PolicyWatcher
from integrations.supervision import Parts
from integrations.tokens import TokenBook
from integrations.webhooks import WebhookNotifier

if TYPE_CHECKING:  # Slack's libraries load only when Slack is configured (integrations/app.py)
    from integrations.slack import SlackIntegration
    from integrations.web.throttle import SignInThrottle

__all__ = ["Runtime", "runtime"]


@dataclass(frozen=True, slots=True)
class Runtime:
    """The running parts of one signoff process."""

    database: Engine
    audit: AuditWriter
    gateway: Gateway
    approvals: ApprovalEngine
    approvers: TokenBook[Approver]
    tools: ToolWatch
    watcher: PolicyWatcher
    parts: Parts
    identity_client: httpx2.AsyncClient  # for the identity provider of [auth] and [web.oidc]
    webhooks: WebhookNotifier | None = None
    slack: "SlackIntegration | None" = None
    redis: Redis | None = None  # the shared store, when [gateway] redis_url is set (integrations/shared.py)
    bus: Broadcast | None = None  # wake-ups between replicas (integrations/broadcast.py)
    sign_ins: "SignInThrottle | None" = None  # failed web sign-ins, counted in the shared store
    audit_exports: list[AuditTail] = field(default_factory=list)  # [telemetry] audit_to
    checkpoints: Checkpointer | None = None  # signed audit checkpoints, when [audit] has a signing key


def runtime(connection: HTTPConnection) -> Runtime:
    """The runtime of the app serving `connection` (a request or a websocket)."""
    running: Runtime = connection.app.state.signoff
    return running
