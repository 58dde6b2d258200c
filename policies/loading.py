"""Policy JSON text to a compiled `Policy`, with every fault reported by JSON path.

`check_policy` returns all faults (errors and warnings) and never raises; `load_policy` raises `PolicyInvalid` when
any of them is an error. Every PolicyLayer v1 document loads and means the same thing.
"""

import difflib
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from policies.durations import TIMEOUT_HINT, WINDOW_HINT, parse_duration, parse_window
from policies.errors import Fault, PolicyInvalid
from policies.globs import GlobSyntaxError, NameMatcher, glob_to_regex
from policies.jsontext import read_json
from policies.model import OPS, Action, ApprovalSpec, Condition, DriftAction, Limit, Policy, Rule, Scope
from policies.values import json_kind, show

__all__ = ["Fault", "check_policy", "load_policy"]

TOP_KEYS = ("version", "default", "default_reason", "hide", "all_tools", "tools", "shadow", "on_drift")
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
CONDITION_KEYS = ("arg", "op", "value")
LIMIT_KEYS = ("counter", "window", "max", "scope")
RATE_LIMIT_KEYS = ("max", "window")
APPROVAL_KEYS = ("approvers", "quorum", "timeout", "channel", "allow_self_approval")

ACTIONS = tuple(a.value for a in Action)
DRIFT_ACTIONS = tuple(a.value for a in DriftAction)
SCOPES = tuple(s.value for s in Scope)


def _key_path(path: str, key: str) -> str:
    if key.isidentifier():
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def _choices(values: Iterable[str]) -> str:
    return ", ".join(f'"{v}"' for v in values)


# Spellings from other policy languages, so the hint names the op meant rather than the nearest string.
_OP_ALIASES = {
    "==": "eq",
    "=": "eq",
    "equals": "eq",
    "!=": "ne",
    "neq": "ne",
    "not_equals": "ne",
    "<": "lt",
    "<=": "le",
    "lte": "le",
    ">": "gt",
    ">=": "ge",
    "gte": "ge",
    "matches": "regex",
    "nin": "not_in",
    "startswith": "starts_with",
    "endswith": "ends_with",
}


def _suggest(word: str, valid: Iterable[str], what: str) -> str:
    valid = tuple(valid)
    alias = _OP_ALIASES.get(word.lower())
    close = [alias] if alias in valid else difflib.get_close_matches(word, valid, n=1, cutoff=0.6)
    listing = f"valid {what}: {_choices(valid)}"
    return f'did you mean "{close[0]}"? {listing}' if close else listing


