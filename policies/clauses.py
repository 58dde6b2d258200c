"""The clauses a `tools` entry is made of: conditions (`require`, `deny_if`, `approve_if`), limits, and approval.

Each `read_*` function checks one clause of a parsed policy document and returns its model value, or None after
recording every fault in it on the `Checker`; it never decides whether the clause is sensible where it stands
(that is `policies.pitfalls`).
"""

import difflib
import re
from collections.abc import Collection
from typing import Any

from policies.checker import Checker, choices
from policies.durations import TIMEOUT_HINT, WINDOW_HINT, parse_duration, parse_window
from policies.model import (
    CALLER_OPS,
    OPS,
    ApprovalSpec,
    CallerField,
    Condition,
    Escalation,
    Limit,
    Scope,
    Subject,
    Threshold,
)
from policies.thresholds import NameCheck, read_escalations, read_remind, read_thresholds
from policies.values import json_kind, show

__all__ = ["configured_listing", "read_approval", "read_condition", "read_limit", "read_rate_limit"]

CONDITION_KEYS = ("arg", "caller", "op", "value")
CALLER_FIELDS = tuple(f.value for f in CallerField)
LIMIT_KEYS = ("counter", "window", "max", "scope")
RATE_LIMIT_KEYS = ("max", "window")
APPROVAL_KEYS = (
    "approvers",
    "quorum",
    "timeout",
    "channel",
    "allow_self_approval",
    "escalate",
    "remind",
    "allow_edits",
    "use_within",
)

SCOPES = tuple(s.value for s in Scope)


def read_condition(check: Checker, value: Any, path: str) -> Condition | None:
    """Read one condition, `{"arg": "a.b", "op": "eq", "value": 1}`; the value must suit the op.

    A condition on the caller names `caller` instead of `arg`: `{"caller": "agent", "op": "in", "value": ["ci-bot"]}`
    tests the agent's name, `{"caller": "groups", "op": "contains", "value": "automation"}` its groups.

    Args:
        check: Collects the faults.
        value: The parsed condition.
        path: Its JSON path, e.g. `$.tools["x"].deny_if[0]`.

    Returns:
        The condition, or None when it has a fault. `exists` may leave out `value` (it means true).
    """
    body = check.obj(value, path, CONDITION_KEYS)
    if body is None:
        return None
    if "caller" in body:
        return _read_caller_condition(check, body, path)
    ok = True
    arg = None
    if "arg" not in body:
        check.error(
            path,
            'missing required key "arg"',
            'name the argument, e.g. "arg": "pid" (or "caller": "agent" for who calls)',
        )
        ok = False
    else:
        arg = check.string(body["arg"], f"{path}.arg")
        if arg is not None and "" in arg.split("."):
            check.error(f"{path}.arg", f'invalid argument path "{arg}": empty segment', 'use "a.b.0" style paths')
            ok = False
    op = None
    if "op" not in body:
        check.error(path, 'missing required key "op"', f"valid ops: {choices(OPS)}")
        ok = False
    else:
        op = check.choice(body["op"], f"{path}.op", OPS, "op")
    if "value" not in body:
        if op == "exists":
            return Condition(arg, "exists", True) if ok and arg is not None else None
        if op is not None:
            check.error(path, f'missing required key "value" for op "{op}"')
        return None
    expected = body["value"]
    if op is None or arg is None or not ok:
        return None
    vpath = f"{path}.value"
    if not _check_condition_value(check, op, expected, vpath):
        return None
    return Condition(arg, op, expected)


def _read_caller_condition(check: Checker, body: dict[str, Any], path: str) -> Condition | None:
    """Read a condition on the caller: `caller` is `agent` (a name) or `groups`; each allows a few ops."""
    ok = True
    if "arg" in body:
        check.error(path, 'a condition tests an argument ("arg") or the caller ("caller"), not both', "split it in two")
        ok = False
    field = check.choice(body["caller"], f"{path}.caller", CALLER_FIELDS, "caller field")
    if field is None:
        return None
    valid = CALLER_OPS[CallerField(field)]
    if "op" not in body:
        check.error(path, 'missing required key "op"', f"valid ops on the caller's {field}: {choices(valid)}")
        return None
    op = check.choice(body["op"], f"{path}.op", valid, f"op on the caller's {field}")
    if op is None:
        return None
    if "value" not in body:
        check.error(path, f'missing required key "value" for op "{op}"')
        return None
    expected, vpath = body["value"], f"{path}.value"
    if op in ("in", "not_in"):
        names = check.strings(expected, vpath)
        if names is None:
            return None
        expected = list(names)
    elif op in ("regex", "not_regex"):
        if not _check_condition_value(check, op, expected, vpath):
            return None
    elif check.string(expected, vpath) is None:
        return None
    return Condition(field, op, expected, Subject.CALLER) if ok else None


