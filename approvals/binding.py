"""Binding open approval requests to the policy in force: a request asked under one policy version stands under the
next only if that version still sends the same call to the same rule and the same approvers.

An approval is a person's answer to a question the policy asked ("may this agent kill pid 4242? alice or the dba
group decides"). When the policy changes the question (the call is now denied or hidden, runs without asking, or
another rule or other approvers decide it), an answer to the old question must not let the call through, and a
question still open must not wait for people who are no longer the ones to ask. Such a request is withdrawn: its
status becomes `cancelled` with outcome `policy_changed`, its comment and audit row say "the policy changed: ...",
and every repeat of the call within the remember window is told so.

The request row holds the call exactly as made (the arguments unredacted, since the call must run with them, and the
caller's groups), so the new version judges the same call the old one did, with a throwaway rate limiter (nothing is
consumed). A row whose call cannot be read back is withdrawn: what cannot be checked is not let through.
"""

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlmodel import Session, col, select

from approvals.models import ApprovalRequest, ApprovalStatus, AuditKind
from approvals.service import POLICY_CHANGED, _audit, _cas
from approvals.thresholds import encode_thresholds
from policies import Allow, Decision, Deny, Hidden, NeedsApproval, Policy, RateLimited, RateLimiter, ToolCall, evaluate

__all__ = ["POLICY_CHANGED", "policy_change", "rebind", "recheck", "withdraw_for_policy"]

OPEN = (ApprovalStatus.PENDING, ApprovalStatus.APPROVED)

PolicyFor = Callable[[str, str], Policy | None]  # (server, agent) -> the policy in force for that agent's calls


def _named(approvers: Any) -> str:
    return ", ".join(approvers) if approvers else "any approver"


def policy_change(request: ApprovalRequest, decision: Decision, version: str) -> str | None:
    """Why `request` no longer stands under policy `version`, whose verdict on its call is `decision`; None if it does.

    A rate limit is no part of what was approved (the throwaway limiter never refuses), so `RateLimited` stands.
    """
    match decision:
        case Deny(rule=rule, reason=reason):
            return f"version {version} denies this call ({rule}: {reason})"
        case Hidden():
            return f"version {version} hides the tool {request.tool!r}"
        case Allow():
            return f"version {version} lets this call run without approval"
        case RateLimited():
            return None
        case NeedsApproval(rule=rule, approval=spec):
            if rule != request.rule:
                return f"in version {version} the rule {rule} decides this call, not {request.rule}"
            before = json.loads(request.approvers)
            if list(spec.approvers) != before or spec.quorum != request.quorum:
                return (
                    f"in version {version} {rule} needs {spec.quorum} of {_named(spec.approvers)}, "
                    f"not {request.quorum} of {_named(before)}"
                )
            if encode_thresholds(spec) != request.thresholds:
                return f"in version {version} {rule} needs other approvals (its quorum.any_of changed)"
            if spec.allow_self_approval != request.allow_self_approval:
                return f"in version {version} {rule} changed whether the agent may approve its own call"
            if request.edited_arguments is not None and not spec.allow_edits:
                return f"in version {version} {rule} no longer allows the edit this approval made"
            return None
    return f"version {version} gives no verdict signoff knows"  # fail closed on a decision added later


def judged(request: ApprovalRequest, policy: Policy, clock: float) -> str | None:
    """Why `request` no longer stands under `policy` (see `policy_change`), judging its call afresh."""
    try:
        arguments = json.loads(request.arguments)
        groups = tuple(json.loads(request.groups or "[]"))
    except ValueError:
        return f"version {policy.digest} cannot be checked against the stored call"
    if not isinstance(arguments, dict):
        return f"version {policy.digest} cannot be checked against the stored call"
    call = ToolCall(request.server, request.tool, arguments, request.identity, groups)
    return policy_change(request, evaluate(policy, call, RateLimiter(), clock), policy.digest)


def withdraw_for_policy(session: Session, request: ApprovalRequest, now: datetime, why: str) -> bool:
    """Withdraw a pending or approved-not-yet-run request because the policy changed; whether this call did.

    A compare-and-set like every transition: a request claimed for execution a moment earlier runs under the version
    it was approved by (it was already on its way), and is not withdrawn.
    """
    comment = f"the policy changed: {why}"
    won = _cas(
        session,
        request.id,
        OPEN,
        status=ApprovalStatus.CANCELLED,
        finished_at=now,
        comment=comment,
        outcome=POLICY_CHANGED,
    )
    if won:
        _audit(session, request, AuditKind.CANCELLED, actor="signoff", outcome=POLICY_CHANGED, detail=comment)
    return won


def recheck(session: Session, request_id: UUID, decision: Decision, version: str, now: datetime) -> bool:
    """Withdraw the open request a repeat of its call is about to join if `decision`, the verdict of policy `version`
    now in force, no longer stands behind it: a fresh check before an approval is used, which the reload's own
    re-check (`rebind`) may not have reached yet. Whether this call withdrew it."""
    request = session.get(ApprovalRequest, request_id)
    if request is None or request.status not in OPEN or request.policy_version == version:
        return False
    why = policy_change(request, decision, version)
    withdrawn = why is not None and withdraw_for_policy(session, request, now, why)
    session.commit()
    return withdrawn


def rebind(session: Session, policy_for: PolicyFor, now: datetime, clock: float) -> list[UUID]:
    """Judge every open request (pending, or approved and not yet run) under the policy now in force for its call;
    withdraw those it no longer stands behind.

    A request asked under the version in force is not judged again. A request for a server no longer served
    (`policy_for` gives None) is left to its deadline.

    Returns:
        The ids this call withdrew.
    """
    open_requests = session.exec(select(ApprovalRequest).where(col(ApprovalRequest.status).in_(list(OPEN)))).all()
    withdrawn = []
    for request in open_requests:
        policy = policy_for(request.server, request.identity)
        if policy is None or policy.digest == request.policy_version:
            continue
        why = judged(request, policy, clock)
        if why is not None and withdraw_for_policy(session, request, now, why):
            withdrawn.append(request.id)
    session.commit()
    return withdrawn
