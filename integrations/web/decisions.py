"""The approval pages: what waits for a decision, one request in full, and the Approve and Reject forms.

A decision made here goes through `ApprovalEngine.decide` with the channel "web", exactly like the API's and
Slack's, so the held call wakes, the audit log records who decided, and a lost race is refused, not counted.
"""

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute

from approvals import prefixes, service
from approvals.audit import displayable, redacted
from approvals.errors import (
    AlreadyDecided,
    AmbiguousId,
    ApprovalNotFound,
    EditRefused,
    IdTooShort,
    InvalidReason,
    NotAllowed,
)
from approvals.models import ApprovalDecision, ApprovalRequest, ApprovalStatus, Verdict
from approvals.reasons import MAX_REASON, reason_problem
from approvals.summary import arguments_summary
from integrations.editing import approve_with_edits, edits_allowed
from integrations.params import path_id
from integrations.runtime import runtime
from integrations.web.arguments import laid_out
from integrations.web.identity import Identity
from integrations.web.pages import Pages, when

RECENT = 30
STATUS_WORDS = {
    ApprovalStatus.PENDING: "waiting for a decision",
    ApprovalStatus.APPROVED: "approved, about to run",
    ApprovalStatus.EXECUTING: "approved, running now",
    ApprovalStatus.EXECUTED: "approved and run",
    ApprovalStatus.FAILED: "approved, but the call failed",
    ApprovalStatus.REJECTED: "rejected",
    ApprovalStatus.EXPIRED: "expired: nobody decided in time, or nobody used the approval in time",
    ApprovalStatus.CANCELLED: "withdrawn: the agent cancelled the call, or the policy changed",
}


@dataclass(frozen=True, slots=True)
class Listed:
    """One request as the list shows it, with whether the viewer may decide it, the votes so far, and the one-line
    summary of its (redacted) arguments."""

    request: ApprovalRequest
    refusal: str | None
    approvals: int
    summary: str = ""


def summary_of(row: ApprovalRequest) -> str:
    """The one-line summary of a request's arguments, as redacted as the rest of the page shows them."""
    return arguments_summary(redacted(displayable(row.arguments), json.loads(row.redact)))


def after_approval(view: dict[str, Any], edited: bool = False) -> str:
    """The banner after an approval that settled a request, saying truthfully when the call runs: at once, for an
    agent whose call is still held open; else when the agent calls again, which it was told to do."""
    what = "You approved this request with your edits" if edited else "You approved this request"
    if view["agent_waiting"]:
        return f"{what}: the agent is waiting; it runs now."
    until = f" (until {when(view['use_by'])})" if view.get("use_by") else ""
    return f"{what}: the agent was told to retry; it runs when it calls again{until}."


def _overview(session: Session) -> tuple[list[ApprovalRequest], list[ApprovalRequest], dict[uuid.UUID, int]]:
    pending = sorted(service.list_requests(session, status=ApprovalStatus.PENDING, limit=500), key=lambda r: r.deadline)
    recent = [r for r in service.list_requests(session, limit=RECENT + len(pending)) if r.status != "pending"]
    votes = {
        r.id: sum(d.verdict == Verdict.APPROVE for d in service.decisions_for(session, r.id))
        for r in pending
        if r.quorum > 1
    }
    return pending, recent[:RECENT], votes


def _detail(session: Session, request_id: uuid.UUID) -> tuple[ApprovalRequest, list[ApprovalDecision]]:
    return service.get_request(session, request_id), list(service.decisions_for(session, request_id))


