"""The policy keys of part 2: `shadow`, `on_drift` and `grant_max`, loaded, validated and applied."""

import json
from typing import Any

from policies import Allow, ApprovalSpec, Deny, Hidden, NeedsApproval, RateLimited, RateLimiter, check_policy
from policies.drift import Drift, apply_drift, drift_action, is_shadowed, shadow_outcome
from policies.explain import explain_call, format_trace
from policies.model import DriftAction
from tests.policies.helpers import T0, call, decide, policy


def doc(tools: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"version": "1", "default": "deny", "tools": tools, **top}


def faults(document: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(f.severity, f.path, f.message) for f in check_policy(json.dumps(document))]


# -- loading ----------------------------------------------------------------------------------------------------------


def test_new_keys_load_into_the_model_with_their_defaults() -> None:
    p = policy(
        doc(
            {
                "kill": {"action": "require_approval", "grant_max": "15m", "on_drift": "deny", "shadow": True},
                "list": {},
            },
            shadow=False,
            on_drift="hide",
        )
    )
    kill, listing = p.rules
    assert (kill.grant_max_seconds, kill.on_drift, kill.shadow) == (900.0, DriftAction.DENY, True)
    assert (listing.grant_max_seconds, listing.on_drift, listing.shadow) == (None, None, False)
    assert (p.shadow, p.on_drift) == (False, DriftAction.HIDE)
    plain = policy(doc({}))
    assert (plain.shadow, plain.on_drift) == (False, DriftAction.REQUIRE_APPROVAL)


def test_bad_values_of_the_new_keys_are_errors_with_their_paths() -> None:
    found = faults(
        doc(
            {"t": {"action": "require_approval", "grant_max": "soon", "on_drift": "warn", "shadow": "yes"}},
            shadow=1,
            on_drift="approve",
        )
    )
    errors = {(path, message.split(" ")[0]) for severity, path, message in found if severity == "error"}
    assert errors == {
        ("$.shadow", "expected"),
        ("$.on_drift", "invalid"),
        ('$.tools["t"].grant_max', "invalid"),
        ('$.tools["t"].on_drift', "invalid"),
        ('$.tools["t"].shadow', "expected"),
    }


def test_unknown_key_near_a_new_one_gets_a_hint() -> None:
    (fault,) = [f for f in check_policy(json.dumps(doc({"t": {"grant_maximum": "1h"}}))) if f.severity == "error"]
    assert fault.path == '$.tools["t"].grant_maximum'
    assert fault.hint is not None and '"grant_max"' in fault.hint


def test_grant_max_that_can_never_be_used_is_a_warning() -> None:
    found = faults(
        doc(
            {
                "never_approved": {"grant_max": "1h"},
                "quorum": {
                    "action": "require_approval",
                    "grant_max": "1h",
                    "approval": {"approvers": ["a", "b"], "quorum": 2},
                },
                "denied": {"action": "deny", "grant_max": "1h"},
                "fine": {"approve_if": [{"arg": "x", "op": "exists", "value": True}], "grant_max": "1h"},
            }
        )
    )
    warned = {path: message for severity, path, message in found if severity == "warning"}
    assert "neither requires approval" in warned['$.tools["never_approved"].grant_max']
    assert "quorum is 2" in warned['$.tools["quorum"].grant_max']
    assert "grant_max" in warned['$.tools["denied"].action']
    assert '$.tools["fine"].grant_max' not in warned


# -- grants in decisions --------------------------------------------------------------------------------------------


def test_approval_decisions_carry_the_rules_grant_max_and_only_the_rules() -> None:
    p = policy(
        doc(
            {
                "kill": {"action": "require_approval", "grant_max": "30m"},
                "sql": {"approve_if": [{"arg": "q", "op": "contains", "value": "drop"}], "grant_max": 60},
                "plain": {"action": "require_approval"},
            },
            default="require_approval",
        )
    )
    kill, sql, plain, other = (
        decide(p, "kill"),
        decide(p, "sql", q="drop it"),
        decide(p, "plain"),
        decide(p, "other"),
    )
    assert isinstance(kill, NeedsApproval) and kill.grant_max == 1800.0
    assert isinstance(sql, NeedsApproval) and sql.grant_max == 60.0
    assert isinstance(plain, NeedsApproval) and plain.grant_max is None
    assert isinstance(other, NeedsApproval) and other.grant_max is None  # the default is no rule: no grants


