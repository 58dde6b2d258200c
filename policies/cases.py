"""Declarative test cases for a policy, kept beside it (`policy.tests.json`), and running them.

Pure: case JSON text in, results out. A case file is a JSON array of cases:

    {"name": "kill of a system pid is denied", "identity": "alice", "tool": "kill_connection",
     "arguments": {"pid": 87}, "expect": "deny", "rule": "tools[\\"kill_connection\\"].deny_if[0]"}

`identity` and `groups` (optional) say who calls, for `caller` conditions; without them a case calls as the agent
`run_cases` is given (`signoff policy test --agent NAME`), else as `test-agent` in no group.

`expect` is allow, deny, hidden, rate_limited or require_approval. `rule` (optional) must match the deciding rule's
locator, or a leading part of it (`tools["x"]` matches `tools["x"].deny_if[0]`); a bare tools key `x` stands for
`tools["x"]`. `repeat: N` (optional) makes the call N times at one instant and checks the last decision, to test
limits. Each case runs with fresh counters and a fixed clock, so cases never affect each other.
"""

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from policies.checker import choices, key_path
from policies.errors import CasesInvalid, Fault
from policies.evaluate import evaluate
from policies.explain import DecisionKind, kind_of
from policies.jsontext import read_json
from policies.limits import RateLimiter
from policies.model import Caller, Decision, Policy, ToolCall, tool_locator
from policies.values import json_kind, show

__all__ = ["CASE_KEYS", "Case", "CaseResult", "CasesInvalid", "load_cases", "match_rule", "run_cases"]

CASE_KEYS = ("name", "identity", "groups", "tool", "arguments", "expect", "rule", "repeat", "server")
DEFAULT_IDENTITY = "test-agent"
DEFAULT_SERVER = "test"
MAX_REPEAT = 100_000
# A fixed instant at the start of a UTC day, so every window (second to day) starts exactly here.
CLOCK = 1_800_028_800.0


@dataclass(frozen=True, slots=True)
class Case:
    """One expected decision: `identity` (in `groups`) calls `tool` with `arguments` (`repeat` times) and expects
    `expect`. None for `identity` or `groups`: as the agent the cases run as."""

    name: str
    tool: str
    expect: DecisionKind
    identity: str | None = None
    groups: tuple[str, ...] | None = None
    arguments: Mapping[str, Any] | None = None
    rule: str | None = None
    repeat: int = 1
    server: str = DEFAULT_SERVER


@dataclass(frozen=True, slots=True)
class CaseResult:
    """What happened to a case: the last decision, whether it was the expected one, and why not if it failed."""

    case: Case
    decision: Decision
    passed: bool
    problem: str = ""
    tally: tuple[tuple[DecisionKind, int], ...] = ()

    @property
    def got(self) -> DecisionKind:
        """The kind of the last decision."""
        return kind_of(self.decision)

    def describe(self) -> str:
        """One line: what the policy did (with its rule and reason) and, for repeats, what each call got."""
        reason = getattr(self.decision, "reason", None)
        text = f"{self.got} by {self.decision.rule}" + (f": {reason}" if reason else "")
        if self.case.repeat > 1:
            counts = ", ".join(f"{kind} x{n}" for kind, n in self.tally)
            text += f" (call {self.case.repeat} of {self.case.repeat}; {counts})"
        return text


def _path(index: int, key: str | None = None) -> str:
    return f"$[{index}]" if key is None else key_path(f"$[{index}]", key)