def _check_condition_value(check: Checker, op: str, expected: Any, path: str) -> bool:
    kind = json_kind(expected)
    if op == "exists" and kind != "boolean":
        check.wrong_type(path, "true or false for op exists", expected)
    elif op in ("lt", "le", "gt", "ge") and kind not in ("number", "string"):
        check.wrong_type(path, f"a number or a string for op {op}", expected)
    elif op in ("in", "not_in") and kind != "array":
        check.wrong_type(path, f"an array for op {op}", expected)
    elif op in ("starts_with", "ends_with") and kind != "string":
        check.wrong_type(path, f"a string for op {op}", expected)
    elif op == "contains" and kind in ("null", "object"):
        check.wrong_type(path, "a string, number or boolean for op contains", expected)
    elif op in ("regex", "not_regex"):
        if kind != "string":
            check.wrong_type(path, f"a string for op {op}", expected)
            return False
        try:
            re.compile(expected)
        except re.error as exc:
            where = f" at position {exc.pos}" if exc.pos is not None else ""
            check.error(
                path,
                f"invalid regular expression {show(expected)}: {exc.msg}{where}",
                "patterns use Python re syntax; escape a backslash as \\\\ in JSON",
            )
            return False
        return True
    else:
        return True
    return False


def read_limit(check: Checker, value: Any, path: str) -> Limit | None:
    """Read one entry of `limits`: a named `counter`, its `window`, its `max`, and the `scope` (grant by default).

    Args:
        check: Collects the faults.
        value: The parsed limit.
        path: Its JSON path, e.g. `$.all_tools.limits[0]`.

    Returns:
        The limit, or None when it has a fault.
    """
    body = check.obj(value, path, LIMIT_KEYS)
    if body is None:
        return None
    missing = [k for k in ("counter", "window", "max") if k not in body]
    for key in missing:
        check.error(path, f'missing required key "{key}"', 'e.g. {"counter": "x_rate", "window": "minute", "max": 10}')
    counter = check.string(body["counter"], f"{path}.counter") if "counter" in body else None
    window = _read_window(check, body["window"], f"{path}.window") if "window" in body else None
    most = _read_max(check, body["max"], f"{path}.max") if "max" in body else None
    scope: str | None = Scope.GRANT.value
    if "scope" in body:
        scope = check.choice(body["scope"], f"{path}.scope", SCOPES, "scope")
    if counter is None or window is None or most is None or scope is None:
        return None
    return Limit(counter, window, most, Scope(scope))


def read_rate_limit(check: Checker, value: Any, path: str, tool: str) -> Limit | None:
    """Read PolicyLayer's `rate_limit` shorthand, `{"max": 10, "window": 60}`, as a grant-scoped limit.

    Args:
        check: Collects the faults.
        value: The parsed `rate_limit` object.
        path: Its JSON path.
        tool: The `tools` key it belongs to, which names the counter (`<tool>_rate`).

    Returns:
        The limit, or None when it has a fault.
    """
    body = check.obj(value, path, RATE_LIMIT_KEYS)
    if body is None:
        return None
    for key in ("max", "window"):
        if key not in body:
            check.error(path, f'missing required key "{key}"', 'e.g. "rate_limit": {"max": 10, "window": 60}')
    window = _read_window(check, body["window"], f"{path}.window") if "window" in body else None
    most = _read_max(check, body["max"], f"{path}.max") if "max" in body else None
    if window is None or most is None:
        return None
    return Limit(f"{tool}_rate", window, most, Scope.GRANT)


def _read_window(check: Checker, value: Any, path: str) -> float | None:
    seconds = parse_window(value)
    if seconds is None:
        check.error(path, f"invalid window {show(value)}", WINDOW_HINT)
    return seconds


def _read_max(check: Checker, value: Any, path: str) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        check.error(path, f"max must be a positive whole number, got {show(value)}", "e.g. 10")
        return None
    return value


def configured_listing(known: Collection[str]) -> str:
    """The configured approvers for a message: names first, then groups, e.g. `alice, bob, group:dba`."""
    return ", ".join(sorted(known, key=lambda n: (n.startswith("group:"), n))) or "none"


def _unknown_approver(check: Checker, name: str, path: str, known: Collection[str]) -> None:
    # Only names of the same kind are hinted at: "group:dbaa" means a group, never the approver "dba".
    same_kind = [k for k in known if k.startswith("group:") == name.startswith("group:")]
    close = difflib.get_close_matches(name, same_kind, n=1, cutoff=0.6)
    listing = f"configured: {configured_listing(known)}"
    hint = f'did you mean "{close[0]}"? {listing}' if close else listing
    check.error(path, f'"{name}" names no configured approver or group', hint)


