"""Why a policy decided one call the way it did: a trace of every step of evaluation, in evaluation's order.

Pure apart from the rate-limit counters it is handed. The decision is `evaluate`'s own (the call is counted against
limits as a real call would be), and so is the walk: `evaluate` tells a tracer of each check it runs, and the order
of the checks is the compiled policy's (`Rule.checks`, `Policy.default_checks`), written once. Steps before the
deciding one passed; the ones after it were not reached. The two cannot disagree, because there is one walk.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, assert_never

from policies.conditions import MISSING, Outcome, caller_found, is_redacted
from policies.drift import is_shadowed
from policies.evaluate import evaluate
from policies.globs import GlobSyntaxError, compile_glob, is_glob
from policies.limits import RateLimiter, describe_window, format_seconds
from policies.model import (
    DEFAULT_APPROVAL,
    Allow,
    ApprovalSpec,
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
    reason_of,
)
from policies.values import show

__all__ = ["DecisionKind", "Step", "StepOutcome", "Trace", "explain_call", "format_trace", "kind_of"]


class DecisionKind(StrEnum):
    """A decision's kind, as test cases and reports name it."""

    ALLOW = "allow"
    DENY = "deny"
    HIDDEN = "hidden"
    RATE_LIMITED = "rate_limited"
    REQUIRE_APPROVAL = "require_approval"


def kind_of(decision: Decision) -> DecisionKind:
    """Return the kind of a decision."""
    match decision:
        case Allow():
            return DecisionKind.ALLOW
        case Deny():
            return DecisionKind.DENY
        case Hidden():
            return DecisionKind.HIDDEN
        case RateLimited():
            return DecisionKind.RATE_LIMITED
        case NeedsApproval():
            return DecisionKind.REQUIRE_APPROVAL
        case _:
            assert_never(decision)


class StepOutcome(StrEnum):
    """What one step of evaluation did with the call."""

    PASSED = "passed"
    DECIDED = "decided"
    NOT_REACHED = "not reached"


@dataclass(frozen=True, slots=True)
class Step:
    """One step: its short `label` (e.g. `deny_if[0]`), its policy `locator`, its outcome and a sentence."""

    label: str
    locator: str
    outcome: StepOutcome
    text: str


@dataclass(frozen=True, slots=True)
class Trace:
    """A call, the decision `evaluate` made, and every step that led to it."""

    call: ToolCall
    decision: Decision
    steps: tuple[Step, ...]
    redact: tuple[str, ...] = ()
    shadow: bool = False

    @property
    def kind(self) -> DecisionKind:
        """The decision's kind."""
        return kind_of(self.decision)

    @property
    def deciding(self) -> Step | None:
        """The step that decided the call (None only if evaluation failed unexpectedly)."""
        return next((s for s in self.steps if s.outcome is StepOutcome.DECIDED), None)


def _matches(pattern: str, tool: str) -> bool:
    if not is_glob(pattern):
        return pattern == tool
    try:
        return compile_glob(pattern).fullmatch(tool) is not None
    except GlobSyntaxError:
        return False


