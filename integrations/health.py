"""`GET /healthz` and `GET /metrics`: what a supervisor, a load balancer and Prometheus read.

/healthz answers 503 "failing" when calls would go unaudited or a background part is down (a supervisor should
act), "degraded" when an upstream is not ready, the bus between replicas is down (their polls carry decisions
meanwhile, only slower) or the rate-limit store cannot be reached (limited calls are refused or let through
uncounted, the rest flow; the next limited call tries the store again), "ok" otherwise, with the detail of every
part.
"""

import logging
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from approvals.models import ApprovalRequest
from integrations.gateway.stdio import StdioUpstream
from integrations.metrics import CONTENT_TYPE, Scraped
from integrations.reloading import Slot
from integrations.runtime import runtime

__all__ = ["healthz", "metrics_page"]

logger = logging.getLogger(__name__)


async def healthz(request: Request) -> Response:
    running = runtime(request)
    servers: dict[str, dict[str, Any]] = {}
    for name, served in running.gateway.servers.items():
        upstream = served.upstream
        if isinstance(upstream, StdioUpstream):
            servers[name] = {"transport": "stdio", **upstream.health(), "policy_version": served.policy.digest}
        else:
            servers[name] = {"transport": "http", "ready": True, "policy_version": served.policy.digest}
        servers[name]["policy"] = running.watcher.files[Slot(name)].health(served.policy)
        if served.agent_policies:  # each agent's own policy for this server, as it stands
            servers[name]["agent_policies"] = {
                agent: running.watcher.files[Slot(name, agent)].health(p) for agent, p in served.agent_policies.items()
            }
    auth = running.gateway.authenticator.health()  # [auth]'s identity provider: down, only access tokens fail
    bus = running.bus.health() if running.bus is not None else None
    limits = running.gateway.limits.health()
    healthy = all(s["ready"] for s in servers.values()) and (auth is None or auth["ok"]) and limits["ok"]
    healthy = healthy and (bus is None or bus["connected"])
    audit = running.audit.health()
    parts = running.parts.health()
    failing = not (audit["ok"] and parts["ok"])
    detail: dict[str, Any] = {
        "status": "failing" if failing else "ok" if healthy else "degraded",
        "replica": running.approvals.claimant,  # host:pid:random, which process answered (behind a balancer)
        "servers": servers,
        "audit": audit,
        "background": parts,
        "audit_queue": running.audit.queued,
        "drifted_tools": sorted(f"{server}/{tool}" for server, tool in running.tools.drifted),
        "tool_pins": running.tools.health(),
        "active_grants": len(running.approvals.grants),
        "limits": limits,
    }
    if running.checkpoints is not None:
        detail["audit_checkpoints"] = running.checkpoints.health()
    if auth is not None:
        detail["auth"] = auth
    if bus is not None:
        detail["bus"] = bus
    if running.webhooks is not None:
        hooks = running.webhooks
        detail["webhooks"] = {"delivered": hooks.delivered, "failed": hooks.failed, "pending": hooks.pending}
    if running.slack is not None:
        detail["slack"] = running.slack.health()
    if running.audit_exports:
        detail["audit_export"] = {tail.sink.name: tail.health() for tail in running.audit_exports}
    return JSONResponse(detail, status_code=503 if failing else 200)


async def metrics_page(request: Request) -> Response:
    """Every instrument (integrations/metrics.py) and what is read now: queues, stores, pending approvals."""
    running = runtime(request)
    audit = running.audit.health()
    stores = {"database": audit["database_down_for"] is None, "rate_limits": running.gateway.limits.ok}
    if running.bus is not None:
        stores["bus"] = running.bus.connected
    try:
        pending = await running.approvals.store.run(_pending)
    except Exception:  # the page still says what it can; the database's state is in signoff_store_up
        logger.warning("Counting pending approvals for /metrics failed", exc_info=True)
        pending, stores["database"] = 0, False
    scraped = Scraped(
        audit_queue=running.audit.queued,
        pending=pending,
        stores_up=stores,
        audit_quarantined=running.audit.quarantined,
        parts_down=len(running.parts.health()["down"]),
    )
    return Response(running.gateway.metrics.page(scraped), media_type=CONTENT_TYPE)


def _pending(session: Session) -> int:
    query = select(func.count()).select_from(ApprovalRequest).where(col(ApprovalRequest.status) == "pending")
    return int(session.exec(query).one())
