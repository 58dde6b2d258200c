"""Pure policy logic for signoff: the policy document, its loading and validation, and deciding tool calls.

No I/O, no async, and no imports from the other signoff packages.
"""

from policies.durations import parse_duration
from policies.errors import Fault, PolicyError, PolicyInvalid, format_fault
from policies.evaluate import evaluate, is_hidden, rule_for
from policies.limits import DeferredLimits, Limiter, RateLimiter
from policies.loading import check_policy, load_policy
from policies.model import (
    Action,
    Allow,
    ApprovalSpec,
    Caller,
    Condition,
    Decision,
    Deny,
    Escalation,
    Hidden,
    Limit,
    LimitsUnavailable,
    NeedsApproval,
    Policy,
    RateLimited,
    Rule,
    Scope,
    Threshold,
    ToolCall,
)

__all__ = [
    "Action",
    "Allow",
    "ApprovalSpec",
    "Caller",
    "Condition",
    "Decision",
    "DeferredLimits",
    "Deny",
    "Escalation",
    "Fault",
    "Hidden",
    "Limit",
    "Limiter",
    "LimitsUnavailable",
    "NeedsApproval",
    "Policy",
    "PolicyError",
    "PolicyInvalid",
    "RateLimited",
    "RateLimiter",
    "Rule",
    "Scope",
    "Threshold",
    "ToolCall",
    "check_policy",
    "evaluate",
    "format_fault",
    "is_hidden",
    "load_policy",
    "parse_duration",
    "rule_for",
]