def _known_names(known: Collection[str] | None) -> NameCheck:
    """Checks approver names against the configured `known` (None: any name stands); `group:` alone never does."""

    def check_names(check: Checker, approvers: tuple[str, ...], path: str) -> bool:
        ok = True
        for i, name in enumerate(approvers):
            if name.startswith("group:") and not name[len("group:") :]:
                check.error(f"{path}[{i}]", '"group:" needs a group name', 'e.g. "group:dba"')
                ok = False
            elif known is not None and name not in known:
                _unknown_approver(check, name, f"{path}[{i}]", known)
                ok = False
        return ok

    return check_names


def read_approval(check: Checker, value: Any, path: str, known: Collection[str] | None = None) -> ApprovalSpec | None:
    """Read an `approval` block: approvers (names or `group:x`), quorum (a number, or `{"any_of": [...]}`),
    timeout, channel, self-approval, escalations and reminders, edits, and
    `use_within` (how long an approval may wait to be used).

    A quorum larger than the named approvers is an error, because no call could ever be approved; with a group
    named, the group's size is unknown here, so any quorum stands. With `quorum.any_of`, the approvers are named in
    its entries and not in `approvers`, so there is one list of who counts where.

    Args:
        check: Collects the faults.
        value: The parsed `approval` object.
        path: Its JSON path.
        known: The approver names and `group:NAME`s the gateway is configured with; each approver named must be
            one of them (None: names are not checked, as when a policy is checked on its own).

    Returns:
        The approval spec, or None when it has a fault.
    """
    body = check.obj(value, path, APPROVAL_KEYS)
    if body is None:
        return None
    names = _known_names(known)
    ok = True
    approvers: tuple[str, ...] | None = ()
    if "approvers" in body:
        approvers = check.strings(body["approvers"], f"{path}.approvers")
        if approvers is not None and not names(check, approvers, f"{path}.approvers"):
            ok = False
    quorum: int | None = 1
    thresholds: tuple[Threshold, ...] | None = ()
    if "quorum" in body and isinstance(body["quorum"], dict):
        thresholds = read_thresholds(check, body["quorum"], f"{path}.quorum", names)
        if "approvers" in body:
            check.error(
                f"{path}.approvers",
                "with quorum.any_of, approvers are named in its entries",
                "move these names into an any_of entry",
            )
            ok = False
        if thresholds:
            quorum = min(t.count for t in thresholds)
            approvers = tuple(dict.fromkeys(a for t in thresholds for a in t.approvers))
    elif "quorum" in body:
        raw = body["quorum"]
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            check.error(
                f"{path}.quorum",
                f"quorum must be a whole number of at least 1, or an object with any_of, got {show(raw)}",
            )
            quorum = None
        else:
            quorum = raw
            named = approvers or ()
            if named and not any(a.startswith("group:") for a in named) and raw > len(named):
                check.error(
                    f"{path}.quorum",
                    f"quorum {raw} is more than the {len(named)} named approvers, so no call could be approved",
                    f"lower the quorum to at most {len(named)}, or add approvers",
                )
                quorum = None
    timeout: float | None = 900.0
    if "timeout" in body:
        timeout = parse_duration(body["timeout"])
        if timeout is None:
            check.error(f"{path}.timeout", f"invalid timeout {show(body['timeout'])}", TIMEOUT_HINT)
    channel = check.string(body["channel"], f"{path}.channel") if "channel" in body else None
    self_ok: bool | None = False
    if "allow_self_approval" in body:
        self_ok = check.boolean(body["allow_self_approval"], f"{path}.allow_self_approval")
    use_within: float | None = None
    if "use_within" in body:
        use_within = parse_duration(body["use_within"])
        if use_within is None:
            check.error(f"{path}.use_within", f"invalid use_within {show(body['use_within'])}", TIMEOUT_HINT)
            ok = False
    escalate: tuple[Escalation, ...] | None = ()
    if "escalate" in body:
        escalate = read_escalations(check, body["escalate"], f"{path}.escalate", timeout, names)
    remind = read_remind(check, body["remind"], f"{path}.remind", timeout) if "remind" in body else None
    edits: bool | None = False
    if "allow_edits" in body:
        edits = check.boolean(body["allow_edits"], f"{path}.allow_edits")
        most = max([quorum or 1, *(t.count for t in thresholds or ())])
        if edits and most > 1:
            # The other approvers would have approved a call that is not the one that runs.
            where = "an entry of this rule's quorum.any_of needs" if thresholds else "this rule's quorum is"
            check.error(
                f"{path}.allow_edits",
                f"edits need a quorum of 1, and {where} {most}",
                'drop "allow_edits", or set "quorum": 1',
            )
            edits = None
    if (
        not ok
        or approvers is None
        or quorum is None
        or timeout is None
        or self_ok is None
        or thresholds is None
        or edits is None
    ):
        return None
    if ("channel" in body and channel is None) or escalate is None or ("remind" in body and remind is None):
        return None
    return ApprovalSpec(approvers, quorum, timeout, channel, self_ok, thresholds, escalate, remind, edits, use_within)
