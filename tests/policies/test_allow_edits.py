"""`approval.allow_edits`: read, validated, and shown where approval specs are shown."""

import json
from typing import Any

from policies import NeedsApproval, RateLimiter, check_policy, evaluate, load_policy
from policies.explain import explain_call, format_trace
from tests.policies.helpers import T0, call


def tool(approval: dict[str, Any]) -> str:
    entry = {"action": "require_approval", "approval": approval}
    return json.dumps({"version": "1", "default": "deny", "tools": {"update_record": entry}})


def test_allow_edits_is_read_into_the_approval_spec() -> None:
    decision = evaluate(load_policy(tool({"allow_edits": True})), call("update_record"), RateLimiter(), T0)
    assert isinstance(decision, NeedsApproval) and decision.approval.allow_edits is True


def test_a_policylayer_document_without_allow_edits_loads_unchanged_and_allows_no_edits() -> None:
    decision = evaluate(load_policy(tool({"approvers": ["alice"]})), call("update_record"), RateLimiter(), T0)
    assert isinstance(decision, NeedsApproval) and decision.approval.allow_edits is False


def test_allow_edits_must_be_true_or_false() -> None:
    found = [(f.path, f.message) for f in check_policy(tool({"allow_edits": "yes"})) if f.severity == "error"]
    assert found == [('$.tools["update_record"].approval.allow_edits', 'expected true or false, got string "yes"')]


def test_allow_edits_with_a_quorum_above_one_is_refused_because_the_others_approved_another_call() -> None:
    doc = tool({"approvers": ["alice", "bob"], "quorum": 2, "allow_edits": True})
    found = [f for f in check_policy(doc) if f.severity == "error"]
    assert [(f.path, f.message) for f in found] == [
        ('$.tools["update_record"].approval.allow_edits', "edits need a quorum of 1, and this rule's quorum is 2")
    ]
    assert found[0].hint == 'drop "allow_edits", or set "quorum": 1'


def test_explain_says_the_approver_may_edit_the_arguments() -> None:
    policy = load_policy(tool({"allow_edits": True}))
    lines = format_trace(explain_call(policy, call("update_record"), RateLimiter(), T0))
    assert any("a person must approve (" in line and "; the approver may edit the arguments)" in line for line in lines)
