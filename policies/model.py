"""The policy document as frozen values, the tool call it judges, and the decisions it returns.

Pure data: no I/O. A `Policy` precompiles what evaluation needs (name matchers, regexes) when it is built.
"""

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeAlias, assert_never

from policies.globs import NameMatcher
from policies.values import json_kind, show


class Action(StrEnum):
    """What a rule, or the policy's default, does with a call."""

    ALLOW = "allow"
    DENY = "deny"
    REQUIRE_APPROVAL = "require_approval"


class DriftAction(StrEnum):
    """What happens to calls of a tool whose definition changed upstream since it was pinned.

    `require_approval`, `deny` and `hide` hold until the policy is re-checked (a new policy version, or an approver
    accepting the change); `allow` only audits the change; `ignore` does not track the tool at all.
    """

    REQUIRE_APPROVAL = "require_approval"
    DENY = "deny"
    HIDE = "hide"
    ALLOW = "allow"
    IGNORE = "ignore"


class LimitsUnavailable(StrEnum):
    """What happens to a call a limit applies to when the store that counts limits cannot be reached.

    `refuse` (fail closed: a limit guarding a destructive tool must not turn into no limit) or `allow` (the call
    runs uncounted, and the audit log says so).
    """

    REFUSE = "refuse"
    ALLOW = "allow"


class Scope(StrEnum):
    """Who shares a rate-limit budget: one agent on one server, one agent everywhere, or everyone."""

    GRANT = "grant"
    AGENT = "agent"
    GLOBAL = "global"


_SCALAR_KINDS = frozenset({"null", "boolean", "number", "string"})

OPS: tuple[str, ...] = (
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "in",
    "not_in",
    "regex",
    "not_regex",
    "contains",
    "starts_with",
    "ends_with",
    "exists",
)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes a call: the agent's name and the groups it belongs to.

    Built at the edge from whatever proved the caller (a static `[[agents]]` token, an OAuth access token) and
    handed to evaluation inside the `ToolCall`; the policy package never looks a caller up itself.
    """

    name: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One `tools/call` as the policy sees it: which server, which tool, with what arguments, by whom.

    `identity` is the calling agent's name and `groups` its groups, which `caller` conditions test.
    """

    server: str
    tool: str
    arguments: Mapping[str, Any]
    identity: str
    groups: tuple[str, ...] = ()

    @property
    def caller(self) -> Caller:
        """The caller, as `caller` conditions see it."""
        return Caller(self.identity, self.groups)


_PHRASES = {
    "in": "is in",
    "not_in": "is not in",
    "regex": "matches regex",
    "not_regex": "does not match regex",
    "contains": "contains",
    "starts_with": "starts with",
    "ends_with": "ends with",
}


_GROUP_PHRASES = {"in": "include any of", "not_in": "include none of", "contains": "include"}


def _describe(op: str, value: Any, groups: bool = False) -> str:
    if groups:
        return f"{_GROUP_PHRASES.get(op, op)} {show(value)}"
    if op == "exists":
        return "present" if value else "absent"
    return f"{_PHRASES.get(op, 'is ' + op)} {show(value)}"


class Subject(StrEnum):
    """What a condition tests: one of the call's arguments, or who the caller is."""

    ARGUMENT = "arg"
    CALLER = "caller"


class CallerField(StrEnum):
    """What a `caller` condition reads: the agent's name (a string) or its groups (an array of strings)."""

    AGENT = "agent"
    GROUPS = "groups"


CALLER_OPS: dict[CallerField, tuple[str, ...]] = {
    CallerField.AGENT: ("eq", "ne", "in", "not_in", "regex", "not_regex", "starts_with", "ends_with"),
    # On groups, `in` holds when any of the caller's groups is listed, `not_in` when none is; `contains` when
    # the caller has that one group.
    CallerField.GROUPS: ("in", "not_in", "contains"),
}