def test_explain_says_when_a_grant_may_replace_approval_and_when_a_decision_is_shadowed() -> None:
    p = policy(doc({"kill": {"action": "require_approval", "grant_max": "15m"}, "drop": {"action": "deny"}}))
    lines = format_trace(explain_call(p, call("kill"), RateLimiter(), T0))
    assert lines[-1] == "grants: an approver may instead allow this tool for up to 15m"
    shadowed = policy(doc({"drop": {"action": "deny", "shadow": True}}))
    lines = format_trace(explain_call(shadowed, call("drop"), RateLimiter(), T0))
    assert lines[-1].startswith("shadow: this decision is only audited")


# -- shadow -----------------------------------------------------------------------------------------------------------


def test_shadow_at_the_top_covers_every_tool_and_hidden_ones_too() -> None:
    p = policy(doc({"drop": {"action": "deny"}}, shadow=True, hide=["secret"]))
    assert is_shadowed(p, "drop") and is_shadowed(p, "anything") and is_shadowed(p, "secret")


def test_shadow_on_a_rule_covers_only_that_rules_tools() -> None:
    p = policy(doc({"drop_*": {"action": "deny", "shadow": True}, "kill": {"action": "deny"}}, hide=["drop_x"]))
    assert is_shadowed(p, "drop_table")
    assert not is_shadowed(p, "kill")
    assert not is_shadowed(p, "drop_x")  # hidden: a hide entry is not a rule
    assert not is_shadowed(p, "unlisted")


def test_shadow_outcomes_name_what_would_have_happened() -> None:
    needs = NeedsApproval("r", "why", ApprovalSpec())
    assert [
        shadow_outcome(d) for d in (Deny("r", "no"), Hidden("r"), RateLimited("r", "c", 1.0, "slow"), needs, Allow("r"))
    ] == ["shadow_denied", "shadow_hidden", "shadow_rate_limited", "shadow_approval", "allowed"]


# -- drift ------------------------------------------------------------------------------------------------------------

DRIFT = Drift("kill", "aaaa", "bbbb")


def test_drift_action_is_the_rules_else_the_policys() -> None:
    p = policy(doc({"kill": {"on_drift": "deny"}, "list": {}}, on_drift="allow"))
    assert drift_action(p, "kill") is DriftAction.DENY
    assert drift_action(p, "list") is DriftAction.ALLOW
    assert drift_action(policy(doc({})), "x") is DriftAction.REQUIRE_APPROVAL


def test_default_on_drift_turns_an_allowed_call_into_one_that_needs_approval_without_grants() -> None:
    p = policy(doc({"kill": {"grant_max": "1h", "approval": {"approvers": ["alice"]}}}))
    decided = apply_drift(p, DRIFT, Allow('tools["kill"]'))
    assert isinstance(decided, NeedsApproval)
    assert decided.rule == "on_drift"
    assert decided.approval.approvers == ("alice",)  # the rule's approvers decide
    assert decided.grant_max is None
    assert "changed upstream since it was pinned (definition aaaa is now bbbb)" in decided.reason


def test_drift_on_a_call_that_needs_approval_anyway_drops_its_grants() -> None:
    p = policy(doc({"kill": {"action": "require_approval", "grant_max": "1h"}}))
    before = decide(p, "kill")
    after = apply_drift(p, DRIFT, before)
    assert isinstance(before, NeedsApproval) and before.grant_max == 3600.0
    assert isinstance(after, NeedsApproval) and after.grant_max is None and after.rule == before.rule


def test_deny_and_hide_refuse_and_name_the_on_drift_that_did() -> None:
    p = policy(doc({"kill": {"on_drift": "deny"}}, on_drift="hide"))
    denied = apply_drift(p, DRIFT, Allow('tools["kill"]'))
    hidden = apply_drift(p, Drift("other", "a", "b"), Allow("default"))
    assert isinstance(denied, Deny) and denied.rule == 'tools["kill"].on_drift'
    assert hidden == Hidden("on_drift")


def test_allow_and_ignore_leave_decisions_alone_and_drift_never_loosens_a_refusal() -> None:
    for action in ("allow", "ignore"):
        p = policy(doc({"kill": {}}, on_drift=action))
        assert apply_drift(p, DRIFT, Allow('tools["kill"]')) == Allow('tools["kill"]')
    p = policy(doc({"kill": {"on_drift": "hide"}}))
    refused = Deny('tools["kill"]', "no")
    assert apply_drift(p, DRIFT, refused) is refused
