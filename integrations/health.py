"""`GET /healthz` and `GET /metrics`: what a supervisor, a load balancer and Prometheus read.

/healthz answers 503 "failing" when calls would go unaudited or a background part is down (a supervisor should
act), "degraded" when an upstream is not ready, the bus between replicas is down (their polls carry decisions
meanwhile, only slower) or the rate-limit store cannot be reached (limited calls are refused or let through
uncounted, the rest flow; the next limited call tries the store again), "ok" otherwise, with the detail of every
part.
"""

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from integrations.gateway.stdio import StdioUpstream
from integrations.reloading import Slot
from integrations.runtime import runtime

__all__ = ["healthz", "metrics"]


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
    if auth is not None:
        detail["auth"] = auth
    if bus is not None:
        detail["bus"] = bus
    if running.webhooks is not None:
        hooks = running.webhooks
        detail["webhooks"] = {"delivered": hooks.delivered, "failed": hooks.failed, "pending": hooks.pending}
    if running.slack is not None:
        detail["slack"] = running.slack.health()
    return JSONResponse(detail, status_code=503 if failing else 200)


async def metrics(request: Request) -> Response:
    running = runtime(request)
    lines = [
        "# HELP signoff_tool_calls_total Tool calls by server and decision.",
        "# TYPE signoff_tool_calls_total counter",
    ]
    for (server, decision), count in sorted(running.gateway.counts.items()):
        lines.append(f'signoff_tool_calls_total{{server="{server}",decision="{decision}"}} {count}')
    limits = running.gateway.limits
    lines += [
        "# HELP signoff_limit_refusals_total Limited calls refused: limit exhausted, or store down.",
        "# TYPE signoff_limit_refusals_total counter",
        f'signoff_limit_refusals_total{{reason="exhausted"}} {limits.refused}',
        f'signoff_limit_refusals_total{{reason="store_unreachable"}} {limits.refused_unreachable}',
        "# HELP signoff_limits_uncounted_total Limited calls let through uncounted while the store was down.",
        "# TYPE signoff_limits_uncounted_total counter",
        f"signoff_limits_uncounted_total {limits.uncounted}",
        "# HELP signoff_audit_queue Audit records waiting to be written.",
        "# TYPE signoff_audit_queue gauge",
        f"signoff_audit_queue {running.audit.queued}",
    ]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