def build_decision_routes(pages: Pages) -> list[BaseRoute]:
    async def overview_context(request: Request, identity: Identity) -> dict[str, Any]:
        engine = pages.approvals(request)
        pending, recent, votes = await engine.store.run(_overview)
        now = engine.now()
        listed = [
            Listed(r, service.may_decide(r, identity.approver, now), votes.get(r.id, 0), summary_of(r)) for r in pending
        ]
        return {"pending": listed, "recent": recent, "status_words": STATUS_WORDS, "section": "approvals"}

    async def overview(request: Request, identity: Identity) -> Response:
        context = await overview_context(request, identity)
        return pages.render(request, "approvals.html", context, identity=identity)

    async def overview_live(request: Request, identity: Identity) -> Response:
        context = await overview_context(request, identity)
        return pages.render(request, "_approvals_live.html", context, identity=identity)

    async def detail_context(
        request: Request, identity: Identity, row: ApprovalRequest, votes: list[ApprovalDecision], now: datetime
    ) -> dict[str, Any]:
        view = service.public_view(row, votes, now)
        edited = view["edited_arguments"]
        mine = next((v for v in votes if v.approver == identity.approver.name), None)
        approvals = sum(v.verdict == Verdict.APPROVE for v in votes)
        return {
            "row": row,
            "view": view,
            "arguments": json.dumps(view["arguments"], indent=2, ensure_ascii=False),
            "laid_out": laid_out(view["arguments"]),
            "edited": json.dumps(edited, indent=2, ensure_ascii=False) if edited is not None else None,
            "editable": edits_allowed(runtime(request), row),
            "redacted_paths": json.loads(row.redact),
            "votes": votes,
            "approvals": approvals,
            "mine": mine,
            "refusal": service.may_decide(row, identity.approver, now),
            "status_words": STATUS_WORDS,
            "max_reason": MAX_REASON,
            "section": "approvals",
        }

    async def render_detail(
        request: Request,
        identity: Identity,
        *,
        template: str = "approval.html",
        status_code: int = 200,
        error: str | None = None,
        reason: str = "",
        draft: str | None = None,
    ) -> Response:
        request_id = path_id(request)
        if request_id is None:
            return pages.refuse(request, 404, "No such request", "There is no approval request with that id.")
        try:
            row, votes = await pages.approvals(request).store.run(_detail, request_id)
        except ApprovalNotFound:
            return pages.refuse(request, 404, "No such request", f"There is no approval request with id {request_id}.")
        now = pages.approvals(request).now()
        context = {**await detail_context(request, identity, row, votes, now), "error": error, "reason": reason}
        context["draft"] = draft if draft is not None else context["arguments"]
        return pages.render(request, template, context, status_code=status_code, identity=identity)

    async def detail(request: Request, identity: Identity) -> Response:
        if path_id(request) is None:  # a prefix as people type it (8+ characters): to the request's own page
            try:
                found = await pages.approvals(request).store.run(prefixes.request_id, request.path_params["id"])
            except (IdTooShort, AmbiguousId) as exc:
                return pages.refuse(request, 400 if isinstance(exc, IdTooShort) else 409, "Which request?", str(exc))
            except ApprovalNotFound:
                return pages.refuse(request, 404, "No such request", "There is no approval request with that id.")
            return RedirectResponse(f"/approvals/{found}", status_code=303)
        return await render_detail(request, identity)

    async def detail_live(request: Request, identity: Identity) -> Response:
        return await render_detail(request, identity, template="_approval_state.html")

    async def vote(request: Request, identity: Identity, verdict: Verdict) -> Response:
        request_id = path_id(request)
        if request_id is None:
            return pages.refuse(request, 404, "No such request", "There is no approval request with that id.")
        form = await request.form()
        raw = form.get("reason", "")
        reason = raw.strip() if isinstance(raw, str) else ""
        why = reason_problem(reason, rejecting=verdict == Verdict.REJECT)  # the domain's rule, in the page's words
        if why is not None:
            error = InvalidReason(why).args[0] + "."
            kept = reason[:MAX_REASON] if len(reason) > MAX_REASON else ""  # a text too long is shown back, cut
            return await render_detail(request, identity, status_code=400, error=error, reason=kept)
        try:
            result = await pages.approvals(request).decide(request_id, identity.approver, verdict, reason, "web")
        except (ApprovalNotFound, NotAllowed, AlreadyDecided) as exc:
            return await refused(request, identity, request_id, exc)
        if verdict == Verdict.REJECT:
            request.session["flash"] = "You rejected this request; the agent is told why."
        elif result.settled:
            request.session["flash"] = after_approval(
                service.public_view(result.request, now=pages.approvals(request).now())
            )
        else:
            request.session["flash"] = (
                f"Your approval is recorded: {result.approvals} of {result.request.quorum} needed so far."
            )
        return RedirectResponse(f"/approvals/{request_id}", status_code=303)

    async def refused(
        request: Request, identity: Identity, request_id: uuid.UUID, exc: ApprovalNotFound | NotAllowed | AlreadyDecided
    ) -> Response:
        """The page a decision the domain refused gets (a vote and an edited approval alike)."""
        if isinstance(exc, ApprovalNotFound):
            return pages.refuse(request, 404, "No such request", f"There is no approval request with id {request_id}.")
        if isinstance(exc, NotAllowed):
            return await render_detail(request, identity, status_code=403, error=f"You may not decide this: {exc.why}.")
        error = f"Nothing was recorded: this request is already {exc.status}."
        return await render_detail(request, identity, status_code=409, error=error)

    async def approve(request: Request, identity: Identity) -> Response:
        return await vote(request, identity, Verdict.APPROVE)

    async def approve_edited(request: Request, identity: Identity) -> Response:
        """The "Edit and approve" form: the arguments as JSON text, checked here again (the script checks them as
        they are typed); every refusal is the page's error banner, with the text kept for another try."""
        request_id = path_id(request)
        if request_id is None:
            return pages.refuse(request, 404, "No such request", "There is no approval request with that id.")
        form = await request.form()
        raw, note = form.get("arguments", ""), form.get("reason", "")
        draft = raw if isinstance(raw, str) else ""
        reason = note.strip() if isinstance(note, str) else ""
        try:
            arguments = json.loads(draft)
        except ValueError as exc:
            error = f"The edited arguments are not valid JSON: {exc}. Nothing was decided."
            return await render_detail(request, identity, status_code=400, error=error, draft=draft)
        why = reason_problem(reason, rejecting=False)
        if why is not None:
            return await render_detail(request, identity, status_code=400, error=InvalidReason(why).args[0] + ".")
        try:
            result = await approve_with_edits(runtime(request), request_id, identity.approver, arguments, reason, "web")
        except (ApprovalNotFound, NotAllowed, AlreadyDecided) as exc:
            return await refused(request, identity, request_id, exc)
        except EditRefused as exc:
            return await render_detail(request, identity, status_code=422, error=f"{exc}.", draft=draft)
        request.session["flash"] = after_approval(
            service.public_view(result.request, now=pages.approvals(request).now()), edited=True
        )
        return RedirectResponse(f"/approvals/{request_id}", status_code=303)

    async def reject(request: Request, identity: Identity) -> Response:
        return await vote(request, identity, Verdict.REJECT)

    return [
        pages.route("/approvals", pages.page(overview), name="approvals"),
        pages.route("/approvals/live", pages.fragment(overview_live), name="approvals_live"),
        pages.route("/approvals/{id}", pages.page(detail), name="approval"),
        pages.route("/approvals/{id}/live", pages.fragment(detail_live), name="approval_live"),
        pages.route("/approvals/{id}/approve", pages.form(approve), name="approve", post=True),
        pages.route("/approvals/{id}/reject", pages.form(reject), name="reject", post=True),
        pages.route("/approvals/{id}/approve-edited", pages.form(approve_edited), name="approve_edited", post=True),
    ]