def _name(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _hide_text(policy: Policy, tool: str, hidden: str | None) -> str:
    if hidden is None:
        return f"no hide entry matches {_name(tool)}"
    others = [p for p in policy.hide if p != hidden and _matches(p, tool)]
    also = f" (also matched by {', '.join(_name(p) for p in others)})" if others else ""
    return f"hidden by hide entry {_name(hidden)}{also}: not listed, and every call is refused"


def _match_text(policy: Policy, tool: str, rule: Rule | None) -> str:
    if rule is None:
        return f"no tools key matches {_name(tool)}, so the default applies ({policy.default})"
    if not is_glob(rule.pattern):
        head = f"{rule.locator} matches {_name(tool)} exactly"
    else:
        head = f"{rule.locator} matches {_name(tool)} as a glob"
    beaten: dict[str, list[str]] = {}
    for other in policy.rules:
        if other is rule or not _matches(other.pattern, tool):
            continue
        if not is_glob(rule.pattern):
            why = "an exact name wins over any glob"
        elif len(other.pattern) < len(rule.pattern):
            why = "a longer glob wins"
        else:
            why = "same length, and the earlier key in the file wins"
        beaten.setdefault(why, []).append(_name(other.pattern))
    return head + "".join(f"; it beats {', '.join(names)} ({why})" for why, names in beaten.items())


def _test_text(condition: Condition) -> str:
    if condition.on_caller:
        return f"caller.{condition.arg} {condition.op} {show(condition.value)}"
    if condition.op == "exists":
        return f"{condition.arg} {'exists' if condition.value else 'is absent'}"
    return f"{condition.arg} {condition.op} {show(condition.value)}"


def _condition_text(
    condition: Condition, outcome: Outcome, actual: Any, redact: tuple[str, ...], effect: str, decides: bool
) -> str:
    test = _test_text(condition)
    if condition.on_caller:
        found = caller_found(condition, actual)
    elif actual is MISSING:
        found = f"argument {_name(condition.arg)} is missing"
    else:
        value = "[redacted]" if is_redacted(condition.arg, redact) else show(actual)
        found = f"argument {_name(condition.arg)} is {value}"
    result = {
        Outcome.HOLDS: "holds",
        Outcome.FAILS: "does not hold",
        Outcome.ERROR: "cannot be tested (fails closed)",
    }[outcome]
    return f"{test}: {found}, so it {result}" + (f", and {effect}" if decides else "")


def _limit_head(limit: Limit) -> str:
    calls = "call" if limit.max == 1 else "calls"
    window = describe_window(limit.window_seconds)
    return f"counter {_name(limit.counter)} allows {limit.max} {calls} per {window} (scope {limit.scope})"


def _limit_text(limit: Limit, before: int, after: int, decision: Decision, decides: bool) -> str:
    head = _limit_head(limit)
    if decides and isinstance(decision, RateLimited):
        return f"{head}: none left, so the call is rate-limited; retry in {format_seconds(decision.retry_after)}"
    if isinstance(decision, RateLimited):
        return f"{head}: {before} left; not counted, because another limit is exhausted"
    return f"{head}: {before} left before this call, {after} after"


def _approval_text(approval: ApprovalSpec) -> str:
    who = ", ".join(approval.approvers) if approval.approvers else "any configured approver"
    edits = "; the approver may edit the arguments" if approval.allow_edits else ""
    return f"approvers: {who}; quorum {approval.quorum}; timeout {format_seconds(approval.timeout_seconds)}{edits}"


def explain_call(policy: Policy, call: ToolCall, limiter: RateLimiter, now: float) -> Trace:
    """Decide one call with `evaluate` and trace every step that led there.

    `evaluate` tells a tracer of each check it runs; the trace lists those, then the checks of the same tuple
    (`Rule.checks`, or `Policy.default_checks`) that it did not reach: evaluation's own walk, never a copy of it.

    Args:
        policy: The compiled policy of the call's server.
        call: The call to explain.
        limiter: The counters rate limits consume; the call is counted as a real call would be.
        now: Seconds since the epoch.

    Returns:
        The decision and its steps: hide, the matching tools key (and the keys it beat), each condition with the
        argument's value and outcome, each limit with its remaining budget, the action, and the final word.
    """
    tool = call.tool
    hidden, rule = policy.resolve(tool)
    limits = policy.located_all_tools_limits + (rule.located_limits if rule is not None else ())
    before = {locator: limiter.remaining(call, limit, now, policy.counters) for locator, limit in limits}
    ran: list[_Ran] = []

    def told(check: Check, decision: Decision | None, outcome: Outcome | None, actual: Any) -> None:
        ran.append(_Ran(check, decision, outcome, actual))

    decision = evaluate(policy, call, limiter, now, told)
    after = {locator: limiter.remaining(call, limit, now, policy.counters) for locator, limit in limits}

    hide = _hide_text(policy, tool, hidden)
    steps = [
        Step("hide", hide_locator(hidden), StepOutcome.DECIDED, hide)
        if hidden is not None
        else Step("hide", "hide", StepOutcome.PASSED, hide),
        Step("tools", rule.locator if rule else "tools", _outcome(hidden is None), _match_text(policy, tool, rule)),
    ]
    say = _Sayer(policy, rule, decision, limits, before, after)
    for i, check in enumerate(policy.default_checks if rule is None else rule.checks):
        steps += say.step(check, ran[i] if i < len(ran) else None)
    if not any(step.outcome is StepOutcome.DECIDED for step in steps):
        # No check decided (evaluation failed unexpectedly): the decision stands, and the trace says so.
        steps.append(Step("error", decision.rule, StepOutcome.DECIDED, _decision_text(decision)))
    redact = rule.redact if rule is not None else ()
    return Trace(call, decision, tuple(steps), redact, is_shadowed(policy, tool))


@dataclass(frozen=True, slots=True)
class _Ran:
    """What `evaluate` told of one check it ran: what it decided (None: passed), a condition's outcome and value."""

    check: Check
    decision: Decision | None
    outcome: Outcome | None
    actual: Any


def _outcome(reached: bool, decided: bool = False) -> StepOutcome:
    if not reached:
        return StepOutcome.NOT_REACHED
    return StepOutcome.DECIDED if decided else StepOutcome.PASSED


@dataclass(frozen=True, slots=True)
class _Sayer:
    """The sentence of each check: what it found if evaluation ran it, what it tests if it was not reached."""

    policy: Policy
    rule: Rule | None
    decision: Decision
    limits: tuple[tuple[str, Limit], ...]
    before: dict[str, int]
    after: dict[str, int]

    def step(self, check: Check, ran: _Ran | None) -> list[Step]:
        if check.kind is CheckKind.LIMITS:
            return self._limits(ran)
        outcome = _outcome(ran is not None, ran is not None and ran.decision is not None)
        return [Step(check.label, check.locator, outcome, self._text(check, ran))]

    def _text(self, check: Check, ran: _Ran | None) -> str:
        approval = _approval_text(self.rule.approval if self.rule and self.rule.approval else DEFAULT_APPROVAL)
        if check.condition is not None:
            if ran is None or ran.outcome is None:
                return _test_text(check.condition)
            redact = self.rule.redact if self.rule is not None else ()
            effect = (
                f"a person must approve ({approval})" if check.kind is CheckKind.APPROVE_IF else "the call is denied"
            )
            decides = ran.decision is not None
            return _condition_text(check.condition, ran.outcome, ran.actual, redact, effect, decides)
        match check.kind:
            case CheckKind.ACTION_DENY:
                return "action is deny: every call is refused"
            case CheckKind.REQUIRE_APPROVAL:
                return f"action is require_approval: a person must approve ({approval})"
            case CheckKind.ALLOW:
                return "nothing refused the call, so the rule allows it"
            case _:
                return f"the policy's default is {self.policy.default}"

    def _limits(self, ran: _Ran | None) -> list[Step]:
        prefix = "" if self.rule is None else self.rule.locator + "."
        steps = []
        for locator, limit in self.limits:
            label, before = locator.removeprefix(prefix), self.before[locator]
            if ran is None:
                steps.append(
                    Step(label, locator, StepOutcome.NOT_REACHED, f"{_limit_head(limit)}: {before} left; not counted")
                )
                continue
            decides = ran.decision is not None and ran.decision.rule == locator
            text = _limit_text(limit, before, self.after[locator], self.decision, decides)
            steps.append(Step(label, locator, _outcome(True, decides), text))
        return steps


def _decision_text(decision: Decision) -> str:
    kind = kind_of(decision)
    reason = reason_of(decision)
    return f"{kind}, by {decision.rule}" + (f": {reason}" if reason else "")


def _redacted(value: Any, path: tuple[str, ...]) -> Any:
    """A copy of `value` with the value at `path` replaced by `[redacted]` (JSON-shaped values only)."""
    if not path:
        return "[redacted]"
    head, rest = path[0], path[1:]
    if isinstance(value, Mapping) and head in value:
        return {k: _redacted(v, rest) if k == head else v for k, v in value.items()}
    if isinstance(value, list | tuple) and head.isdigit() and int(head) < len(value):
        return [_redacted(v, rest) if i == int(head) else v for i, v in enumerate(value)]
    return value


def format_trace(trace: Trace) -> list[str]:
    """Render a trace as lines: the call (redacted as its rule says), one line per step, then the decision."""
    call = trace.call
    arguments: Any = dict(call.arguments)
    for path in trace.redact:
        arguments = _redacted(arguments, tuple(path.split(".")))
    args = json.dumps(arguments, ensure_ascii=False, sort_keys=True, default=str)
    groups = f" (groups {', '.join(_name(g) for g in call.groups)})" if call.groups else ""
    lines = [f"call: {_name(call.tool)} by {_name(call.identity)}{groups} on server {_name(call.server)} with {args}"]
    width = max((len(s.label) for s in trace.steps), default=0)
    for step in trace.steps:
        text = f"  {step.label:<{width}}  {step.outcome:<11}  {step.text}".rstrip()
        lines.append(text)
    lines.append(f"decision: {_decision_text(trace.decision)}")
    if trace.shadow and not isinstance(trace.decision, Allow):
        lines.append("shadow: this decision is only audited (as shadow_*); the call runs as if allowed")
    if isinstance(trace.decision, NeedsApproval) and trace.decision.grant_max is not None:
        lines.append(
            f"grants: an approver may instead allow this tool for up to {format_seconds(trace.decision.grant_max)}"
        )
    return lines
