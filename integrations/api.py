"""The JSON API: list and read approval requests, approve or reject them, read the audit log.

Adapters only: decode the request, call one domain function through the desk, encode the answer. Domain
errors map to HTTP statuses here and nowhere else.
"""

import json
import uuid
from typing import Any

from sqlmodel import Session, col, select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from approvals import service
from approvals.errors import AlreadyDecided, ApprovalNotFound, NotAllowed
from approvals.models import AuditEvent, Verdict
from integrations.gateway.holding import ApprovalDesk
from integrations.tokens import TokenBook

MAX_REASON = 2000


def _problem(code: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=code)


def _request_id(request: Request) -> uuid.UUID | None:
    try:
        return uuid.UUID(request.path_params["id"])
    except ValueError:
        return None


def _limit(request: Request, default: int = 100, most: int = 1000) -> int:
    raw = request.query_params.get("limit", str(default))
    return max(1, min(int(raw), most)) if raw.isdigit() else default


def _desk(request: Request) -> ApprovalDesk:
    desk: ApprovalDesk = request.app.state.desk
    return desk


def build_routes() -> list[Route]:
    """The `/api` routes; each finds the desk and the approvers' tokens in the app's state."""

    async def list_approvals(request: Request) -> Response:
        desk = _desk(request)
        params = request.query_params
        rows = await desk.db(
            lambda s: service.list_requests(
                s,
                status=params.get("status"),
                server=params.get("server"),
                tool=params.get("tool"),
                identity=params.get("agent"),
                limit=_limit(request),
            )
        )
        return JSONResponse({"approvals": [desk.view(r) for r in rows]})

    async def get_approval(request: Request) -> Response:
        desk = _desk(request)
        request_id = _request_id(request)
        if request_id is None:
            return _problem(404, "No approval request with that id")
        try:
            row, decisions = await desk.db(
                lambda s: (service.get_request(s, request_id), service.decisions_for(s, request_id))
            )
        except ApprovalNotFound as exc:
            return _problem(404, str(exc))
        return JSONResponse({**service.public_view(row, decisions), "url": desk.link(row.id)})

    async def vote(request: Request, verdict: Verdict) -> Response:
        desk = _desk(request)
        approvers: TokenBook[service.Approver] = request.app.state.approvers
        approver = approvers.lookup(request.headers.get("authorization", ""))
        if approver is None:
            response = _problem(401, "Missing or invalid approver token")
            response.headers["WWW-Authenticate"] = 'Bearer realm="signoff"'
            return response
        request_id = _request_id(request)
        if request_id is None:
            return _problem(404, "No approval request with that id")
        body = await request.body()
        try:
            payload = json.loads(body) if body.strip() else {}
        except ValueError:
            return _problem(400, 'The body must be JSON like {"reason": "..."}')
        reason = payload.get("reason", "") if isinstance(payload, dict) else None
        if not isinstance(reason, str) or len(reason) > MAX_REASON:
            return _problem(400, f'"reason" must be a string of at most {MAX_REASON} characters')
        if verdict == Verdict.REJECT and not reason.strip():
            return _problem(400, 'A rejection needs a "reason": the agent and the audit log will show it')
        try:
            result = await desk.decide(request_id, approver, verdict, reason.strip(), "api")
        except ApprovalNotFound as exc:
            return _problem(404, str(exc))
        except NotAllowed as exc:
            return _problem(403, str(exc))
        except AlreadyDecided as exc:
            return _problem(409, str(exc), status=exc.status)
        decisions = await desk.db(service.decisions_for, request_id)
        view = {**service.public_view(result.request, decisions), "url": desk.link(request_id)}
        return JSONResponse({**view, "settled": result.settled, "approvals": result.approvals})

    async def approve(request: Request) -> Response:
        return await vote(request, Verdict.APPROVE)

    async def reject(request: Request) -> Response:
        return await vote(request, Verdict.REJECT)

    async def audit(request: Request) -> Response:
        params = request.query_params

        def read(session: Session) -> list[AuditEvent]:
            query = select(AuditEvent)
            for name in ("kind", "server", "tool", "identity", "actor", "outcome"):
                if params.get(name):
                    query = query.where(col(getattr(AuditEvent, name)) == params[name])
            if params.get("agent"):
                query = query.where(col(AuditEvent.identity) == params["agent"])
            return list(session.exec(query.order_by(col(AuditEvent.id).desc()).limit(_limit(request))).all())

        rows = await _desk(request).db(read)
        return JSONResponse({"events": [json.loads(row.model_dump_json()) for row in rows]})

    return [
        Route("/api/approvals", list_approvals),
        Route("/api/approvals/{id}", get_approval),
        Route("/api/approvals/{id}/approve", approve, methods=["POST"]),
        Route("/api/approvals/{id}/reject", reject, methods=["POST"]),
        Route("/api/audit", audit),
    ]
