"""The composition root: `create_app(settings)` wires every part, and the lifespan owns their resources.

The only module that knows every part. Nothing is created at import time except `app`, for the
Procfile, which reads its settings when the server starts it.
"""

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

import anyio
import httpx2
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Lifespan, Receive, Scope, Send

from approvals.audit import AuditRecord, append
from approvals.engine import ApprovalEngine
from approvals.models import AuditKind, utcnow
from approvals.service import Approver
from approvals.store import Store
from approvals.waiting import DecisionWaiter
from integrations.api import build_routes
from integrations.audit_sinks import AuditTail, build_sinks
from integrations.auditing import AuditWriter
from integrations.auditkeys import signing_key
from integrations.bodies import BodyRefused, bounded, limit_for
from integrations.broadcast import Broadcast, Topic, carrier_for
from integrations.checkpointing import Checkpointer
from integrations.database import checkpoint_wal, create_database_engine, transaction_slots
from integrations.editing import edit_refusal
from integrations.errors import ConfigError
from integrations.gateway.drift import ToolWatch
from integrations.gateway.endpoint import Gateway, Served
from integrations.gateway.holding import Holding
from integrations.gateway.ownership import SessionOwners
from integrations.gateway.stdio import StdioUpstream
from integrations.gateway.upstream import HttpUpstream, Upstream
from integrations.health import healthz, metrics_page
from integrations.limiting import SharedLimits
from integrations.metrics import Metrics
from integrations.notifiers import Fanout
from integrations.oauth import build_metadata_routes
from integrations.oauth.agents import build_authenticator
from integrations.preflight import PolicySet, agent_rights, load_policy_set
from integrations.ratelogs import DatabaseRateLog, RateLog, RedisRateLog
from integrations.reloading import PolicyWatcher, Slot
from integrations.runtime import Runtime
from integrations.scheduler import ExpiryScheduler
from integrations.settings import ServerSettings, Settings, child_environment, metrics_directory, worker_settings
from integrations.shared import connect_redis
from integrations.supervision import Parts
from integrations.telemetry import Telemetry, tracer_provider
from integrations.tokens import TokenBook
from integrations.web import build_web_routes
from integrations.web.failures import DatabaseFailures, RedisFailures
from integrations.web.throttle import SignInThrottle
from integrations.webhooks import WebhookNotifier
from policies import Policy

if TYPE_CHECKING:
    from opentelemetry.sdk._logs.export import LogRecordExporter
    from opentelemetry.sdk.trace.export import SpanExporter

    from integrations.slack import SlackIntegration

logger = logging.getLogger(__name__)


def build_upstream(server: ServerSettings, timeout: float) -> Upstream:
    if server.url is not None:
        headers = {k: v.get_secret_value() for k, v in server.headers.items()}
        return HttpUpstream(server.name, server.url, headers, timeout=timeout, connect_timeout=10.0)
    env = {k: v.get_secret_value() for k, v in server.env.items()}
    command = server.command or ()
    return StdioUpstream(server.name, command, env=child_environment(env), cwd=server.cwd, request_timeout=timeout)


class _Mcp:
    """Routes `/mcp/{server}` to the gateway built in the lifespan."""

    def __init__(self) -> None:
        self.gateway: Gateway | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.gateway is None:
            await PlainTextResponse("signoff is starting", status_code=503)(scope, receive, send)
            return
        await self.gateway(scope, receive, send)


class _App(Starlette):
    """Starlette, except that `/mcp/{server}`, the hot path, skips the middleware stack and the router.

    The gateway answers every request there itself (an unexpected error still gets uvicorn's 500), so they
    would add only a dozen Python calls to each tool call; every other path, `/mcp/a/b` too, goes the usual way.
    """

    def __init__(
        self, mcp: _Mcp, *, routes: list[BaseRoute], lifespan: Lifespan[Starlette], body_timeout: float
    ) -> None:
        super().__init__(routes=routes, lifespan=lifespan, exception_handlers={BodyRefused: _refused_body})
        self._mcp = mcp
        self._body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            root: str = scope.get("root_path", "")
            if not root and _is_mcp(path):
                scope["app"] = self
                scope["path_params"] = {"server": path[5:]}
                await (self._mcp.gateway or self._mcp)(scope, receive, send)  # one frame fewer per held call
                return
            route_path = path.removeprefix(root)
            if not _is_mcp(route_path):  # the gateway bounds its own bodies ([gateway] max_body_bytes)
                receive = bounded(scope, receive, limit=limit_for(route_path), timeout=self._body_timeout)
        await super().__call__(scope, receive, send)