def _case(index: int, raw: Any, faults: list[Fault], names: dict[str, int]) -> Case | None:
    at = _path(index)
    before = len(faults)

    def fault(key: str | None, message: str, hint: str | None = None) -> None:
        faults.append(Fault(_path(index, key), message, hint))

    if not isinstance(raw, dict):
        fault(None, f"expected a case object, got {json_kind(raw)} {show(raw)}", _EXAMPLE)
        return None
    for key in raw:
        if key not in CASE_KEYS:
            fault(key, f"unknown key {show(key)}", f"valid keys: {choices(CASE_KEYS)}")
    for key in ("name", "tool", "expect"):
        if key not in raw:
            faults.append(Fault(at, f'missing required key "{key}"', f"e.g. {_EXAMPLE}"))
    for key in ("name", "tool", "identity", "rule", "server"):
        value = raw.get(key, "-")
        if not isinstance(value, str) or not value:
            fault(key, f"expected a non-empty string, got {json_kind(value)} {show(value)}")
    groups = raw.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
        fault("groups", f"expected an array of group names, got {json_kind(groups)} {show(groups)}")
    if not isinstance(raw.get("arguments", {}), dict):
        fault("arguments", f"expected an object, got {json_kind(raw['arguments'])} {show(raw['arguments'])}")
    if "expect" in raw and raw["expect"] not in tuple(DecisionKind):
        fault("expect", f"invalid expect {show(raw['expect'])}", f"use one of {choices(DecisionKind)}")
    repeat = raw.get("repeat", 1)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= MAX_REPEAT:
        fault("repeat", f"repeat must be a whole number from 1 to {MAX_REPEAT}, got {show(repeat)}")
    name = raw.get("name")
    if isinstance(name, str) and name:
        if name in names:
            fault("name", f"case $[{names[name]}] has the same name {show(name)}", "give each case its own name")
        else:
            names[name] = index
    if len(faults) > before:
        return None
    return Case(
        name=raw["name"],
        tool=raw["tool"],
        expect=DecisionKind(raw["expect"]),
        identity=raw.get("identity"),
        groups=tuple(raw["groups"]) if "groups" in raw else None,
        arguments=raw.get("arguments", {}),
        rule=raw.get("rule"),
        repeat=repeat,
        server=raw.get("server", DEFAULT_SERVER),
    )


_EXAMPLE = '{"name": "reads are allowed", "tool": "list_items", "arguments": {}, "expect": "allow"}'


def load_cases(text: str | bytes, *, source: str = "<cases>") -> tuple[Case, ...]:
    """Parse and check a case file.

    Args:
        text: The JSON text: an array of case objects.
        source: Where it came from, for messages.

    Returns:
        The cases, in file order.

    Raises:
        CasesInvalid: The text is not JSON, not an array, or any case is malformed; every fault is listed.
    """
    doc, fault = read_json(text, "the file")
    if fault is not None:
        raise CasesInvalid(source, [fault])
    if not isinstance(doc, list):
        message = f"expected an array of cases, got {json_kind(doc)}"
        raise CasesInvalid(source, [Fault("$", message, f"[{_EXAMPLE}]")])
    faults: list[Fault] = []
    names: dict[str, int] = {}
    cases = [_case(i, raw, faults, names) for i, raw in enumerate(doc)]
    if faults:
        raise CasesInvalid(source, faults)
    return tuple(c for c in cases if c is not None)


def match_rule(expected: str, locator: str) -> bool:
    """Whether a case's `rule` names the deciding `locator`: the same, a leading part of it, or its bare tools key."""
    if not expected.startswith(("tools[", "hide[", "all_tools")) and expected not in ("default", "error"):
        expected = tool_locator(expected)
    return locator == expected or (locator.startswith(expected) and locator[len(expected)] in ".[")


def run_cases(policy: Policy, cases: tuple[Case, ...] | list[Case], caller: Caller | None = None) -> list[CaseResult]:
    """Run every case against `policy`, each with fresh counters at the same fixed instant.

    Args:
        policy: The compiled policy under test.
        cases: The cases to run.
        caller: Who a case calls as when it names no `identity` (and its groups, when it names no `groups`);
            None: `test-agent`, in no group.

    Returns:
        One result per case, in order.
    """
    results = []
    for case in cases:
        limiter = RateLimiter()
        default = caller or Caller(DEFAULT_IDENTITY)
        identity = case.identity or default.name
        groups = case.groups if case.groups is not None else default.groups if identity == default.name else ()
        call = ToolCall(case.server, case.tool, case.arguments or {}, identity, groups)
        kinds: Counter[DecisionKind] = Counter()
        decision: Decision | None = None
        for _ in range(case.repeat):
            decision = evaluate(policy, call, limiter, CLOCK)
            kinds[kind_of(decision)] += 1
        if decision is None:  # repeat >= 1 is checked on load; a Case built by hand may say 0
            raise ValueError(f"case {case.name!r}: repeat must be at least 1")
        got = kind_of(decision)
        problem = ""
        if got is not case.expect:
            problem = f"expected {case.expect}, got {got}"
        elif case.rule is not None and not match_rule(case.rule, decision.rule):
            problem = f"expected rule {case.rule}, got {decision.rule}"
        results.append(CaseResult(case, decision, not problem, problem, tuple(sorted(kinds.items()))))
    return results
