"""The JSON API: approval requests and their decisions (with grants), grants, tool drift, policy reloads, audit.

Adapters only: decode the request, call one domain function through the approval engine, encode the answer. Domain
errors map to HTTP statuses here and nowhere else.
"""

import json
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from approvals import grants, pins, prefixes, service
from approvals.audit import AUDIT_FILTERS, latest_events
from approvals.engine import ApprovalEngine
from approvals.errors import (
    AlreadyDecided,
    AmbiguousId,
    ApprovalError,
    ApprovalNotFound,
    EditRefused,
    GrantEnded,
    GrantNotAllowed,
    GrantNotFound,
    IdTooShort,
    InvalidReason,
    NotAllowed,
)
from approvals.models import GrantStatus, ToolPin, Verdict
from approvals.reasons import MAX_REASON, reason_problem
from integrations.bodies import json_object
from integrations.editing import approve_with_edits
from integrations.params import limit
from integrations.reloading import Check
from integrations.runtime import runtime
from policies import parse_duration


def _problem(code: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=code)


def _engine(request: Request) -> ApprovalEngine:
    return runtime(request).approvals


def _approver(request: Request) -> service.Approver | Response:
    """The approver whose token the request carries, or the 401 to answer."""
    approvers = runtime(request).approvers
    approver = approvers.lookup(request.headers.get("authorization", ""))
    if approver is None:
        response = _problem(401, "Missing or invalid approver token")
        response.headers["WWW-Authenticate"] = 'Bearer realm="signoff"'
        return response
    return approver


Endpoint = Callable[[Request], Awaitable[Response]]


def _approvers_only(endpoint: Endpoint) -> Endpoint:
    """Reading requests and the audit log needs an approver's token too: arguments and decisions are sensitive."""

    async def guarded(request: Request) -> Response:
        approver = _approver(request)
        if isinstance(approver, Response):
            return approver
        return await endpoint(request)

    return guarded


async def _decision_body(
    request: Request, keys: tuple[str, ...], rejecting: bool = False
) -> tuple[dict[str, Any], str] | Response:
    """A decision's JSON object body and its `reason` (empty when absent), or the error that says what is wrong:
    400 for a body that is not a JSON object or a bad reason, 422 for a key this decision does not take (a
    misspelt or unsupported key is never silently ignored: the approver would believe it took effect)."""
    payload = await json_object(request)
    if isinstance(payload, str):
        return _problem(400, payload)
    unknown = [key for key in payload if key not in keys]
    if unknown:
        names = ", ".join(json.dumps(k, ensure_ascii=True)[:80] for k in unknown[:5])
        takes = " and ".join(f'"{k}"' for k in keys)
        return _problem(422, f"unknown key(s) {names}: this decision takes {takes}; nothing was decided")
    reason = payload.get("reason", "")
    if not isinstance(reason, str):
        return _problem(400, f'"reason" must be a string of at most {MAX_REASON} characters')
    why = reason_problem(reason, rejecting=rejecting)  # the domain's rule, said before anything is looked up
    return _problem(400, InvalidReason(why).args[0]) if why is not None else (payload, reason)


def _grant_seconds(payload: dict[str, Any]) -> float | Response | None:
    """The `grant` of an approval body in seconds ("15m", "1h", or seconds), None when absent, or the 400."""
    if payload.get("grant") is None:
        return None
    seconds = parse_duration(payload["grant"])
    if seconds is None:
        return _problem(400, '"grant" must be a duration such as "15m", "1h" or a number of seconds')
    return seconds


def _pin_view(pin: ToolPin) -> dict[str, Any]:
    return {
        "server": pin.server,
        "tool": pin.tool,
        "digest": pin.digest,
        "policy_version": pin.policy_version,
        "pinned_at": service.as_utc(pin.pinned_at).isoformat(),
        "drifted": pin.drift_digest is not None,
        "drift_digest": pin.drift_digest,
        "drifted_at": service.as_utc(pin.drifted_at).isoformat() if pin.drifted_at else None,
        "definition": json.loads(pin.definition) if pin.definition else None,
        "drift_definition": json.loads(pin.drift_definition) if pin.drift_definition else None,
    }


