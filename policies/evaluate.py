"""Deciding one tool call: `evaluate(policy, call, limiter, now) -> Decision`.

Pure apart from the rate-limit counters it is handed. It never raises, and when in doubt it refuses: a condition
that cannot be evaluated holds for `deny_if`/`approve_if` and fails for `require`.
"""

import json
import logging

from policies.conditions import Outcome, check, explain
from policies.limits import RateLimiter, describe_limit
from policies.model import (
    DEFAULT_APPROVAL,
    Action,
    Allow,
    Decision,
    Deny,
    Hidden,
    Limit,
    NeedsApproval,
    Policy,
    RateLimited,
    Rule,
    ToolCall,
    hide_locator,
)

logger = logging.getLogger(__name__)


def is_hidden(policy: Policy, tool: str) -> bool:
    """Return whether `tool` is hidden: left out of `tools/list` and refused when called."""
    return policy.resolve(tool)[0] is not None


def rule_for(policy: Policy, tool: str) -> Rule | None:
    """Return the `tools` entry that governs `tool` (exact name, else longest glob), or None for the default."""
    return policy.resolve(tool)[1]


def evaluate(policy: Policy, call: ToolCall, limiter: RateLimiter, now: float) -> Decision:
    """Decide what happens to one tool call.

    The order is: hidden, `action: deny`, `require`, `deny_if`, rate limits (all-tools and the rule's, counted
    only when all have room and the call is not refused), then `require_approval` or `approve_if`, then allow.

    Args:
        policy: The compiled policy of the call's server.
        call: The call to judge.
        limiter: The counters that rate limits consume.
        now: Seconds since the epoch.

    Returns:
        Allow, Deny, Hidden, RateLimited or NeedsApproval; never raises.
    """
    try:
        return _evaluate(policy, call, limiter, now)
    except Exception:
        # Fail closed on anything unforeseen (a policy built by hand, an odd argument type): refusing is safe.
        logger.exception("policy evaluation failed for tool %s", call.tool)
        return Deny("error", "the policy could not be evaluated for this call, so it is refused")


def _evaluate(policy: Policy, call: ToolCall, limiter: RateLimiter, now: float) -> Decision:
    tool = call.tool
    hidden, rule = policy.resolve(tool)
    if hidden is not None:
        return Hidden(hide_locator(hidden))
    if rule is None:
        return _default(policy, call, limiter, now)

    if rule.action is Action.DENY:
        return Deny(rule.locator, rule.reason or f'{rule.locator} denies every call to "{tool}"')

    arguments = call.arguments
    for i, condition in enumerate(rule.require):
        outcome, actual = check(condition, arguments)
        if outcome is not Outcome.HOLDS:
            locator = f"require[{i}]"
            reason = rule.reason or explain(condition, outcome, actual, locator, rule.redact, required=True)
            return Deny(f"{rule.locator}.{locator}", reason)
    for i, condition in enumerate(rule.deny_if):
        outcome, actual = check(condition, arguments)
        if outcome is not Outcome.FAILS:
            locator = f"deny_if[{i}]"
            reason = rule.reason or explain(condition, outcome, actual, locator, rule.redact, required=False)
            return Deny(f"{rule.locator}.{locator}", reason)

    limited = _rate_limited(call, policy.located_all_tools_limits + rule.located_limits, limiter, now)
    if limited is not None:
        return limited

    approval = rule.approval or DEFAULT_APPROVAL
    if rule.action is Action.REQUIRE_APPROVAL:
        reason = rule.reason or f'{rule.locator} requires a person to approve every call to "{tool}"'
        return NeedsApproval(rule.locator, reason, approval, rule.grant_max_seconds)
    for i, condition in enumerate(rule.approve_if):
        outcome, actual = check(condition, arguments)
        if outcome is not Outcome.FAILS:
            locator = f"approve_if[{i}]"
            reason = rule.reason or (
                explain(condition, outcome, actual, locator, rule.redact, required=False)
                + ", so a person must approve the call"
            )
            return NeedsApproval(f"{rule.locator}.{locator}", reason, approval, rule.grant_max_seconds)
    return Allow(rule.locator)


def _default(policy: Policy, call: ToolCall, limiter: RateLimiter, now: float) -> Decision:
    name = json.dumps(call.tool, ensure_ascii=False)
    if policy.default is Action.DENY:
        return Deny("default", policy.default_reason or f"no rule allows {name} and the policy's default is deny")
    limited = _rate_limited(call, policy.located_all_tools_limits, limiter, now)
    if limited is not None:
        return limited
    if policy.default is Action.REQUIRE_APPROVAL:
        reason = policy.default_reason or f"no rule covers {name} and the policy's default is require_approval"
        return NeedsApproval("default", reason, DEFAULT_APPROVAL)
    return Allow("default")


def _rate_limited(
    call: ToolCall, limits: tuple[tuple[str, Limit], ...], limiter: RateLimiter, now: float
) -> RateLimited | None:
    """Count the call against `limits` if all have room; otherwise refuse it, naming the first exhausted one."""
    exhausted = limiter.try_acquire(call, limits, now) if limits else None
    if exhausted is None:
        return None
    locator, limit, retry_after = exhausted
    return RateLimited(locator, limit.counter, retry_after, describe_limit(limit, retry_after))
