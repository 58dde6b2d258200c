"""A parsed policy document's top level and `tools` entries, read into a `Policy`, with every fault on a `Checker`.

It walks the whole document even after a fault, so one pass reports them all, and builds a `Policy` only when no
error was found. The clauses inside an entry are `policies.clauses`; warnings are `policies.pitfalls`.
"""

from collections.abc import Collection
from typing import Any

from policies.checker import Checker
from policies.clauses import read_approval, read_condition, read_limit, read_rate_limit
from policies.durations import TIMEOUT_HINT, parse_duration
from policies.model import Action, DriftAction, Limit, LimitsUnavailable, Policy, Rule, tool_locator
from policies.pitfalls import warn_policy, warn_rule
from policies.values import json_kind, show

__all__ = ["build_policy"]

TOP_KEYS = (
    "version",
    "default",
    "default_reason",
    "hide",
    "all_tools",
    "tools",
    "shadow",
    "on_drift",
    "limits_unavailable",
)
ALL_TOOLS_KEYS = ("limits",)
RULE_KEYS = (
    "action",
    "reason",
    "require",
    "deny_if",
    "approve_if",
    "limits",
    "rate_limit",
    "approval",
    "redact",
    "shadow",
    "on_drift",
    "grant_max",
)

ACTIONS = tuple(a.value for a in Action)
DRIFT_ACTIONS = tuple(a.value for a in DriftAction)
LIMITS_UNAVAILABLE = tuple(a.value for a in LimitsUnavailable)


def build_policy(
    check: Checker, doc: Any, source: str, digest: str, approvers: Collection[str] | None = None
) -> Policy | None:
    """Read a parsed policy document into a `Policy`, then warn about its pitfalls.

    Args:
        check: Collects every fault, errors and warnings, in document order.
        doc: The parsed JSON (objects as `JSONObject`s, so keys written twice are faults).
        source: Where the document came from, kept on the Policy.
        digest: The document's digest, kept on the Policy.
        approvers: The configured approver names and `group:NAME`s that `approval.approvers` must name (None:
            not checked).

    Returns:
        The policy, or None when the document has at least one error.
    """
    if not isinstance(doc, dict):
        check.error(
            "$", f"the policy must be a JSON object, got {json_kind(doc)}", '{"version": "1", "default": "deny"}'
        )
        return None
    check.obj(doc, "$", TOP_KEYS)
    version = doc.get("version")
    if "version" not in doc:
        check.error("$", 'missing required key "version"', 'add "version": "1"')
    elif version != "1":
        hint = 'write it as the string "1"' if version == 1 and not isinstance(version, bool) else None
        check.error("$.version", f'unsupported version {show(version)}; only "1" is recognised', hint)

    default = None
    if "default" not in doc:
        check.error("$", 'missing required key "default"', 'add "default": "deny" (or "allow", "require_approval")')
    else:
        default = check.choice(doc["default"], "$.default", ACTIONS, "default")
    default_reason = None
    if "default_reason" in doc:
        default_reason = check.string(doc["default_reason"], "$.default_reason")

    hide: tuple[str, ...] | None = ()
    if "hide" in doc:
        hide = check.strings(doc["hide"], "$.hide")
        for i, pattern in enumerate(hide or ()):
            check.glob(pattern, f"$.hide[{i}]")

    all_tools_limits: tuple[Limit, ...] | None = ()
    if "all_tools" in doc:
        all_tools = check.obj(doc["all_tools"], "$.all_tools", ALL_TOOLS_KEYS)
        if all_tools is not None:
            all_tools_limits = check.items(all_tools, "limits", "$.all_tools", read_limit)

    shadow: bool | None = False
    if "shadow" in doc:
        shadow = check.boolean(doc["shadow"], "$.shadow")
    on_drift: str | None = DriftAction.REQUIRE_APPROVAL.value
    if "on_drift" in doc:
        on_drift = check.choice(doc["on_drift"], "$.on_drift", DRIFT_ACTIONS, "on_drift")
    # signoff's own key: what its limited calls get when the rate-limit store is down (None: the gateway's setting)
    unavailable = None
    if "limits_unavailable" in doc:
        unavailable = check.choice(
            doc["limits_unavailable"], "$.limits_unavailable", LIMITS_UNAVAILABLE, "limits_unavailable choice"
        )

    rules: list[Rule] = []
    if "tools" in doc:
        tools = check.obj(doc["tools"], "$.tools", ())
        for name, entry in (tools or {}).items():
            rule = _read_rule(check, name, entry, approvers)
            if rule is not None:
                rules.append(rule)

    if check.failed or default is None or hide is None or all_tools_limits is None:
        return None
    if shadow is None or on_drift is None or ("limits_unavailable" in doc and unavailable is None):
        return None
    policy = Policy(
        version="1",
        default=Action(default),
        hide=hide,
        all_tools_limits=all_tools_limits,
        rules=tuple(rules),
        digest=digest,
        source=source,
        default_reason=default_reason,
        shadow=shadow,
        on_drift=DriftAction(on_drift),
        limits_unavailable=LimitsUnavailable(unavailable) if unavailable else None,
    )
    warn_policy(check, policy)
    return policy