# A domain error and the status it answers with: mapped here and nowhere else.
_STATUS: tuple[tuple[type[ApprovalError], int], ...] = (
    (ApprovalNotFound, 404),
    (GrantNotFound, 404),
    (NotAllowed, 403),
    (AlreadyDecided, 409),
    (GrantEnded, 409),
    (GrantNotAllowed, 422),
    (EditRefused, 422),
    (InvalidReason, 400),
    (IdTooShort, 400),
    (AmbiguousId, 409),
)


def _refusal(exc: ApprovalError) -> JSONResponse | None:
    """The answer to a domain refusal, with the state a request or grant is in, or the ids a prefix matches."""
    code = next((code for kind, code in _STATUS if isinstance(exc, kind)), None)
    if code is None:
        return None
    extra: dict[str, Any] = {"status": exc.status} if isinstance(exc, AlreadyDecided | GrantEnded) else {}
    if isinstance(exc, AmbiguousId):
        extra["matches"] = exc.matches
    return _problem(code, str(exc), **extra)


async def _path_request(request: Request) -> UUID:
    """The approval request the path's `{id}` names: its whole id or a unique prefix of it.

    Raises:
        ApprovalNotFound, IdTooShort, AmbiguousId: as `prefixes.request_id`.
    """
    return await _engine(request).store.run(prefixes.request_id, request.path_params["id"])


def _as_approver(endpoint: Callable[[Request, service.Approver], Awaitable[Response]]) -> Endpoint:
    """An endpoint that acts for the approver whose token the request carries (401 without one); the domain's
    refusals become their HTTP statuses, with the state a request or grant is already in where there is one."""

    async def acting(request: Request) -> Response:
        approver = _approver(request)
        if isinstance(approver, Response):
            return approver
        try:
            return await endpoint(request, approver)
        except ApprovalError as exc:
            answer = _refusal(exc)
            if answer is None:
                raise
            return answer

    return acting


async def list_approvals(request: Request) -> Response:
    engine = _engine(request)
    params = request.query_params
    rows = await engine.store.run(
        lambda s: service.list_requests(
            s,
            status=params.get("status"),
            server=params.get("server"),
            tool=params.get("tool"),
            identity=params.get("agent"),
            limit=limit(request),
        )
    )
    return JSONResponse({"approvals": [engine.view(r) for r in rows]})


async def get_approval(request: Request) -> Response:
    engine = _engine(request)
    try:
        request_id = await _path_request(request)
        row, decisions = await engine.store.run(
            lambda s: (service.get_request(s, request_id), service.decisions_for(s, request_id))
        )
    except ApprovalError as exc:
        answer = _refusal(exc)
        if answer is None:
            raise
        return answer
    return JSONResponse({**service.public_view(row, decisions, engine.now()), "url": engine.link(row.id)})


async def _vote(request: Request, approver: service.Approver, verdict: Verdict) -> Response:
    engine = _engine(request)
    # A rejection's "grant" is refused by the domain, which says a grant comes with an approval; "arguments"
    # (approve with edits) only comes with an approval.
    keys = ("reason", "grant", "arguments") if verdict == Verdict.APPROVE else ("reason", "grant")
    body = await _decision_body(request, keys, rejecting=verdict == Verdict.REJECT)  # the body's faults first
    if isinstance(body, Response):
        return body
    payload, reason = body
    seconds = _grant_seconds(payload)
    if isinstance(seconds, Response):
        return seconds
    request_id = await _path_request(request)  # a refusal is answered by _as_approver
    if "arguments" in payload:
        edited, running = payload["arguments"], runtime(request)
        result = await approve_with_edits(running, request_id, approver, edited, reason.strip(), "api", seconds)
    else:
        result = await engine.decide(request_id, approver, verdict, reason.strip(), "api", seconds)
    view = {**service.public_view(result.request, result.decisions, engine.now()), "url": engine.link(request_id)}
    grant = grants.grant_view(result.grant, engine.now()) if result.grant is not None else None
    return JSONResponse({**view, "settled": result.settled, "approvals": result.approvals, "grant": grant})


