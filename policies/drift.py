"""Tool drift and shadow mode as policy decisions: what `on_drift` and `shadow` make of a decision.

Pure: the gateway notices that a tool changed (it compares digests of what the upstream lists) and asks here what
that means for a call. Nothing here knows how a tool is described on the wire.
"""

import json
from dataclasses import dataclass

from policies.model import (
    DEFAULT_APPROVAL,
    Allow,
    Decision,
    Deny,
    DriftAction,
    Hidden,
    NeedsApproval,
    Policy,
    RateLimited,
)

__all__ = ["ENFORCED", "Drift", "apply_drift", "drift_action", "is_shadowed", "shadow_outcome"]

ENFORCED = frozenset({DriftAction.REQUIRE_APPROVAL, DriftAction.DENY, DriftAction.HIDE})
"""The `on_drift` choices that change what happens to calls (the others only audit, or not even that)."""


@dataclass(frozen=True, slots=True)
class Drift:
    """A tool whose definition (description, input schema, annotations) changed upstream since it was pinned.

    `pinned` and `current` are digests of the two definitions.
    """

    tool: str
    pinned: str
    current: str


def drift_action(policy: Policy, tool: str) -> DriftAction:
    """Return what the policy does when `tool` drifts: its rule's `on_drift`, else the policy's."""
    rule = policy.resolve(tool)[1]
    if rule is not None and rule.on_drift is not None:
        return rule.on_drift
    return policy.on_drift


def apply_drift(policy: Policy, drift: Drift, decision: Decision) -> Decision:
    """Return the decision for a call to a drifted tool, given the policy's own `decision` for it.

    `require_approval` turns an Allow into NeedsApproval (with no grants: a grant was given for the tool as it was);
    `deny` and `hide` refuse. A decision that already refuses stands, since drift never loosens a policy.

    Args:
        policy: The policy in force.
        drift: The drifted tool and its pinned and current digests.
        decision: What `evaluate` decided for the call.

    Returns:
        The decision to enforce.
    """
    action = drift_action(policy, drift.tool)
    if action not in ENFORCED or isinstance(decision, Deny | Hidden | RateLimited):
        return decision
    rule = policy.resolve(drift.tool)[1]
    locator = f"{rule.locator}.on_drift" if rule is not None and rule.on_drift is not None else "on_drift"
    changed = (
        f"{json.dumps(drift.tool, ensure_ascii=False)} changed upstream since it was pinned "
        f"(definition {drift.pinned} is now {drift.current})"
    )
    until = "until the policy is re-checked or an approver accepts the change"
    if action is DriftAction.HIDE:
        return Hidden(locator)
    if action is DriftAction.DENY:
        return Deny(locator, f"{changed}, so calls to it are denied {until}")
    if isinstance(decision, NeedsApproval):
        return NeedsApproval(decision.rule, f"{decision.reason}; also, {changed}", decision.approval, None)
    approval = (rule.approval if rule is not None else None) or DEFAULT_APPROVAL
    return NeedsApproval(locator, f"{changed}, so a person must approve each call {until}", approval, None)


def is_shadowed(policy: Policy, tool: str) -> bool:
    """Return whether refusals of calls to `tool` are only audited: the policy's `shadow`, or its rule's.

    A hidden tool is shadowed only by the policy's `shadow` (a `hide` entry is not a rule).
    """
    if policy.shadow:
        return True
    hidden, rule = policy.resolve(tool)
    return hidden is None and rule is not None and rule.shadow


_SHADOW_OUTCOMES: dict[type, str] = {
    Deny: "shadow_denied",
    Hidden: "shadow_hidden",
    RateLimited: "shadow_rate_limited",
    NeedsApproval: "shadow_approval",
    Allow: "allowed",
}


def shadow_outcome(decision: Decision) -> str:
    """Return the audit outcome of a shadowed decision: `shadow_denied`, `shadow_hidden`, `shadow_rate_limited` or
    `shadow_approval` (an Allow is just `allowed`)."""
    return _SHADOW_OUTCOMES[type(decision)]
