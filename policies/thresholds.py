"""The parts of an `approval` block that go past one quorum: `quorum.any_of` thresholds, `escalate` and `remind`.

Each `read_*` checks one key of a parsed approval block and returns its model value, or None after recording every
fault on the `Checker`; `policies.clauses.read_approval` puts them together. Pure: no I/O.
"""

from collections.abc import Callable
from typing import Any

from policies.checker import Checker
from policies.durations import TIMEOUT_HINT, parse_duration
from policies.model import Escalation, Threshold
from policies.values import show

__all__ = ["read_escalations", "read_remind", "read_thresholds"]

THRESHOLD_KEYS = ("count", "approvers")
ESCALATION_KEYS = ("after", "approvers", "channel")
ANY_OF_KEYS = ("any_of",)
ANY_OF_EXAMPLE = '{"any_of": [{"count": 1, "approvers": ["group:admin"]}, {"count": 2, "approvers": ["group:dba"]}]}'

NameCheck = Callable[[Checker, tuple[str, ...], str], bool]  # checks approver names at a path; whether all are fine


def read_thresholds(check: Checker, value: Any, path: str, names: NameCheck) -> tuple[Threshold, ...] | None:
    """Read `quorum` written as `{"any_of": [{"count": N, "approvers": [...]}, ...]}` (path: the quorum's).

    Each entry needs approvers (an entry that anyone may meet is the plain numeric quorum), and its count may not be
    more than the people it names when it names no group, because that entry could never be met.
    """
    body = check.obj(value, path, ANY_OF_KEYS)
    if body is None:
        return None
    if "any_of" not in body:
        check.error(path, 'a quorum object needs "any_of"', f"e.g. {ANY_OF_EXAMPLE}")
        return None
    entries = check.array(body["any_of"], f"{path}.any_of")
    if entries is None:
        return None
    if not entries:
        check.error(f"{path}.any_of", "any_of is empty, so no call could be approved", f"e.g. {ANY_OF_EXAMPLE}")
        return None
    read = [_read_threshold(check, entry, f"{path}.any_of[{i}]", names) for i, entry in enumerate(entries)]
    return tuple(t for t in read if t is not None) if all(t is not None for t in read) else None


def _read_threshold(check: Checker, value: Any, path: str, names: NameCheck) -> Threshold | None:
    body = check.obj(value, path, THRESHOLD_KEYS)
    if body is None:
        return None
    approvers = _approvers(check, body, path, names)
    count: int | None = None
    if "count" not in body:
        check.error(path, 'missing required key "count"', 'add "count": 1')
    else:
        raw = body["count"]
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            check.error(f"{path}.count", f"count must be a whole number of at least 1, got {show(raw)}")
        elif approvers and not any(a.startswith("group:") for a in approvers) and raw > len(approvers):
            check.error(
                f"{path}.count",
                f"count {raw} is more than the {len(approvers)} named approvers, so this entry could never be met",
                f"lower the count to at most {len(approvers)}, or add approvers",
            )
        else:
            count = raw
    if approvers is None or count is None:
        return None
    return Threshold(count, approvers)


def read_escalations(
    check: Checker, value: Any, path: str, timeout: float | None, names: NameCheck
) -> tuple[Escalation, ...] | None:
    """Read `escalate`: `[{"after": "10m", "approvers": [...], "channel": "#oncall"}]`, each `after` before the
    request's `timeout` (an escalation after it could never come), in the order they come due."""
    entries = check.array(value, path)
    if entries is None:
        return None
    read = [_read_escalation(check, entry, f"{path}[{i}]", timeout, names) for i, entry in enumerate(entries)]
    if any(e is None for e in read):
        return None
    return tuple(sorted((e for e in read if e is not None), key=lambda e: e.after_seconds))


def _read_escalation(
    check: Checker, value: Any, path: str, timeout: float | None, names: NameCheck
) -> Escalation | None:
    body = check.obj(value, path, ESCALATION_KEYS)
    if body is None:
        return None
    after: float | None = None
    if "after" not in body:
        check.error(path, 'missing required key "after"', 'add "after": "10m"')
    else:
        after = parse_duration(body["after"])
        if after is None:
            check.error(f"{path}.after", f"invalid after {show(body['after'])}", TIMEOUT_HINT)
        elif timeout is not None and after >= timeout:
            check.error(
                f"{path}.after",
                f"after {show(body['after'])} is not before the timeout, so this escalation could never come",
                "escalate sooner, or raise approval.timeout",
            )
            after = None
    approvers = _approvers(check, body, path, names)
    channel = check.string(body["channel"], f"{path}.channel") if "channel" in body else None
    if after is None or approvers is None or ("channel" in body and channel is None):
        return None
    return Escalation(after, approvers, channel)


def read_remind(check: Checker, value: Any, path: str, timeout: float | None) -> float | None:
    """Read `remind`, a duration shorter than the timeout (a reminder after it could never come)."""
    seconds = parse_duration(value)
    if seconds is None:
        check.error(path, f"invalid remind {show(value)}", TIMEOUT_HINT)
        return None
    if timeout is not None and seconds >= timeout:
        check.error(
            path,
            f"remind {show(value)} is not shorter than the timeout, so no reminder could ever be sent",
            "remind more often, or raise approval.timeout",
        )
        return None
    return seconds


def _approvers(check: Checker, body: dict[str, Any], path: str, names: NameCheck) -> tuple[str, ...] | None:
    if "approvers" not in body:
        check.error(path, 'missing required key "approvers"', 'e.g. "approvers": ["group:oncall"]')
        return None
    approvers = check.strings(body["approvers"], f"{path}.approvers")
    if approvers is None:
        return None
    if not approvers:
        check.error(f"{path}.approvers", "names nobody", 'e.g. ["group:oncall"]')
        return None
    return approvers if names(check, approvers, f"{path}.approvers") else None
