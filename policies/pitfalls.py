"""Warnings about policies that load but probably do not say what their author meant.

A pitfall is never an error: the policy still loads and does what it says. The checks read values already read
(and their faults already reported), so they add no second fault for a broken block.
"""

from typing import Any

from policies.checker import Checker
from policies.model import Action, ApprovalSpec, Condition, Policy

__all__ = ["warn_policy", "warn_rule"]

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