async def approve(request: Request, approver: service.Approver) -> Response:
    return await _vote(request, approver, Verdict.APPROVE)


async def reject(request: Request, approver: service.Approver) -> Response:
    return await _vote(request, approver, Verdict.REJECT)


async def audit(request: Request) -> Response:
    params = request.query_params
    filters = {name: params.get(name, "") for name in AUDIT_FILTERS}
    filters["identity"] = params.get("agent") or filters["identity"]  # `agent` is the name the other routes use
    rows = await _engine(request).store.run(latest_events, filters, limit(request))
    return JSONResponse({"events": [json.loads(row.model_dump_json()) for row in rows]})


async def list_grants(request: Request) -> Response:
    engine = _engine(request)
    params = request.query_params
    status = params.get("status", GrantStatus.ACTIVE)
    now = engine.now()
    if status == GrantStatus.ACTIVE:
        rows = await engine.store.run(grants.active_grants, now)
    else:
        rows = await engine.store.run(
            lambda s: grants.list_grants(
                s, status=None if status == "all" else status, server=params.get("server"), limit=limit(request)
            )
        )
    views = [grants.grant_view(g, now) for g in rows if params.get("server") in (None, g.server)]
    return JSONResponse({"grants": views})


async def revoke_grant(request: Request, approver: service.Approver) -> Response:
    engine = _engine(request)
    body = await _decision_body(request, ("reason",))
    if isinstance(body, Response):
        return body
    grant_id = await engine.store.run(prefixes.grant_id, request.path_params["id"])
    _, reason = body
    grant = await engine.revoke_grant(grant_id, approver.name, reason.strip(), "api")
    return JSONResponse(grants.grant_view(grant, engine.now()))


async def list_drift(request: Request) -> Response:
    params = request.query_params
    drifted_only = params.get("all") not in ("1", "true")
    rows = await _engine(request).store.run(pins.list_pins, params.get("server"), drifted_only)
    return JSONResponse({"tools": [_pin_view(pin) for pin in rows]})


async def accept_drift(request: Request, approver: service.Approver) -> Response:
    gateway, tools = runtime(request).gateway, runtime(request).tools
    server, tool = request.path_params["server"], request.path_params.get("tool")
    served = gateway.servers.get(server)
    if served is None:
        return _problem(404, f"No server named {server!r}")
    accepted = await tools.accept(server, tool, approver.name, "api", served.policy.digest)
    return JSONResponse({"server": server, "accepted": accepted, "policy_version": served.policy.digest})


async def reload_policies(request: Request, approver: service.Approver) -> Response:
    watcher = runtime(request).watcher
    results = await watcher.check_all(force=True)
    servers: dict[str, dict[str, Any]] = {}
    for slot, result in results.items():
        health = {"result": result, **watcher.files[slot].health(watcher.policy(slot))}
        if slot.agent is None:
            servers.setdefault(slot.server, {}).update(health)
        else:
            servers.setdefault(slot.server, {}).setdefault("agent_policies", {})[slot.agent] = health
    refused = any(r is Check.REFUSED for r in results.values())
    return JSONResponse({"servers": servers}, status_code=422 if refused else 200)


def build_routes() -> list[Route]:
    """The `/api` routes; each finds the approval engine and the approvers' tokens in the app's `Runtime`."""
    return [
        Route("/api/approvals", _approvers_only(list_approvals)),
        Route("/api/approvals/{id}", _approvers_only(get_approval)),
        Route("/api/approvals/{id}/approve", _as_approver(approve), methods=["POST"]),
        Route("/api/approvals/{id}/reject", _as_approver(reject), methods=["POST"]),
        Route("/api/audit", _approvers_only(audit)),
        Route("/api/grants", _approvers_only(list_grants)),
        Route("/api/grants/{id}/revoke", _as_approver(revoke_grant), methods=["POST"]),
        Route("/api/drift", _approvers_only(list_drift)),
        Route("/api/drift/{server}/accept", _as_approver(accept_drift), methods=["POST"]),
        Route("/api/drift/{server}/{tool}/accept", _as_approver(accept_drift), methods=["POST"]),
        Route("/api/policies/reload", _as_approver(reload_policies), methods=["POST"]),
    ]
