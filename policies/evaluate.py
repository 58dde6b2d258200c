"""Deciding one tool call: `evaluate(policy, call, limiter, now) -> Decision`.

Pure apart from the rate-limit counters it is handed. It never raises, and when in doubt it refuses: a condition
that cannot be evaluated holds for `deny_if`/`approve_if` and fails for `require`.
"""

import json
import logging
from typing import Any, Protocol, assert_never

from policies import conditions
from policies.conditions import Outcome, explain
from policies.limits import Limiter, describe_limit
from policies.model import (
    DEFAULT_APPROVAL,
    Action,
    Allow,
    Check,
    CheckKind,
    Condition,
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


class Tracer(Protocol):
    """Told of every check evaluation runs, in order: what it decided (None: it passed) and, for a condition,
    its outcome and the argument's actual value. `explain_call` is the one tracer; the gateway passes none."""

    def __call__(self, check: Check, decision: Decision | None, outcome: Outcome | None, actual: Any) -> None: ...


def evaluate(policy: Policy, call: ToolCall, limiter: Limiter, now: float, tracer: Tracer | None = None) -> Decision:
    """Decide what happens to one tool call.

    Conditions test the call's arguments, or (`caller` conditions) its identity and groups, as the call carries
    them. The order is: hidden, then the checks of the rule that governs the tool (`Rule.checks`: `action: deny`,
    `require`, `deny_if`, rate limits (all-tools and the rule's, counted only when all have room and the call is
    not refused), then `require_approval` or `approve_if`, then allow), or the default's (`Policy.default_checks`).

    Args:
        policy: The compiled policy of the call's server.
        call: The call to judge.
        limiter: The counters that rate limits consume.
        now: Seconds since the epoch.
        tracer: Told of each check as it runs (for `policy explain`); None on the hot path.

    Returns:
        Allow, Deny, Hidden, RateLimited or NeedsApproval; never raises.
    """
    try:
        return _evaluate(policy, call, limiter, now, tracer)
    except Exception:
        # Fail closed on anything unforeseen (a policy built by hand, an odd argument type): refusing is safe.
        logger.exception("policy evaluation failed for tool %s", call.tool)
        return Deny("error", "the policy could not be evaluated for this call, so it is refused")


def _evaluate(policy: Policy, call: ToolCall, limiter: Limiter, now: float, tracer: Tracer | None) -> Decision:
    hidden, rule = policy.resolve(call.tool)
    if hidden is not None:
        return Hidden(hide_locator(hidden))
    for check in policy.default_checks if rule is None else rule.checks:
        outcome = actual = None
        if rule is None:
            decision = _default(check, policy, call, limiter, now)
        elif check.condition is not None:
            outcome, actual = conditions.check_call(check.condition, call)
            decision = _judged(check, check.condition, outcome, actual, rule)
        else:
            decision = _ruled(check, policy, rule, call, limiter, now)
        if tracer is not None:
            tracer(check, decision, outcome, actual)
        if decision is not None:
            return decision
    raise AssertionError("the last check (allow, or the default) always decides")


def _judged(check: Check, condition: Condition, outcome: Outcome, actual: Any, rule: Rule) -> Decision | None:
    """What a condition decides: `require` denies unless it holds, `deny_if` and `approve_if` unless it fails."""
    required = check.kind is CheckKind.REQUIRE
    if outcome is (Outcome.HOLDS if required else Outcome.FAILS):
        return None
    why = explain(condition, outcome, actual, check.label, rule.redact, required=required)
    if check.kind is not CheckKind.APPROVE_IF:
        return Deny(check.locator, rule.reason or why)
    reason = rule.reason or why + ", so a person must approve the call"
    return NeedsApproval(check.locator, reason, rule.approval or DEFAULT_APPROVAL, rule.grant_max_seconds)


def _ruled(check: Check, policy: Policy, rule: Rule, call: ToolCall, limiter: Limiter, now: float) -> Decision | None:
    """What one of a rule's checks that tests no argument decides."""
    match check.kind:
        case CheckKind.ACTION_DENY:
            return Deny(rule.locator, rule.reason or f'{rule.locator} denies every call to "{call.tool}"')
        case CheckKind.LIMITS:
            return _rate_limited(call, policy, policy.located_all_tools_limits + rule.located_limits, limiter, now)
        case CheckKind.REQUIRE_APPROVAL:
            reason = rule.reason or f'{rule.locator} requires a person to approve every call to "{call.tool}"'
            return NeedsApproval(rule.locator, reason, rule.approval or DEFAULT_APPROVAL, rule.grant_max_seconds)
        case CheckKind.ALLOW:
            return Allow(rule.locator)
        case CheckKind.REQUIRE | CheckKind.DENY_IF | CheckKind.APPROVE_IF | CheckKind.DEFAULT:
            raise AssertionError(f"{check.kind} is not a check of a rule without a condition")
        case _:
            assert_never(check.kind)


def _default(check: Check, policy: Policy, call: ToolCall, limiter: Limiter, now: float) -> Decision | None:
    """What a tool no rule covers gets: the all-tools limits, then the policy's default."""
    if check.kind is CheckKind.LIMITS:
        return _rate_limited(call, policy, policy.located_all_tools_limits, limiter, now)
    name = json.dumps(call.tool, ensure_ascii=False)
    if policy.default is Action.DENY:
        return Deny("default", policy.default_reason or f"no rule allows {name} and the policy's default is deny")
    if policy.default is Action.REQUIRE_APPROVAL:
        reason = policy.default_reason or f"no rule covers {name} and the policy's default is require_approval"
        return NeedsApproval("default", reason, DEFAULT_APPROVAL)
    return Allow("default")


def _rate_limited(
    call: ToolCall, policy: Policy, limits: tuple[tuple[str, Limit], ...], limiter: Limiter, now: float
) -> RateLimited | None:
    """Count the call against `limits` (in the policy's budget) if all have room; otherwise refuse it, naming the
    first exhausted one."""
    exhausted = limiter.try_acquire(call, limits, now, policy.counters) if limits else None
    if exhausted is None:
        return None
    locator, limit, retry_after = exhausted
    return RateLimited(locator, limit.counter, retry_after, describe_limit(limit, retry_after))