class _Checker:
    """Walks a parsed document, collecting faults and building model values."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []

    def error(self, path: str, message: str, hint: str | None = None) -> None:
        self.faults.append(Fault(path, message, hint, "error"))

    def warn(self, path: str, message: str, hint: str | None = None) -> None:
        self.faults.append(Fault(path, message, hint, "warning"))

    @property
    def failed(self) -> bool:
        return any(f.severity == "error" for f in self.faults)

    # -- generic shapes -------------------------------------------------------------------------------------------

    def wrong_type(self, path: str, expected: str, value: Any) -> None:
        self.error(path, f"expected {expected}, got {json_kind(value)} {show(value)}")

    def obj(self, value: Any, path: str, valid: tuple[str, ...]) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.wrong_type(path, "an object", value)
            return None
        for key in getattr(value, "duplicates", ()):
            self.error(_key_path(path, key), f'key "{key}" appears more than once', "keep one; JSON keeps the last")
        if valid:
            for key in value:
                if key not in valid:
                    self.error(_key_path(path, key), f'unknown key "{key}"', _suggest(key, valid, "keys"))
        return value

    def array(self, value: Any, path: str) -> list[Any] | None:
        if not isinstance(value, list):
            self.wrong_type(path, "an array", value)
            return None
        return value

    def string(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str):
            self.wrong_type(path, "a string", value)
            return None
        if not value:
            self.error(path, "must not be empty")
            return None
        return value

    def boolean(self, value: Any, path: str) -> bool | None:
        if not isinstance(value, bool):
            self.wrong_type(path, "true or false", value)
            return None
        return value

    def strings(self, value: Any, path: str) -> tuple[str, ...] | None:
        items = self.array(value, path)
        if items is None:
            return None
        out = [self.string(item, f"{path}[{i}]") for i, item in enumerate(items)]
        return tuple(s for s in out if s is not None) if all(s is not None for s in out) else None

    def items(
        self, parent: dict[str, Any], key: str, path: str, parse: Callable[[Any, str], Any]
    ) -> tuple[Any, ...] | None:
        if key not in parent:
            return ()
        items = self.array(parent[key], f"{path}.{key}")
        if items is None:
            return None
        out = [parse(item, f"{path}.{key}[{i}]") for i, item in enumerate(items)]
        return None if any(o is None for o in out) else tuple(out)

    def choice(self, value: Any, path: str, valid: tuple[str, ...], what: str) -> str | None:
        if not isinstance(value, str):
            self.wrong_type(path, f"one of {_choices(valid)}", value)
            return None
        if value not in valid:
            self.error(path, f'invalid {what} "{value}"', _suggest(value, valid, f"{what}s"))
            return None
        return value

    def glob(self, pattern: str, path: str) -> bool:
        try:
            glob_to_regex(pattern)
        except GlobSyntaxError as exc:
            self.error(path, f'invalid glob "{pattern}": {exc}', "globs use *, ? and [...] with a closing ]")
            return False
        return True

    # -- the document ---------------------------------------------------------------------------------------------

    def document(self, doc: Any, source: str, digest: str) -> Policy | None:
        if not isinstance(doc, dict):
            self.error(
                "$", f"the policy must be a JSON object, got {json_kind(doc)}", '{"version": "1", "default": "deny"}'
            )
            return None
        self.obj(doc, "$", TOP_KEYS)
        version = doc.get("version")
        if "version" not in doc:
            self.error("$", 'missing required key "version"', 'add "version": "1"')
        elif version != "1":
            hint = 'write it as the string "1"' if version == 1 and not isinstance(version, bool) else None
            self.error("$.version", f'unsupported version {show(version)}; only "1" is recognised', hint)

        default = None
        if "default" not in doc:
            self.error("$", 'missing required key "default"', 'add "default": "deny" (or "allow", "require_approval")')
        else:
            default = self.choice(doc["default"], "$.default", ACTIONS, "default")
        default_reason = None
        if "default_reason" in doc:
            default_reason = self.string(doc["default_reason"], "$.default_reason")

        hide: tuple[str, ...] | None = ()
        if "hide" in doc:
            hide = self.strings(doc["hide"], "$.hide")
            for i, pattern in enumerate(hide or ()):
                self.glob(pattern, f"$.hide[{i}]")

        all_tools_limits: tuple[Limit, ...] | None = ()
        if "all_tools" in doc:
            all_tools = self.obj(doc["all_tools"], "$.all_tools", ALL_TOOLS_KEYS)
            if all_tools is not None:
                all_tools_limits = self.items(all_tools, "limits", "$.all_tools", self.limit)

        shadow: bool | None = False
        if "shadow" in doc:
            shadow = self.boolean(doc["shadow"], "$.shadow")
        on_drift: str | None = DriftAction.REQUIRE_APPROVAL.value
        if "on_drift" in doc:
            on_drift = self.choice(doc["on_drift"], "$.on_drift", DRIFT_ACTIONS, "on_drift")

        rules: list[Rule] = []
        if "tools" in doc:
            tools = self.obj(doc["tools"], "$.tools", ())
            for name, entry in (tools or {}).items():
                rule = self.rule(name, entry)
                if rule is not None:
                    rules.append(rule)

        if self.failed or default is None or hide is None or all_tools_limits is None:
            return None
        if shadow is None or on_drift is None:
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
        )
        self.policy_warnings(policy)
        return policy

    def policy_warnings(self, policy: Policy) -> None:
        hidden = NameMatcher.build([(p, p) for p in policy.hide])
        for rule in policy.rules:
            hit = hidden.find(rule.pattern)
            if hit is not None:
                self.warn(
                    f"$.tools[{json.dumps(rule.pattern, ensure_ascii=False)}]",
                    f'"{rule.pattern}" is hidden by hide entry "{hit[0]}", so this entry never applies',
                    "remove the entry, or remove the tool from hide",
                )
        if policy.default is Action.DENY and all(r.action is Action.DENY for r in policy.rules):
            self.warn(
                "$",
                "default is deny and no rule allows any tool: this policy allows nothing",
                'list the tools agents may call under "tools", e.g. "tools": {"list_items": {}}',
            )

    def rule(self, name: str, entry: Any) -> Rule | None:
        path = f"$.tools[{json.dumps(name, ensure_ascii=False)}]"
        if not name:
            self.error(path, "the tool name is empty", "use a tool name or a glob such as delete_*")
        else:
            self.glob(name, path)
        body = self.obj(entry, path, RULE_KEYS)
        if body is None:
            return None
        action = None
        if "action" in body:
            action = self.choice(body["action"], f"{path}.action", ACTIONS, "action")
        reason = self.string(body["reason"], f"{path}.reason") if "reason" in body else None
        require = self.items(body, "require", path, self.condition)
        deny_if = self.items(body, "deny_if", path, self.condition)
        approve_if = self.items(body, "approve_if", path, self.condition)
        limits = self.items(body, "limits", path, self.limit)
        rate_limit = self.rate_limit(body["rate_limit"], f"{path}.rate_limit", name) if "rate_limit" in body else None
        approval = self.approval(body["approval"], f"{path}.approval") if "approval" in body else None
        redact: tuple[str, ...] | None = ()
        if "redact" in body:
            redact = self.strings(body["redact"], f"{path}.redact")
        shadow = self.boolean(body["shadow"], f"{path}.shadow") if "shadow" in body else False
        on_drift = None
        if "on_drift" in body:
            on_drift = self.choice(body["on_drift"], f"{path}.on_drift", DRIFT_ACTIONS, "on_drift")
        grant_max = self.grant_max(body, path, action, approve_if, approval)

        # An approval block that failed to parse was already reported; don't pile a warning on top.
        no_approvers = (approval is None and "approval" not in body) or (
            approval is not None and not approval.approvers
        )
        if action == Action.REQUIRE_APPROVAL and no_approvers:
            self.warn(
                f"{path}.action",
                "the rule requires approval but names no approvers, so anyone listed as an approver in the "
                "configuration may decide",
                'add "approval": {"approvers": ["alice", "group:ops"]}',
            )
        elif approve_if and action in (None, Action.ALLOW) and no_approvers:
            self.warn(
                f"{path}.approve_if",
                "approve_if names no approvers, so anyone listed as an approver in the configuration may decide",
                'add "approval": {"approvers": ["alice", "group:ops"]}',
            )
        if action == Action.DENY:
            unused = [
                k
                for k in ("require", "deny_if", "approve_if", "limits", "rate_limit", "approval", "grant_max")
                if k in body
            ]
            if unused:
                self.warn(
                    f"{path}.action",
                    f"the rule denies every call, so its {', '.join(unused)} never apply",
                    "remove them, or drop the action",
                )
        elif "approval" in body and action != Action.REQUIRE_APPROVAL and not approve_if:
            self.warn(
                f"{path}.approval",
                "the approval block is never used: the rule neither requires approval nor has approve_if",
                'add "action": "require_approval" or an approve_if condition',
            )

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

    def grant_max(
        self,
        body: dict[str, Any],
        path: str,
        action: str | None,
        approve_if: tuple[Any, ...] | None,
        approval: ApprovalSpec | None,
    ) -> float | None:
        if "grant_max" not in body:
            return None
        seconds = parse_duration(body["grant_max"])
        if seconds is None:
            self.error(f"{path}.grant_max", f"invalid grant_max {show(body['grant_max'])}", TIMEOUT_HINT)
            return None
        if action == Action.DENY:
            pass  # reported with the rule's other unused keys
        elif action != Action.REQUIRE_APPROVAL and not approve_if:
            self.warn(
                f"{path}.grant_max",
                "grant_max is never used: the rule neither requires approval nor has approve_if",
                'add "action": "require_approval" or an approve_if condition, or remove grant_max',
            )
        elif approval is not None and approval.quorum > 1:
            self.warn(
                f"{path}.grant_max",
                f"no grant can be given: a grant lets later calls through on one person's word, and this rule's "
                f"quorum is {approval.quorum}",
                "lower the quorum to 1, or remove grant_max",
            )
        return seconds

    def condition(self, value: Any, path: str) -> Condition | None:
        body = self.obj(value, path, CONDITION_KEYS)
        if body is None:
            return None
        ok = True
        arg = None
        if "arg" not in body:
            self.error(path, 'missing required key "arg"', 'name the argument, e.g. "arg": "pid"')
            ok = False
        else:
            arg = self.string(body["arg"], f"{path}.arg")
            if arg is not None and "" in arg.split("."):
                self.error(f"{path}.arg", f'invalid argument path "{arg}": empty segment', 'use "a.b.0" style paths')
                ok = False
        op = None
        if "op" not in body:
            self.error(path, 'missing required key "op"', f"valid ops: {_choices(OPS)}")
            ok = False
        else:
            op = self.choice(body["op"], f"{path}.op", OPS, "op")
        if "value" not in body:
            if op == "exists":
                return Condition(arg, "exists", True) if ok and arg is not None else None
            if op is not None:
                self.error(path, f'missing required key "value" for op "{op}"')
            return None
        expected = body["value"]
        if op is None or arg is None or not ok:
            return None
        vpath = f"{path}.value"
        if not self.condition_value(op, expected, vpath):
            return None
        return Condition(arg, op, expected)

    def condition_value(self, op: str, expected: Any, path: str) -> bool:
        kind = json_kind(expected)
        if op == "exists" and kind != "boolean":
            self.wrong_type(path, "true or false for op exists", expected)
        elif op in ("lt", "le", "gt", "ge") and kind not in ("number", "string"):
            self.wrong_type(path, f"a number or a string for op {op}", expected)
        elif op in ("in", "not_in") and kind != "array":
            self.wrong_type(path, f"an array for op {op}", expected)
        elif op in ("starts_with", "ends_with") and kind != "string":
            self.wrong_type(path, f"a string for op {op}", expected)
        elif op == "contains" and kind in ("null", "object"):
            self.wrong_type(path, "a string, number or boolean for op contains", expected)
        elif op in ("regex", "not_regex"):
            if kind != "string":
                self.wrong_type(path, f"a string for op {op}", expected)
                return False
            try:
                re.compile(expected)
            except re.error as exc:
                where = f" at position {exc.pos}" if exc.pos is not None else ""
                self.error(
                    path,
                    f"invalid regular expression {show(expected)}: {exc.msg}{where}",
                    "patterns use Python re syntax; escape a backslash as \\\\ in JSON",
                )
                return False
            return True
        else:
            return True
        return False

    def limit(self, value: Any, path: str) -> Limit | None:
        body = self.obj(value, path, LIMIT_KEYS)
        if body is None:
            return None
        missing = [k for k in ("counter", "window", "max") if k not in body]
        for key in missing:
            self.error(
                path, f'missing required key "{key}"', 'e.g. {"counter": "x_rate", "window": "minute", "max": 10}'
            )
        counter = self.string(body["counter"], f"{path}.counter") if "counter" in body else None
        window = self.window(body["window"], f"{path}.window") if "window" in body else None
        most = self.max(body["max"], f"{path}.max") if "max" in body else None
        scope: str | None = Scope.GRANT.value
        if "scope" in body:
            scope = self.choice(body["scope"], f"{path}.scope", SCOPES, "scope")
        if counter is None or window is None or most is None or scope is None:
            return None
        return Limit(counter, window, most, Scope(scope))

    def rate_limit(self, value: Any, path: str, tool: str) -> Limit | None:
        body = self.obj(value, path, RATE_LIMIT_KEYS)
        if body is None:
            return None
        for key in ("max", "window"):
            if key not in body:
                self.error(path, f'missing required key "{key}"', 'e.g. "rate_limit": {"max": 10, "window": 60}')
        window = self.window(body["window"], f"{path}.window") if "window" in body else None
        most = self.max(body["max"], f"{path}.max") if "max" in body else None
        if window is None or most is None:
            return None
        return Limit(f"{tool}_rate", window, most, Scope.GRANT)

    def window(self, value: Any, path: str) -> float | None:
        seconds = parse_window(value)
        if seconds is None:
            self.error(path, f"invalid window {show(value)}", WINDOW_HINT)
        return seconds

    def max(self, value: Any, path: str) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.error(path, f"max must be a positive whole number, got {show(value)}", "e.g. 10")
            return None
        return value

    def approval(self, value: Any, path: str) -> ApprovalSpec | None:
        body = self.obj(value, path, APPROVAL_KEYS)
        if body is None:
            return None
        ok = True
        approvers: tuple[str, ...] | None = ()
        if "approvers" in body:
            approvers = self.strings(body["approvers"], f"{path}.approvers")
            for i, name in enumerate(approvers or ()):
                if name.startswith("group:") and not name[len("group:") :]:
                    self.error(f"{path}.approvers[{i}]", '"group:" needs a group name', 'e.g. "group:dba"')
                    ok = False
        quorum: int | None = 1
        if "quorum" in body:
            raw = body["quorum"]
            if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
                self.error(f"{path}.quorum", f"quorum must be a whole number of at least 1, got {show(raw)}")
                quorum = None
            else:
                quorum = raw
                named = approvers or ()
                if named and not any(a.startswith("group:") for a in named) and raw > len(named):
                    self.error(
                        f"{path}.quorum",
                        f"quorum {raw} is more than the {len(named)} named approvers, so no call could be approved",
                        f"lower the quorum to at most {len(named)}, or add approvers",
                    )
                    quorum = None
        timeout: float | None = 900.0
        if "timeout" in body:
            timeout = parse_duration(body["timeout"])
            if timeout is None:
                self.error(f"{path}.timeout", f"invalid timeout {show(body['timeout'])}", TIMEOUT_HINT)
        channel = self.string(body["channel"], f"{path}.channel") if "channel" in body else None
        self_ok: bool | None = False
        if "allow_self_approval" in body:
            self_ok = self.boolean(body["allow_self_approval"], f"{path}.allow_self_approval")
        if not ok or approvers is None or quorum is None or timeout is None or self_ok is None:
            return None
        if "channel" in body and channel is None:
            return None
        return ApprovalSpec(approvers, quorum, timeout, channel, self_ok)


def _parse(text: str | bytes, checker: _Checker) -> tuple[Any, str] | None:
    doc, fault = read_json(text, "the policy", strict=True)
    if fault is not None:
        checker.faults.append(fault)
        return None
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return doc, hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _load(text: str | bytes, source: str) -> tuple[Policy | None, list[Fault]]:
    checker = _Checker()
    parsed = _parse(text, checker)
    if parsed is None:
        return None, checker.faults
    doc, digest = parsed
    policy = checker.document(doc, source, digest)
    return policy, checker.faults


def check_policy(text: str | bytes, *, source: str = "<policy>") -> list[Fault]:
    """Return every fault in a policy document, errors and warnings, without raising.

    Args:
        text: The policy JSON.
        source: Where it came from, for messages.

    Returns:
        Faults in document order; empty when the policy is clean.
    """
    try:
        return _load(text, source)[1]
    except RecursionError:
        return [Fault("$", "the policy is nested too deeply to read")]


def load_policy(text: str | bytes, *, source: str = "<policy>") -> Policy:
    """Parse, validate and compile a policy document.

    Args:
        text: The policy JSON.
        source: Where it came from (a file name), kept on the Policy and used in messages.

    Returns:
        The compiled policy. Warnings do not stop it; read them with `check_policy`.

    Raises:
        PolicyInvalid: The document has at least one error; `.faults` lists every fault.
    """
    try:
        policy, faults = _load(text, source)
    except RecursionError:
        policy, faults = None, [Fault("$", "the policy is nested too deeply to read")]
    if policy is None:
        raise PolicyInvalid(source, faults)
    return policy