def _is_mcp(path: str) -> bool:
    server = path[5:]
    return path.startswith("/mcp/") and bool(server) and "/" not in server


async def _refused_body(request: Request, exc: Exception) -> Response:
    """413 or 408 with what the limit is; the connection closes, so the rest of that body is never read."""
    status, detail = (exc.status_code, exc.detail) if isinstance(exc, BodyRefused) else (400, str(exc))
    return JSONResponse({"error": detail}, status_code=status, headers={"Connection": "close"})


def _slack(settings: Settings) -> "SlackIntegration | None":
    """Slack, if configured; imported only then, since slack_bolt, slack_sdk and aiohttp weigh ~17 MB of memory."""
    if not settings.slack:
        return None
    from integrations.slack import SlackIntegration, slack_approvers

    return SlackIntegration(settings.slack, slack_approvers(settings.approvers))


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
    now: Callable[[], datetime] = utcnow,
    span_exporter: "SpanExporter | None" = None,
    log_exporter: "LogRecordExporter | None" = None,
) -> Starlette:
    """Build the ASGI app; policies are loaded here so a bad one is refused before serving.

    `clock` is the wall clock rate-limit windows are counted on, `now` the one approval deadlines, grants and tool
    pins are; tests pass their own, and `span_exporter` and `log_exporter` to receive the traces and the audit
    rows sent as logs ([telemetry] sends them over OTLP).
    """
    policies = load_policy_set(settings)
    signing_key(settings.audit)  # a bad [audit] key is refused here, before serving
    mcp = _Mcp()
    slack = _slack(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:  # each part's close is pushed as it starts: LIFO at exit
            app.state.signoff = running = await _start(
                settings,
                policies,
                slack,
                stack,
                clock=clock,
                now=now,
                span_exporter=span_exporter,
                log_exporter=log_exporter,
            )
            mcp.gateway = running.gateway
            stack.callback(setattr, mcp, "gateway", None)  # the first thing undone: no new call is taken
            yield

    return _App(
        mcp,
        routes=[
            Route("/mcp/{server}", mcp, methods=None),  # reached only under a root path (see _App)
            Route("/healthz", healthz),
            Route("/metrics", metrics_page),
            *([Route("/slack/events", slack.events, methods=["POST"])] if slack else []),
            *build_routes(),
            *(build_metadata_routes(settings.auth, [s.name for s in settings.servers]) if settings.auth else []),
            *build_web_routes(settings, clock=clock),  # the web page: /login, /approvals, /audit
        ],
        lifespan=lifespan,
        body_timeout=settings.gateway.body_timeout,
    )


async def _start(
    settings: Settings,
    loaded: PolicySet,
    slack: "SlackIntegration | None",
    stack: contextlib.AsyncExitStack,
    *,
    clock: Callable[[], float],
    now: Callable[[], datetime],
    span_exporter: "SpanExporter | None" = None,
    log_exporter: "LogRecordExporter | None" = None,
) -> Runtime:
    """Build every part with its collaborators, start it, and push its close onto `stack`; in the order they depend
    on each other, so they stop in reverse: calls first, then what they write to, the database last."""
    database = create_database_engine(settings.gateway.database_url)
    stack.callback(database.dispose)
    _record_loaded(database, loaded)
    policies = loaded.servers
    redis = None
    if settings.gateway.redis_url is not None:
        redis = connect_redis(settings.gateway.redis_url.get_secret_value())
        stack.push_async_callback(redis.aclose)
    metrics = Metrics(metrics_directory())
    provider = tracer_provider(settings.telemetry.service_name, settings.telemetry.otlp_endpoint, span_exporter)
    if provider is not None:
        stack.callback(provider.shutdown)  # the last spans are sent before the process ends
    telemetry = Telemetry(metrics, provider.get_tracer("signoff") if provider is not None else None)
    hooks_client = httpx2.AsyncClient(timeout=httpx2.Timeout(10.0))
    stack.push_async_callback(hooks_client.aclose)
    task_group = await stack.enter_async_context(anyio.create_task_group())
    stack.callback(task_group.cancel_scope.cancel)  # after every close below: what they wait for has ended
    parts = Parts(task_group)
    bus = Broadcast(carrier_for(database, redis))  # between replicas; see integrations/broadcast.py
    bus.start(parts)
    stack.push_async_callback(bus.close)

    exports = _audit_exports(settings, database, parts, stack, log_exporter)  # they close after the writer
    final_checkpoint: list[Checkpointer] = []  # closed after the audit writer drains (the stack unwinds LIFO)
    stack.push_async_callback(_close_all, final_checkpoint)
    audit = AuditWriter(database)
    audit.start(parts)
    stack.push_async_callback(audit.close)
    identity_client = httpx2.AsyncClient(timeout=httpx2.Timeout(5.0))  # the identity provider's, for [auth], SSO
    stack.push_async_callback(identity_client.aclose)
    authenticator = build_authenticator(settings, identity_client, clock)
    parts.start_soon(authenticator.warm, name="oauth-keys")
    if database.dialect.name == "sqlite":
        parts.start_soon(checkpoint_wal, database)
    tools = ToolWatch(database, now, broadcast=bus)
    await tools.load({name: p.digest for name, p in policies.items()})
    tools.start(parts)
    stack.push_async_callback(tools.close)
    servers = {
        s.name: Served(
            upstream=build_upstream(s, settings.gateway.upstream_timeout),
            policy=policies[s.name],
            agent_policies={agent: p for (server, agent), p in loaded.agents.items() if server == s.name},
        )
        for s in settings.servers
    }
    webhooks = WebhookNotifier(settings.webhooks, hooks_client) if settings.webhooks else None
    if webhooks is not None:
        webhooks.start(parts)
        stack.push_async_callback(webhooks.close)
    checkpoints = _checkpointer(settings, database, webhooks, now)
    if checkpoints is not None:
        checkpoints.start(parts)
        final_checkpoint.append(checkpoints)
    store = Store(database, slots=transaction_slots(database))
    slack_notifier = slack.announce(store, settings.gateway.base_url, now) if slack is not None else None
    approvals = ApprovalEngine(
        store,
        DecisionWaiter(),
        Fanout(*(n for n in (webhooks, slack_notifier) if n is not None), metrics),
        base_url=settings.gateway.base_url,
        # No approved call runs longer than the upstream timeout; one executing for much longer was left behind.
        lease=timedelta(seconds=settings.gateway.upstream_timeout + 300),
        now=now,
        broadcast=bus,
    )
    await approvals.load_grants()
    approvals.start(parts)

    def policy_for(server: str, agent: str) -> Policy | None:
        served = servers.get(server)
        return served.policy_for(agent) if served is not None else None

    def rebind() -> None:  # open requests are judged again under every new policy version
        parts.start_soon(approvals.rebind, policy_for, clock(), name="approvals.rebind")

    watcher = _policy_watcher(settings, servers, audit, tools, bus, rebind)
    watcher.start(parts)
    stack.callback(_Hangup(watcher.wake).close)
    owners = SessionOwners(database, now, broadcast=bus)
    _hear(bus, approvals, tools, watcher, owners, servers)
    if slack is not None:  # Slack announces requests and takes decisions (integrations/slack)
        slack.listen(approvals, redis)
        await slack.start(parts)
        stack.push_async_callback(slack.close)
    rate_log: RateLog
    if redis is not None:  # every replica counts limits in Redis, or else in the database (integrations/ratelogs.py)
        rate_log = RedisRateLog(redis)
    else:
        rate_log = database_log = DatabaseRateLog(store, clock)
        parts.start_soon(database_log.prune, name="rate-hits-prune")
    scheduler = ExpiryScheduler(approvals.expire_overdue, approvals.next_deadline)
    holding = Holding(approvals, hold=settings.gateway.approval_hold, schedule_expiry=scheduler.schedule)

    for served in servers.values():
        served.upstream.start(task_group)  # a stdio child has its own restarts, shown under servers
        stack.push_async_callback(served.upstream.aclose)
    await approvals.expire_overdue()  # what came due while signoff was down fails closed first
    await approvals.rebind(policy_for, clock())  # and what a policy edited meanwhile no longer stands behind
    approvals.schedule_expiry = scheduler.schedule
    scheduler.start()
    stack.callback(scheduler.shutdown)
    upcoming = await approvals.next_deadline()
    if upcoming is not None:
        scheduler.schedule(upcoming)
    gateway = Gateway(
        servers=servers,
        authenticator=authenticator,
        owners=owners,
        rights=agent_rights(settings),
        audit=audit,
        limits=SharedLimits(rate_log, unavailable=settings.gateway.limits_unavailable, metrics=metrics),
        allowed_origins=(*settings.gateway.allowed_origins, _origin(settings.gateway.base_url)),
        max_body_bytes=settings.gateway.max_body_bytes,
        body_timeout=settings.gateway.body_timeout,
        clock=clock,
        holding=holding if settings.approvers else None,
        tools=tools,
        telemetry=telemetry,
    )
    approvers = TokenBook(
        (a.token.get_secret_value(), Approver(a.name, a.groups)) for a in settings.approvers if a.token is not None
    )
    running = Runtime(
        database,
        audit,
        gateway,
        approvals,
        approvers,
        tools,
        watcher,
        parts,
        identity_client,
        webhooks,
        slack,
        redis,
        bus,
        SignInThrottle(RedisFailures(redis) if redis is not None else DatabaseFailures(store), clock=clock),
        exports,
        checkpoints,
    )
    if slack is not None and slack.decisions is not None:  # Slack's "Edit and approve" checks edits as the API does
        slack.decisions.check_edit = partial(edit_refusal, running)
    return running


def _audit_exports(
    settings: Settings,
    database: Engine,
    parts: Parts,
    stack: contextlib.AsyncExitStack,
    log_exporter: "LogRecordExporter | None",
) -> list[AuditTail]:
    """Start a tail of the audit log for each of `[telemetry] audit_to`; at the end each sends what is left."""
    telemetry = settings.telemetry
    sinks = build_sinks(
        telemetry.audit_to,
        syslog_address=telemetry.syslog_address,
        service_name=telemetry.service_name,
        otlp_endpoint=telemetry.otlp_endpoint,
        log_exporter=log_exporter,
    )
    tails = [AuditTail(database, sink) for sink in sinks]
    for tail in tails:
        stack.push_async_callback(tail.close)
        parts.start_soon(tail.run, name=f"audit-export-{tail.sink.name}")
    return tails


def _hear(
    bus: Broadcast,
    approvals: ApprovalEngine,
    tools: ToolWatch,
    watcher: PolicyWatcher,
    owners: SessionOwners,
    servers: dict[str, Served],
) -> None:
    """What a message from another replica does here; and, after the listener (re)connects, the catch-up for what
    was said while nobody listened (a poll of each, once)."""

    async def ring(about: str) -> None:
        approvals.waiter.notify(UUID(about))

    async def drift(server: str) -> None:
        await tools.refresh(server)

    async def policies(_about: str = "") -> None:
        watcher.wake()

    bus.on(Topic.REQUEST, ring)
    bus.on(Topic.GRANTS, lambda _about: approvals.load_grants())
    bus.on(Topic.DRIFT, drift)
    bus.on(Topic.POLICIES, policies)

    async def session_ended(digest: str) -> None:
        owners.forget(digest)
        for served in servers.values():  # a stdio child here may serve it too (StdioUpstream._adopt)
            if isinstance(served.upstream, StdioUpstream):
                await served.upstream.forget_session(digest)

    bus.on(Topic.SESSION, session_ended)
    bus.on_change(approvals.told)  # connected: the polls slow down, and run once now (a catch-up); lost: they resume
    for catch_up in (tools.refresh, policies):
        bus.on_connect(catch_up)


async def _close_all(checkpointers: list[Checkpointer]) -> None:
    for checkpointer in checkpointers:
        await checkpointer.close()


def _checkpointer(
    settings: Settings, database: Engine, webhooks: WebhookNotifier | None, now: Callable[[], datetime]
) -> Checkpointer | None:
    """The audit checkpointer when `[audit]` has a signing key (read here, so a bad key is refused at start)."""
    key = signing_key(settings.audit)
    if key is None:
        return None
    audit = settings.audit
    return Checkpointer(
        database,
        key,
        rows=audit.checkpoint_rows,
        seconds=audit.checkpoint_seconds,
        now=now,
        file=audit.checkpoint_file,
        notifier=webhooks,
    )


def _record_loaded(database: Engine, loaded: PolicySet) -> None:
    """Audit the policy versions this process starts with (agents' own too), before it serves a call under them."""
    servers = [
        AuditRecord(kind=AuditKind.POLICY_LOADED, server=name, policy_version=p.digest, detail=p.source)
        for name, p in loaded.servers.items()
    ]
    agents = [
        AuditRecord(
            kind=AuditKind.POLICY_LOADED,
            server=server,
            identity=agent,
            policy_version=p.digest,
            detail=f"{p.source} (agent {agent}'s own)",
        )
        for (server, agent), p in loaded.agents.items()
    ]
    with Session(database) as session:
        append(session, [*servers, *agents])
        session.commit()


def _policy_watcher(
    settings: Settings,
    servers: dict[str, Served],
    audit: AuditWriter,
    tools: ToolWatch,
    bus: Broadcast,
    rebind: Callable[[], None],
) -> PolicyWatcher:
    """The watcher that hot-reloads each policy file (the servers' and the agents' own), auditing every version it
    takes or refuses; `rebind` is told of every new version (open approval requests are judged again under it)."""

    def reloaded(slot: Slot, old: Policy, new: Policy) -> None:
        audit.record(
            AuditRecord(
                kind=AuditKind.POLICY_RELOADED,
                server=slot.server,
                identity=slot.agent or "",
                policy_version=new.digest,
                actor="signoff",
                outcome="reloaded",
                detail=f"{new.source}: version {new.digest} replaces {old.digest}",
            )
        )
        if slot.agent is None:  # a new version of the server's policy re-checks drifted tools
            tools.recheck(slot.server, new.digest)
        bus.send(Topic.POLICIES, slot.server)  # the other replicas check their files now, not at their next poll
        rebind()

    def refused(slot: Slot, error: str) -> None:
        audit.record(
            AuditRecord(
                kind=AuditKind.POLICY_REFUSED,
                server=slot.server,
                identity=slot.agent or "",
                policy_version=watcher.policy(slot).digest,
                actor="signoff",
                outcome="refused",
                detail=f"the previous policy keeps serving: {error}"[:2000],
            )
        )

    paths = {Slot(s.name): Path(s.policy) for s in settings.servers}
    paths |= {Slot(server, a.name): Path(path) for a in settings.agents for server, path in a.policies.items()}
    watcher = PolicyWatcher(
        servers,
        paths,
        on_reload=reloaded,
        on_refused=refused,
        interval=settings.gateway.policy_poll,
        approvers=settings.approver_names,
    )
    return watcher


class _Hangup:
    """SIGHUP asks for an immediate policy check, as daemons reload on it; a no-op where signals can't be caught."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        try:
            self._loop.add_signal_handler(signal.SIGHUP, callback)
        except (NotImplementedError, RuntimeError, ValueError, AttributeError):  # Windows, or not the main thread
            self._loop = None

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGHUP)


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def _app_from_environment() -> Starlette:
    # The entry point of `signoff serve --workers N`'s workers and of plain uvicorn: with no config it refuses,
    # never serves the demo.
    return create_app(worker_settings())


def freeze_startup() -> None:
    """Exempt what is alive now (the modules, the app) from the garbage collector's full collections.

    Called once a server process has built its app. They live as long as the process, yet each full collection
    would scan their ~130,000 objects again: a pause of ~0.1 s that every held call and decision in flight
    would share. Not for processes that build many apps (the tests): cyclic garbage frozen is never freed.
    """
    gc.freeze()


class _LazyApp:
    """`integrations.app:app` for uvicorn and the Procfile: settings are read when the server starts."""

    def __init__(self) -> None:
        self._app: Starlette | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            try:
                self._app = _app_from_environment()
            except ConfigError as exc:
                if scope["type"] != "lifespan":
                    raise
                # Under uvicorn's default `--lifespan auto`, a lifespan that raises reads as "unsupported" and the
                # server goes on serving; a failed startup, with the reason, makes it log that and exit (code 3).
                await receive()
                await send({"type": "lifespan.startup.failed", "message": f"signoff: {exc}"})
                return
            freeze_startup()
        await self._app(scope, receive, send)


app = _LazyApp()