def _read_rule(check: Checker, name: str, entry: Any, approvers: Collection[str] | None) -> Rule | None:
    path = f"$.{tool_locator(name)}"
    if not name:
        check.error(path, "the tool name is empty", "use a tool name or a glob such as delete_*")
    else:
        check.glob(name, path)
    body = check.obj(entry, path, RULE_KEYS)
    if body is None:
        return None
    action = None
    if "action" in body:
        action = check.choice(body["action"], f"{path}.action", ACTIONS, "action")
    reason = check.string(body["reason"], f"{path}.reason") if "reason" in body else None
    require = check.items(body, "require", path, read_condition)
    deny_if = check.items(body, "deny_if", path, read_condition)
    approve_if = check.items(body, "approve_if", path, read_condition)
    limits = check.items(body, "limits", path, read_limit)
    rate_limit = (
        read_rate_limit(check, body["rate_limit"], f"{path}.rate_limit", name) if "rate_limit" in body else None
    )
    approval = read_approval(check, body["approval"], f"{path}.approval", approvers) if "approval" in body else None
    redact: tuple[str, ...] | None = ()
    if "redact" in body:
        redact = check.strings(body["redact"], f"{path}.redact")
    shadow = check.boolean(body["shadow"], f"{path}.shadow") if "shadow" in body else False
    on_drift = None
    if "on_drift" in body:
        on_drift = check.choice(body["on_drift"], f"{path}.on_drift", DRIFT_ACTIONS, "on_drift")
    grant_max = None
    if "grant_max" in body:
        grant_max = parse_duration(body["grant_max"])
        if grant_max is None:
            check.error(f"{path}.grant_max", f"invalid grant_max {show(body['grant_max'])}", TIMEOUT_HINT)
    warn_rule(check, path, body, action, approve_if, approval, grant_max)

    if None in (require, deny_if, approve_if, limits, redact) or not name:
        return None
    if ("rate_limit" in body and rate_limit is None) or ("approval" in body and approval is None):
        return None
    if "action" in body and action is None:
        return None
    if "reason" in body and reason is None:
        return None
    if shadow is None or ("on_drift" in body and on_drift is None) or ("grant_max" in body and grant_max is None):
        return None
    return Rule(
        pattern=name,
        action=Action(action) if action else None,
        reason=reason,
        require=require or (),
        deny_if=deny_if or (),
        approve_if=approve_if or (),
        limits=limits or (),
        approval=approval,
        redact=redact or (),
        rate_limit=rate_limit,
        shadow=shadow,
        on_drift=DriftAction(on_drift) if on_drift else None,
        grant_max_seconds=grant_max,
    )
