"""Warnings about policies that load but probably do not say what their author meant.

A pitfall is never an error: the policy still loads and does what it says. The checks read values already read
(and their faults already reported), so they add no second fault for a broken block.
"""

import difflib
from collections.abc import Collection
from typing import Any

from policies.checker import Checker
from policies.errors import Fault
from policies.model import Action, ApprovalSpec, CallerField, Condition, Policy

__all__ = ["unknown_callers", "warn_policy", "warn_rule"]

_NAME_APPROVERS = 'add "approval": {"approvers": ["alice", "group:ops"]}'
_UNUSED_BY_DENY = ("require", "deny_if", "approve_if", "limits", "rate_limit", "approval", "grant_max")


def warn_policy(check: Checker, policy: Policy) -> None:
    """Warn about a whole policy: `tools` entries that `hide` makes unreachable, and a policy that allows nothing.

    Args:
        check: Collects the warnings.
        policy: The policy, loaded without errors.
    """
    for rule in policy.rules:
        hit = policy.hide_matcher.find(rule.pattern)
        if hit is not None:
            check.warn(
                f"$.{rule.locator}",
                f'"{rule.pattern}" is hidden by hide entry "{hit[0]}", so this entry never applies',
                "remove the entry, or remove the tool from hide",
            )
    if policy.default is Action.DENY and all(r.action is Action.DENY for r in policy.rules):
        check.warn(
            "$",
            "default is deny and no rule allows any tool: this policy allows nothing",
            'list the tools agents may call under "tools", e.g. "tools": {"list_items": {}}',
        )


def warn_rule(
    check: Checker,
    path: str,
    body: dict[str, Any],
    action: str | None,
    approve_if: tuple[Condition, ...] | None,
    approval: ApprovalSpec | None,
    grant_max: float | None,
) -> None:
    """Warn about one `tools` entry: keys it never uses, approval with nobody named, and grants no one can give.

    Args:
        check: Collects the warnings.
        path: The entry's JSON path, e.g. `$.tools["execute_sql"]`.
        body: The entry as parsed, to tell which keys it has.
        action: Its `action`, or None when absent or invalid.
        approve_if: Its conditions, or None when invalid.
        approval: Its approval block, or None when absent or invalid.
        grant_max: Its `grant_max` in seconds, or None when absent or invalid.
    """
    if grant_max is not None:
        if action == Action.DENY:
            pass  # reported below with the rule's other unused keys
        elif action != Action.REQUIRE_APPROVAL and not approve_if:
            check.warn(
                f"{path}.grant_max",
                "grant_max is never used: the rule neither requires approval nor has approve_if",
                'add "action": "require_approval" or an approve_if condition, or remove grant_max',
            )
        elif approval is not None and approval.quorum > 1:
            check.warn(
                f"{path}.grant_max",
                f"no grant can be given: a grant lets later calls through on one person's word, and this rule's "
                f"quorum is {approval.quorum}",
                "lower the quorum to 1, or remove grant_max",
            )

    # An approval block that failed to parse was already reported; don't pile a warning on top.
    no_approvers = (approval is None and "approval" not in body) or (approval is not None and not approval.approvers)
    if action == Action.REQUIRE_APPROVAL and no_approvers:
        check.warn(
            f"{path}.action",
            "the rule requires approval but names no approvers, so anyone listed as an approver in the "
            "configuration may decide",
            _NAME_APPROVERS,
        )
    elif approve_if and action in (None, Action.ALLOW) and no_approvers:
        check.warn(
            f"{path}.approve_if",
            "approve_if names no approvers, so anyone listed as an approver in the configuration may decide",
            _NAME_APPROVERS,
        )
    if action == Action.DENY:
        unused = [k for k in _UNUSED_BY_DENY if k in body]
        if unused:
            check.warn(
                f"{path}.action",
                f"the rule denies every call, so its {', '.join(unused)} never apply",
                "remove them, or drop the action",
            )
    elif "approval" in body and action != Action.REQUIRE_APPROVAL and not approve_if:
        check.warn(
            f"{path}.approval",
            "the approval block is never used: the rule neither requires approval nor has approve_if",
            'add "action": "require_approval" or an approve_if condition',
        )


def unknown_callers(policy: Policy, agents: Collection[str], groups: Collection[str]) -> list[Fault]:
    """Warn about `caller` conditions naming an agent or a group that the configuration does not have.

    A warning, not an error: such a condition still means what it says (an agent signing in by OAuth may bring a
    name or a group no `[[agents]]` entry lists), but a misspelt name silently never matches.

    Args:
        policy: The policy, loaded without errors.
        agents: The configured agents' names.
        groups: The groups configured agents are in.

    Returns:
        One warning per unknown name, at the condition's JSON path.
    """
    faults: list[Fault] = []
    for rule in policy.rules:
        for check in rule.checks:
            condition = check.condition
            if condition is None or not condition.on_caller or condition.op in ("regex", "not_regex"):
                continue
            on_agent = condition.arg == CallerField.AGENT
            known = agents if on_agent else groups
            values = condition.value if isinstance(condition.value, list | tuple) else [condition.value]
            for value in values:
                if not isinstance(value, str) or value in known:
                    continue
                close = difflib.get_close_matches(value, list(known), n=1, cutoff=0.6)
                listing = f"configured: {', '.join(sorted(known)) or 'none'}"
                hint = f'did you mean "{close[0]}"? {listing}' if close else listing
                message = (
                    f'"{value}" names no configured agent' if on_agent else f'no configured agent is in group "{value}"'
                )
                faults.append(Fault(f"$.{check.locator}.value", message, hint, "warning"))
    return faults