@dataclass(frozen=True, slots=True)
class Condition:
    """A test on one argument (`arg` is a dotted path into the arguments; `a.b.0` indexes a list), or, with
    `subject` CALLER, on the caller (`arg` is then `agent` or `groups`, a `CallerField`)."""

    arg: str
    op: str
    value: Any
    subject: Subject = Subject.ARGUMENT
    path: tuple[str, ...] = field(init=False, repr=False, compare=False)
    pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    # For in/not_in over scalars: {(json kind, value)} for a hash lookup, and the kinds present.
    members: frozenset[tuple[str, Any]] | None = field(init=False, repr=False, compare=False)
    member_kinds: frozenset[str] = field(init=False, repr=False, compare=False)
    described: str = field(init=False, repr=False, compare=False)

    @property
    def on_caller(self) -> bool:
        """Whether this condition tests the caller rather than an argument."""
        return self.subject is Subject.CALLER

    def __post_init__(self) -> None:
        groups = self.subject is Subject.CALLER and self.arg == CallerField.GROUPS
        object.__setattr__(self, "described", _describe(self.op, self.value, groups))
        object.__setattr__(self, "path", tuple(self.arg.split(".")))
        compiled: re.Pattern[str] | None = None
        if self.op in ("regex", "not_regex") and isinstance(self.value, str):
            try:
                compiled = re.compile(self.value)
            except re.error:
                compiled = None  # evaluation then fails closed
        object.__setattr__(self, "pattern", compiled)
        members: frozenset[tuple[str, Any]] | None = None
        kinds: frozenset[str] = frozenset()
        if isinstance(self.value, list | tuple):
            kinds = frozenset(json_kind(v) for v in self.value)
            if kinds <= _SCALAR_KINDS:
                members = frozenset((json_kind(v), v) for v in self.value)
        object.__setattr__(self, "members", members)
        object.__setattr__(self, "member_kinds", kinds)


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `max` calls per fixed window of `window_seconds`, counted under `counter` within `scope`."""

    counter: str
    window_seconds: float
    max: int
    scope: Scope = Scope.GRANT


DEFAULT_USE_WITHIN = 600.0  # seconds: how long an approval waits to be used when its rule does not say


@dataclass(frozen=True, slots=True)
class Threshold:
    """One way to settle a request: `count` distinct approvers from `approvers` (names or `group:NAME`; empty:
    any approver) have approved it."""

    count: int
    approvers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Escalation:
    """`after_seconds` past the request, `approvers` may decide too and are told so (in `channel` as well, if set)."""

    after_seconds: float
    approvers: tuple[str, ...]
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class ApprovalSpec:
    """Who may approve a call, how many must, and for how long the request waits before it fails closed.

    `quorum` is the fewest approvals that can settle a request. `thresholds` is `quorum.any_of` (empty: `quorum`
    approvals from `approvers`); with it, `approvers` is every approver its entries name. `escalate` widens who may
    decide as time passes, and `remind_seconds` is how often the current approvers are reminded (None: never).
    `allow_edits`: an approver may change the call's arguments as they approve it; the edited call is checked
    again against the same policy before it is let through (`integrations.editing`). `use_within_seconds`: how
    long an approval may wait to be used (None: the rule's timeout, at most 10 minutes; see `use_within`).
    """

    approvers: tuple[str, ...] = ()
    quorum: int = 1
    timeout_seconds: float = 900.0
    channel: str | None = None
    allow_self_approval: bool = False
    thresholds: tuple[Threshold, ...] = ()
    escalate: tuple[Escalation, ...] = ()
    remind_seconds: float | None = None
    allow_edits: bool = False
    use_within_seconds: float | None = None

    @property
    def any_of(self) -> tuple[Threshold, ...]:
        """The entries of which any one, met, settles the request: `thresholds`, or the plain quorum as one entry."""
        return self.thresholds or (Threshold(self.quorum, self.approvers),)

    @property
    def use_within(self) -> float:
        """Seconds an approval may wait for its call to run before it expires unused: an approval given hours
        after the call was made must not let it through whenever a repeat turns up."""
        if self.use_within_seconds is not None:
            return self.use_within_seconds
        return min(self.timeout_seconds, DEFAULT_USE_WITHIN)


DEFAULT_APPROVAL = ApprovalSpec()


def tool_locator(pattern: str) -> str:
    """Return the JSON-path style locator of a `tools` entry, e.g. `tools["execute_sql"]`."""
    return f"tools[{json.dumps(pattern, ensure_ascii=False)}]"


def hide_locator(pattern: str) -> str:
    """Return the locator of a `hide` entry, e.g. `hide["destroy_connection"]`."""
    return f"hide[{json.dumps(pattern, ensure_ascii=False)}]"


class CheckKind(StrEnum):
    """What one step of evaluating a rule (or the default) tests."""

    ACTION_DENY = "action_deny"
    REQUIRE = "require"
    DENY_IF = "deny_if"
    LIMITS = "limits"
    REQUIRE_APPROVAL = "require_approval"
    APPROVE_IF = "approve_if"
    ALLOW = "allow"
    DEFAULT = "default"


@dataclass(frozen=True, slots=True)
class Check:
    """One step of evaluation, in the order evaluation takes them: `label` (`deny_if[0]`), `locator`, condition.

    A rule's `checks` (and a policy's `default_checks`) are that order, written once: `evaluate` runs them until one
    decides and `explain` walks the same tuple, so an explanation cannot list the steps in another order.
    """

    kind: CheckKind
    label: str
    locator: str
    condition: Condition | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One entry of `tools`: its key (`pattern`, an exact name or a glob) and what it says.

    `rate_limit` is PolicyLayer's shorthand (`{"max": N, "window": 60}`), kept apart from `limits` so decisions
    can name it as `tools["x"].rate_limit`. `shadow` audits the rule's refusals without enforcing them; `on_drift`
    overrides the policy's; `grant_max_seconds` is the longest time-boxed grant an approver may give (None: none).
    """

    pattern: str
    action: Action | None = None
    reason: str | None = None
    require: tuple[Condition, ...] = ()
    deny_if: tuple[Condition, ...] = ()
    approve_if: tuple[Condition, ...] = ()
    limits: tuple[Limit, ...] = ()
    approval: ApprovalSpec | None = None
    redact: tuple[str, ...] = ()
    rate_limit: Limit | None = None
    shadow: bool = False
    on_drift: DriftAction | None = None
    grant_max_seconds: float | None = None
    locator: str = field(init=False, repr=False, compare=False)
    located_limits: tuple[tuple[str, Limit], ...] = field(init=False, repr=False, compare=False)
    checks: tuple[Check, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        locator = tool_locator(self.pattern)
        object.__setattr__(self, "locator", locator)
        located = [(f"{locator}.limits[{i}]", limit) for i, limit in enumerate(self.limits)]
        if self.rate_limit is not None:
            located.append((f"{locator}.rate_limit", self.rate_limit))
        object.__setattr__(self, "located_limits", tuple(located))
        object.__setattr__(self, "checks", self._checks())

    def _checks(self) -> tuple[Check, ...]:
        """The order of evaluation: deny, require, deny_if, limits, require_approval, approve_if, then allow."""
        loc = self.locator

        def conditions(kind: CheckKind, listed: tuple[Condition, ...]) -> list[Check]:
            return [Check(kind, f"{kind}[{i}]", f"{loc}.{kind}[{i}]", c) for i, c in enumerate(listed)]

        checks = [Check(CheckKind.ACTION_DENY, "action", loc)] if self.action is Action.DENY else []
        checks += conditions(CheckKind.REQUIRE, self.require) + conditions(CheckKind.DENY_IF, self.deny_if)
        checks.append(Check(CheckKind.LIMITS, "limits", loc))
        if self.action is Action.REQUIRE_APPROVAL:
            checks.append(Check(CheckKind.REQUIRE_APPROVAL, "action", loc))
        checks += conditions(CheckKind.APPROVE_IF, self.approve_if)
        checks.append(Check(CheckKind.ALLOW, "allow", loc))
        return tuple(checks)


_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Policy:
    """One policy document for one upstream server, compiled for evaluation.

    `digest` is the first 16 hex characters of the SHA-256 of the document's canonical JSON: the policy version
    recorded in audit rows. `source` says where the document came from (a file name). With `shadow`, every refusal
    is audited and not enforced; `on_drift` applies to tools whose rule names none. `counters` is the budget its
    limits count in: "" for a server's policy, and another name for an agent's own policy, whose limits then never
    share a budget with the server policy's even where both name the same counter. `limits_unavailable` overrides
    the gateway's `[gateway] limits_unavailable` for this policy's limited calls (None: the gateway's applies).
    """

    version: str = "1"
    default: Action = Action.DENY
    hide: tuple[str, ...] = ()
    all_tools_limits: tuple[Limit, ...] = ()
    rules: tuple[Rule, ...] = ()
    digest: str = ""
    source: str = "<policy>"
    default_reason: str | None = None
    shadow: bool = False
    on_drift: DriftAction = DriftAction.REQUIRE_APPROVAL
    counters: str = ""
    limits_unavailable: LimitsUnavailable | None = None
    hide_matcher: NameMatcher[str] = field(init=False, repr=False, compare=False)
    rule_matcher: NameMatcher[Rule] = field(init=False, repr=False, compare=False)
    located_all_tools_limits: tuple[tuple[str, Limit], ...] = field(init=False, repr=False, compare=False)
    default_checks: tuple[Check, ...] = field(init=False, repr=False, compare=False)
    # tool name -> (hide entry, rule); bounded, because tool names come from agents.
    resolved: dict[str, tuple[str | None, Rule | None]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "hide_matcher", NameMatcher.build([(p, p) for p in self.hide]))
        object.__setattr__(self, "rule_matcher", NameMatcher.build([(r.pattern, r) for r in self.rules]))
        object.__setattr__(
            self,
            "located_all_tools_limits",
            tuple((f"all_tools.limits[{i}]", limit) for i, limit in enumerate(self.all_tools_limits)),
        )
        # A tool no rule covers: the all-tools limits (unless the default refuses it anyway), then the default.
        limits = [Check(CheckKind.LIMITS, "limits", "default")] if self.default is not Action.DENY else []
        object.__setattr__(self, "default_checks", (*limits, Check(CheckKind.DEFAULT, "default", "default")))

    def resolve(self, tool: str) -> tuple[str | None, Rule | None]:
        """Return the `hide` entry that hides `tool` (or None) and the rule that governs it (or None)."""
        hit = self.resolved.get(tool)
        if hit is not None:
            return hit
        hidden = self.hide_matcher.find(tool)
        found = self.rule_matcher.find(tool)
        hit = (hidden[1] if hidden else None, found[1] if found else None)
        if len(self.resolved) >= _CACHE_SIZE:
            self.resolved.clear()
        self.resolved[tool] = hit
        return hit


@dataclass(frozen=True, slots=True)
class Allow:
    """The call may go upstream now."""

    rule: str


@dataclass(frozen=True, slots=True)
class Deny:
    """The call is refused; `reason` is one sentence for the agent."""

    rule: str
    reason: str


@dataclass(frozen=True, slots=True)
class Hidden:
    """The tool is hidden: not listed, and its calls are refused."""

    rule: str


@dataclass(frozen=True, slots=True)
class RateLimited:
    """The call would exceed `counter`'s budget; it may be retried after `retry_after` seconds."""

    rule: str
    counter: str
    retry_after: float
    reason: str


@dataclass(frozen=True, slots=True)
class NeedsApproval:
    """The call waits for a person to approve it, as `approval` describes.

    `grant_max` is the longest time-boxed grant an approver may give instead (seconds), from the deciding rule's
    `grant_max`; None when grants are not allowed.
    """

    rule: str
    reason: str
    approval: ApprovalSpec
    grant_max: float | None = None


Decision: TypeAlias = Allow | Deny | Hidden | RateLimited | NeedsApproval


def reason_of(decision: Decision) -> str | None:
    """The sentence a decision gives the agent: None for an allowed call or a hidden tool (they give none)."""
    match decision:
        case Deny(reason=reason) | RateLimited(reason=reason) | NeedsApproval(reason=reason):
            return reason
        case Allow() | Hidden():
            return None
        case _:
            assert_never(decision)
