"""Approve with edits: the edited call is checked again before anything is decided, for the API, web page and Slack.

The edited call (same server, tool and caller, with the caller's configured groups) must pass where the
original did: under the policy version the request was made under (a reload in between refuses the edit: the
approver saw one policy, the call would run under another), needing approval by the same rule, a rule that
allows edits and names this approver, and valid against the tool's input schema when its definition is pinned.
Rate limits are not consumed: the check counts with a throwaway limiter. Any refusal raises `EditRefused` (422
in the API) and decides nothing; the refusal is audited.
"""

import json
import time
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from jsonschema import SchemaError
from jsonschema.validators import validator_for

from approvals import pins, service
from approvals.errors import EditRefused
from approvals.models import ApprovalRequest, ApprovalStatus, Verdict
from integrations.runtime import Runtime
from policies import Allow, Deny, Hidden, NeedsApproval, RateLimited, RateLimiter, ToolCall, evaluate
from policies.evaluate import rule_for

__all__ = ["POLICY_CHANGED", "approve_with_edits", "edit_refusal", "edits_allowed"]

POLICY_CHANGED = "the policy changed since the request; decide on the original or let the agent call again"


def _named(approvers: tuple[str, ...], approver: service.Approver) -> bool:
    return not approvers or approver.name in approvers or any(f"group:{g}" in approvers for g in approver.groups)


def _schema_problem(schema: Any, arguments: Mapping[str, Any]) -> str | None:
    if not isinstance(schema, dict):
        return None
    try:
        validator = validator_for(schema)(schema)
        error = next(iter(sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))), None)
    except SchemaError:  # a tool with a broken schema: nothing to check against
        return None
    if error is None:
        return None
    where = ".".join(str(p) for p in error.absolute_path) or "the arguments"
    return f"the tool's input schema refuses {where}: {error.message[:300]}"


def edits_allowed(rt: Runtime, request: ApprovalRequest) -> bool:
    """Whether `request` may be approved with edits at all: pending, under the policy version in force, by a rule
    that allows edits (the page and Slack offer "Edit and approve" only then)."""
    served = rt.gateway.servers.get(request.server)
    if served is None or request.status != ApprovalStatus.PENDING:
        return False
    policy = served.policy_for(request.identity)
    rule = rule_for(policy, request.tool)
    ours = rule is not None and (request.rule == rule.locator or request.rule.startswith(rule.locator + "."))
    return (
        policy.digest == request.policy_version
        and ours
        and rule is not None
        and rule.approval is not None
        and (rule.approval.allow_edits)
    )


async def edit_refusal(rt: Runtime, request: ApprovalRequest, approver: service.Approver, arguments: Any) -> str | None:
    """Why the edit of `request` to `arguments` by `approver` may not be approved, or None when it may."""
    if not isinstance(arguments, dict):
        return '"arguments" must be a JSON object: the tool\'s arguments as the call should run'
    served = rt.gateway.servers.get(request.server)
    if served is None:
        return f"the server {request.server!r} is no longer served"
    policy = served.policy_for(request.identity)
    if policy.digest != request.policy_version:
        return POLICY_CHANGED
    rule = rule_for(policy, request.tool)
    ours = rule is not None and (request.rule == rule.locator or request.rule.startswith(rule.locator + "."))
    if rule is None or not ours or rule.approval is None or not rule.approval.allow_edits:
        return (
            f'the rule {request.rule} does not allow edits (it would need "approval": {{"allow_edits": true}}); '
            "approve or reject the call as it is"
        )
    # The caller as the configuration knows it: the groups an OAuth access token added for one call are not kept.
    groups = rt.gateway.rights_of(request.identity).caller.groups
    call = ToolCall(request.server, request.tool, arguments, request.identity, groups)
    decision = evaluate(policy, call, RateLimiter(), time.time())  # a throwaway limiter: the check counts nothing
    match decision:
        case Deny(rule=by, reason=reason):
            return f"the policy would deny the edited call (rule {by}: {reason})"
        case Hidden():
            return "the policy hides this tool"
        case RateLimited(rule=by, reason=reason):
            return f"the policy would rate-limit the edited call (rule {by}: {reason})"
        case Allow():
            return "the edited call would run without approval, so it is not the call that was asked about"
        case NeedsApproval(rule=by) if by != request.rule:
            return f"the edited call needs approval by the rule {by}, not {request.rule}"
        case NeedsApproval(approval=spec) if not _named(spec.approvers, approver):
            return f"the edited call needs approval by {', '.join(spec.approvers)}, which {approver.name} is not"
    definition = await rt.approvals.store.run(_definition, request.server, request.tool)
    return _schema_problem(definition.get("inputSchema"), arguments) if definition else None


def _definition(session: Any, server: str, tool: str) -> dict[str, Any] | None:
    for pin in pins.list_pins(session, server, drifted_only=False):
        if pin.tool == tool and pin.definition:
            found: dict[str, Any] = json.loads(pin.definition)
            return found
    return None


async def approve_with_edits(
    rt: Runtime,
    request_id: UUID,
    approver: service.Approver,
    arguments: Any,
    comment: str,
    channel: str,
    grant_seconds: float | None = None,
) -> service.VoteResult:
    """Approve `request_id` with the call's arguments edited to `arguments`, once the edited call passes.

    Whether this approver may decide at all, and whether the request is still pending, is the domain's first
    word (the same 403 and 409 as an approval as requested); only then is the edit checked.

    Raises:
        EditRefused: the edited call would not pass (audited; nothing is decided).
        ApprovalError: whatever `engine.decide` raises.
    """
    engine = rt.approvals
    request = await engine.store.run(service.get_request, request_id)
    if request.status != ApprovalStatus.PENDING or service.may_decide(request, approver) is not None:
        return await engine.decide(request_id, approver, Verdict.APPROVE, comment, channel, grant_seconds, arguments)
    why = await edit_refusal(rt, request, approver, arguments)
    if why is not None:
        detail = f"edited arguments refused: {why}"
        await engine.store.run(service.refuse_unknown, request_id, approver.name, Verdict.APPROVE, channel, detail)
        raise EditRefused(request_id, why)
    return await engine.decide(request_id, approver, Verdict.APPROVE, comment, channel, grant_seconds, arguments)
