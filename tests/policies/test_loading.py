import hashlib
import json
import sys
from typing import Any

import pytest

from policies import (
    Action,
    ApprovalSpec,
    Condition,
    Fault,
    Limit,
    LimitsUnavailable,
    PolicyError,
    PolicyInvalid,
    Scope,
    check_policy,
    format_fault,
    load_policy,
    parse_duration,
)


def faults(doc: Any) -> list[Fault]:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    return check_policy(text)


def errors(doc: Any) -> list[tuple[str, str]]:
    return [(f.path, f.message) for f in faults(doc) if f.severity == "error"]


def only_error(doc: Any) -> Fault:
    found = [f for f in faults(doc) if f.severity == "error"]
    assert len(found) == 1, found
    return found[0]


def warnings(doc: Any) -> list[tuple[str, str]]:
    return [(f.path, f.message) for f in faults(doc) if f.severity == "warning"]


def tool(entry: dict[str, Any], name: str = "t") -> dict[str, Any]:
    return {"version": "1", "default": "deny", "tools": {name: entry}}


# -- what loads -------------------------------------------------------------------------------------------------------


def test_full_document_from_the_architecture_loads_into_the_model() -> None:
    p = load_policy(
        json.dumps(
            {
                "version": "1",
                "default": "deny",
                "hide": ["destroy_connection", "debug_*"],
                "all_tools": {"limits": [{"counter": "all", "window": "minute", "max": 120, "scope": "grant"}]},
                "tools": {
                    "execute_sql": {
                        "approve_if": [{"arg": "sql", "op": "regex", "value": "(?i)\\b(drop|delete|truncate)\\b"}]
                    },
                    "PostgreSQL_kill_connection": {
                        "action": "require_approval",
                        "reason": "Kills a live database session and aborts its transaction",
                        "approval": {
                            "approvers": ["alice", "group:dba"],
                            "quorum": 1,
                            "timeout": "15m",
                            "channel": "#db-approvals",
                        },
                        "deny_if": [{"arg": "pid", "op": "lt", "value": 100}],
                    },
                    "delete_*": {"action": "deny", "reason": "Deletes are done by hand"},
                },
            }
        ),
        source="pg.json",
    )
    assert p.default is Action.DENY
    assert p.hide == ("destroy_connection", "debug_*")
    assert p.all_tools_limits == (Limit("all", 60.0, 120, Scope.GRANT),)
    assert p.source == "pg.json"
    kill = p.rules[1]
    assert kill.pattern == "PostgreSQL_kill_connection"
    assert kill.action is Action.REQUIRE_APPROVAL
    assert kill.deny_if == (Condition("pid", "lt", 100),)
    assert kill.approval == ApprovalSpec(("alice", "group:dba"), 1, 900.0, "#db-approvals", False)
    assert p.rules[2].action is Action.DENY


def test_digest_is_sha256_prefix_of_canonical_json_and_ignores_formatting() -> None:
    canonical = '{"default":"deny","version":"1"}'
    pretty = '{\n  "version": "1",\n  "default": "deny"\n}\n'
    assert load_policy(pretty).digest == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert load_policy(canonical).digest == load_policy(pretty).digest
    assert load_policy('{"version":"1","default":"allow"}').digest != load_policy(canonical).digest


def test_bytes_are_accepted() -> None:
    assert load_policy(b'{"version": "1", "default": "allow"}').default is Action.ALLOW


def test_timeouts_accept_units_and_seconds() -> None:
    assert parse_duration("30s") == 30
    assert parse_duration("15m") == 900
    assert parse_duration("1h") == 3600
    assert parse_duration("2d") == 172800
    assert parse_duration("1h30m") == 5400
    assert parse_duration(45) == 45
    assert parse_duration(0) is None
    assert parse_duration("soon") is None
    assert parse_duration(True) is None


def test_windows_accept_words_numbers_and_durations() -> None:
    for window, seconds in [("second", 1), ("minute", 60), ("hour", 3600), ("day", 86400), (90, 90), ("5m", 300)]:
        p = load_policy(json.dumps(tool({"limits": [{"counter": "c", "window": window, "max": 1}]})))
        assert p.rules[0].limits[0].window_seconds == seconds


def test_limits_unavailable_is_signoffs_own_key_and_a_document_without_it_leaves_the_gateway_to_decide() -> None:
    assert load_policy(json.dumps(tool({}))).limits_unavailable is None
    p = load_policy(json.dumps({**tool({}), "limits_unavailable": "allow"}))
    assert p.limits_unavailable is LimitsUnavailable.ALLOW
    fault = only_error({**tool({}), "limits_unavailable": "alow"})
    assert (fault.path, fault.message) == ("$.limits_unavailable", 'invalid limits_unavailable choice "alow"')
    assert fault.hint is not None and '"allow"' in fault.hint
    assert errors({**tool({}), "limits_unavailable": False})[0][0] == "$.limits_unavailable"


def test_scope_defaults_to_grant() -> None:
    p = load_policy(json.dumps(tool({"limits": [{"counter": "c", "window": "minute", "max": 1}]})))
    assert p.rules[0].limits[0].scope is Scope.GRANT


def test_load_policy_raises_policy_invalid_listing_every_error() -> None:
    with pytest.raises(PolicyInvalid) as caught:
        load_policy('{"version": "2", "default": "maybe"}', source="bad.json")
    err = caught.value
    assert isinstance(err, PolicyError)
    assert isinstance(err, ValueError)
    assert [f.path for f in err.faults] == ["$.version", "$.default"]
    assert "bad.json: $.version: error:" in str(err)
    assert "bad.json: $.default: error:" in str(err)


def test_format_fault_renders_source_path_severity_message_and_hint() -> None:
    fault = Fault('$.tools["x"].op', 'invalid op "lte"', 'did you mean "le"?', "error")
    assert (
        format_fault(fault, "p.json") == 'p.json: $.tools["x"].op: error: invalid op "lte" (hint: did you mean "le"?)'
    )
    assert format_fault(Fault("$", "m", None, "warning"), "p.json") == "p.json: $: warning: m"


# -- faults -----------------------------------------------------------------------------------------------------------


def test_invalid_json_reports_line_and_column() -> None:
    fault = only_error('{\n  "version": "1",\n  "default": "deny",\n}')
    assert fault.path == "$"
    assert fault.message.startswith("invalid JSON at line 4, column 1:")


def test_nan_is_not_json() -> None:
    assert only_error('{"version": "1", "default": "deny", "x": NaN}').message == "invalid JSON: NaN is not valid JSON"


def test_non_utf8_bytes_are_a_fault() -> None:
    assert check_policy(b"\xff\xfe{}")[0].message.startswith("the policy is not UTF-8 text")


def test_a_document_nested_too_deeply_is_a_fault_at_any_depth_never_a_crash() -> None:
    # Just under the parser's limit, reading succeeds and the digest or a message can still run out of stack;
    # far beyond it, reading itself fails. Either way the answer is this fault, not a RecursionError.
    prefix = '{"version": "1", "default": "deny", "tools": {"t": {"deny_if": [{"arg": "a", "op": "lt", "value": '
    limit = sys.getrecursionlimit()
    for depth in [*range(limit - 100, limit + 10), 100_000]:
        text = prefix + "[" * depth + "]" * depth + "}]}}}"
        at_root = [f.message for f in check_policy(text) if f.path == "$"]
        assert at_root in ([], ["the policy is nested too deeply to read"]), depth
        with pytest.raises(PolicyInvalid):
            load_policy(text)


def test_document_must_be_an_object() -> None:
    assert errors("[1, 2]") == [("$", "the policy must be a JSON object, got array")]


def test_missing_version_and_default_are_errors() -> None:
    assert errors({}) == [("$", 'missing required key "version"'), ("$", 'missing required key "default"')]


def test_version_other_than_string_one_is_an_error_with_hint_for_the_number() -> None:
    fault = only_error({"version": 1, "default": "deny"})
    assert (fault.path, fault.message, fault.hint) == (
        "$.version",
        'unsupported version 1; only "1" is recognised',
        'write it as the string "1"',
    )
    assert errors({"version": "2", "default": "deny"}) == [
        ("$.version", 'unsupported version "2"; only "1" is recognised')
    ]


def test_bad_default_suggests_the_closest_action() -> None:
    fault = only_error({"version": "1", "default": "denied"})
    assert (fault.path, fault.message) == ("$.default", 'invalid default "denied"')
    assert fault.hint == 'did you mean "deny"? valid defaults: "allow", "deny", "require_approval"'


def test_bad_action_is_an_error() -> None:
    fault = only_error(tool({"action": "block"}))
    assert (fault.path, fault.message) == ('$.tools["t"].action', 'invalid action "block"')


def test_unknown_top_level_key_suggests_the_closest_key_and_lists_valid_keys() -> None:
    fault = only_error({"version": "1", "default": "deny", "tool": {}})
    assert (fault.path, fault.message) == ("$.tool", 'unknown key "tool"')
    assert fault.hint is not None
    assert fault.hint.startswith('did you mean "tools"? valid keys: "version", "default"')


def test_unknown_keys_are_found_at_every_depth() -> None:
    doc = tool(
        {
            "lmits": [],
            "deny_if": [{"arg": "a", "op": "eq", "value": 1, "vaule": 2}],
            "limits": [{"counter": "c", "window": "minute", "max": 1, "scop": "grant"}],
            "approval": {"approvers": ["a"], "quorom": 1},
        }
    )
    doc["all_tools"] = {"limit": []}
    assert sorted(path for path, _ in errors(doc)) == sorted(
        [
            "$.all_tools.limit",
            '$.tools["t"].lmits',
            '$.tools["t"].deny_if[0].vaule',
            '$.tools["t"].limits[0].scop',
            '$.tools["t"].approval.quorom',
        ]
    )
    hints = {f.path: f.hint for f in faults(doc)}
    assert hints['$.tools["t"].approval.quorom'] is not None
    assert hints['$.tools["t"].approval.quorom'].startswith('did you mean "quorum"?')


def test_unknown_key_far_from_any_valid_key_lists_valid_keys_only() -> None:
    fault = only_error(tool({"zzz": 1}))
    assert fault.hint is not None
    assert fault.hint.startswith('valid keys: "action", "reason"')


def test_duplicate_keys_are_an_error() -> None:
    assert errors('{"version": "1", "default": "deny", "default": "allow"}') == [
        ("$.default", 'key "default" appears more than once')
    ]


@pytest.mark.parametrize(
    ("doc", "path", "message"),
    [
        ({"version": "1", "default": "deny", "hide": "x"}, "$.hide", 'expected an array, got string "x"'),
        ({"version": "1", "default": "deny", "hide": [3]}, "$.hide[0]", "expected a string, got number 3"),
        ({"version": "1", "default": "deny", "tools": []}, "$.tools", "expected an object, got array []"),
        (
            {"version": "1", "default": 1},
            "$.default",
            'expected one of "allow", "deny", "require_approval", got number 1',
        ),
        (tool([]), '$.tools["t"]', "expected an object, got array []"),  # type: ignore[arg-type]
        (tool({"reason": 5}), '$.tools["t"].reason', "expected a string, got number 5"),
        (tool({"require": {}}), '$.tools["t"].require', "expected an array, got object {}"),
        (tool({"deny_if": ["pid"]}), '$.tools["t"].deny_if[0]', 'expected an object, got string "pid"'),
        (tool({"redact": [1]}), '$.tools["t"].redact[0]', "expected a string, got number 1"),
        (
            tool({"approval": {"approvers": ["a"], "allow_self_approval": "yes"}}),
            '$.tools["t"].approval.allow_self_approval',
            'expected true or false, got string "yes"',
        ),
        (
            tool({"deny_if": [{"arg": 1, "op": "eq", "value": 1}]}),
            '$.tools["t"].deny_if[0].arg',
            "expected a string, got number 1",
        ),
        (
            tool({"deny_if": [{"arg": "a", "op": "in", "value": 1}]}),
            '$.tools["t"].deny_if[0].value',
            "expected an array for op in, got number 1",
        ),
        (
            tool({"deny_if": [{"arg": "a", "op": "lt", "value": None}]}),
            '$.tools["t"].deny_if[0].value',
            "expected a number or a string for op lt, got null null",
        ),
        (
            tool({"require": [{"arg": "a", "op": "exists", "value": "yes"}]}),
            '$.tools["t"].require[0].value',
            'expected true or false for op exists, got string "yes"',
        ),
        (
            tool({"require": [{"arg": "a", "op": "starts_with", "value": 1}]}),
            '$.tools["t"].require[0].value',
            "expected a string for op starts_with, got number 1",
        ),
        (
            tool({"require": [{"arg": "a..b", "op": "exists"}]}),
            '$.tools["t"].require[0].arg',
            'invalid argument path "a..b": empty segment',
        ),
        (tool({"require": [{"op": "exists"}]}), '$.tools["t"].require[0]', 'missing required key "arg"'),
        (
            tool({"require": [{"arg": "a", "op": "eq"}]}),
            '$.tools["t"].require[0]',
            'missing required key "value" for op "eq"',
        ),
    ],
)
def test_wrong_types_are_reported_at_their_path(doc: Any, path: str, message: str) -> None:
    assert (path, message) in errors(doc)


def test_bad_op_lists_the_valid_ops() -> None:
    fault = only_error(tool({"approve_if": [{"arg": "sql", "op": "like", "value": "x"}]}, name="execute_sql"))
    assert fault.path == '$.tools["execute_sql"].approve_if[0].op'
    assert fault.message == 'invalid op "like"'
    assert fault.hint is not None
    assert '"eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "regex", "not_regex"' in fault.hint


def test_bad_op_close_to_a_valid_one_is_suggested() -> None:
    fault = only_error(tool({"deny_if": [{"arg": "a", "op": "lte", "value": 1}]}))
    assert fault.hint is not None
    assert fault.hint.startswith('did you mean "le"?')
    fault = only_error(tool({"deny_if": [{"arg": "a", "op": "reqex", "value": "x"}]}))
    assert fault.hint is not None
    assert fault.hint.startswith('did you mean "regex"?')


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("delete_[abc", 'invalid glob "delete_[abc": unbalanced [ at position 7'),
        ("x[z-a]", 'invalid glob "x[z-a]": reversed range z-a in the [...] at position 1'),
    ],
)
def test_bad_glob_in_tools_and_hide_is_an_error(pattern: str, message: str) -> None:
    assert errors(tool({}, name=pattern)) == [(f"$.tools[{json.dumps(pattern)}]", message)]
    assert errors({"version": "1", "default": "deny", "hide": [pattern]}) == [("$.hide[0]", message)]


def test_empty_tool_name_and_empty_hide_entry_are_errors() -> None:
    assert errors(tool({}, name="")) == [('$.tools[""]', "the tool name is empty")]
    assert errors({"version": "1", "default": "deny", "hide": [""]}) == [("$.hide[0]", "must not be empty")]


def test_bad_regex_reports_the_compile_error() -> None:
    fault = only_error(tool({"approve_if": [{"arg": "sql", "op": "regex", "value": "(drop"}]}))
    assert fault.path == '$.tools["t"].approve_if[0].value'
    assert fault.message == 'invalid regular expression "(drop": missing ), unterminated subpattern at position 0'


@pytest.mark.parametrize("window", ["fortnight", 0, -5, True, "60", None])
def test_bad_window_is_an_error_with_the_accepted_forms(window: Any) -> None:
    fault = only_error(tool({"limits": [{"counter": "c", "window": window, "max": 1}]}))
    assert fault.path == '$.tools["t"].limits[0].window'
    assert fault.message.startswith("invalid window")
    assert fault.hint == 'use "second", "minute", "hour", "day", or a positive number of seconds'


@pytest.mark.parametrize("max_calls", [0, -1, 1.5, "10", True])
def test_max_must_be_a_positive_whole_number(max_calls: Any) -> None:
    fault = only_error(tool({"limits": [{"counter": "c", "window": "minute", "max": max_calls}]}))
    assert fault.path == '$.tools["t"].limits[0].max'
    assert fault.message.startswith("max must be a positive whole number")


def test_bad_scope_suggests_a_valid_scope() -> None:
    fault = only_error(tool({"limits": [{"counter": "c", "window": "minute", "max": 1, "scope": "agents"}]}))
    assert (fault.path, fault.message) == ('$.tools["t"].limits[0].scope', 'invalid scope "agents"')
    assert fault.hint == 'did you mean "agent"? valid scopes: "grant", "agent", "global"'


def test_limit_missing_counter_is_an_error() -> None:
    assert errors(tool({"limits": [{"window": "minute", "max": 1}]})) == [
        ('$.tools["t"].limits[0]', 'missing required key "counter"')
    ]


def test_quorum_below_one_is_an_error() -> None:
    fault = only_error(tool({"action": "require_approval", "approval": {"approvers": ["a"], "quorum": 0}}))
    assert fault.path == '$.tools["t"].approval.quorum'


def test_quorum_above_the_named_approvers_is_an_error() -> None:
    fault = only_error(tool({"action": "require_approval", "approval": {"approvers": ["alice", "bob"], "quorum": 3}}))
    assert fault.path == '$.tools["t"].approval.quorum'
    assert fault.message == "quorum 3 is more than the 2 named approvers, so no call could be approved"


def test_quorum_above_approvers_is_fine_when_a_group_is_named() -> None:
    doc = tool({"action": "require_approval", "approval": {"approvers": ["alice", "group:dba"], "quorum": 3}})
    assert errors(doc) == []


def test_empty_group_name_is_an_error() -> None:
    assert errors(tool({"action": "require_approval", "approval": {"approvers": ["group:"]}})) == [
        ('$.tools["t"].approval.approvers[0]', '"group:" needs a group name')
    ]


@pytest.mark.parametrize("timeout", ["15 minutes", 0, "-1h", False, "m"])
def test_bad_timeout_is_an_error_with_the_accepted_forms(timeout: Any) -> None:
    fault = only_error(tool({"action": "require_approval", "approval": {"approvers": ["a"], "timeout": timeout}}))
    assert fault.path == '$.tools["t"].approval.timeout'
    assert fault.hint == 'use a duration such as "30s", "15m", "1h" or "2d", or a positive number of seconds'


@pytest.mark.parametrize(
    ("timeout", "seconds"), [("30s", 30.0), ("15m", 900.0), ("1h", 3600.0), ("2d", 172800.0), (90, 90.0)]
)
def test_good_timeouts_load(timeout: Any, seconds: float) -> None:
    p = load_policy(
        json.dumps(tool({"action": "require_approval", "approval": {"approvers": ["a"], "timeout": timeout}}))
    )
    assert p.rules[0].approval is not None
    assert p.rules[0].approval.timeout_seconds == seconds


def test_every_fault_is_collected_not_just_the_first() -> None:
    doc = {
        "version": "2",
        "default": "nope",
        "hide": ["a["],
        "tools": {
            "x": {"action": "maybe", "deny_if": [{"arg": "a", "op": "like", "value": 1}]},
            "y": {"limits": [{"counter": "c", "window": "week", "max": 0, "scope": "world"}]},
        },
    }
    assert [path for path, _ in errors(doc)] == [
        "$.version",
        "$.default",
        "$.hide[0]",
        '$.tools["x"].action',
        '$.tools["x"].deny_if[0].op',
        '$.tools["y"].limits[0].window',
        '$.tools["y"].limits[0].max',
        '$.tools["y"].limits[0].scope',
    ]


# -- warnings ---------------------------------------------------------------------------------------------------------


def test_require_approval_without_approvers_is_a_warning_not_an_error() -> None:
    doc = tool({"action": "require_approval"})
    assert errors(doc) == []
    assert warnings(doc) == [
        (
            '$.tools["t"].action',
            "the rule requires approval but names no approvers, so anyone listed as an approver in the "
            "configuration may decide",
        )
    ]
    load_policy(json.dumps(doc))


def test_approve_if_without_approvers_is_a_warning() -> None:
    doc = tool({"approve_if": [{"arg": "a", "op": "eq", "value": 1}]})
    assert [path for path, _ in warnings(doc)] == ['$.tools["t"].approve_if']


def test_approvers_named_means_no_approver_warning() -> None:
    doc = tool({"action": "require_approval", "approval": {"approvers": ["alice"]}})
    assert faults(doc) == []


def test_default_deny_with_no_allowing_rule_warns_that_nothing_is_allowed() -> None:
    message = "default is deny and no rule allows any tool: this policy allows nothing"
    assert warnings({"version": "1", "default": "deny"}) == [("$", message)]
    assert warnings(tool({"action": "deny"})) == [("$", message)]
    assert warnings(tool({})) == []
    assert warnings({"version": "1", "default": "allow"}) == []


def test_tool_entry_shadowed_by_hide_is_a_warning() -> None:
    doc = {"version": "1", "default": "allow", "hide": ["debug_*"], "tools": {"debug_dump": {}}}
    assert warnings(doc) == [
        ('$.tools["debug_dump"]', '"debug_dump" is hidden by hide entry "debug_*", so this entry never applies')
    ]


def test_conditions_on_a_denying_rule_are_a_warning() -> None:
    doc = {"version": "1", "default": "allow", "tools": {"t": {"action": "deny", "limits": []}}}
    assert warnings(doc) == [('$.tools["t"].action', "the rule denies every call, so its limits never apply")]


def test_unused_approval_block_is_a_warning() -> None:
    doc = tool({"approval": {"approvers": ["a"]}})
    assert (
        '$.tools["t"].approval',
        "the approval block is never used: the rule neither requires approval nor has approve_if",
    ) in warnings(doc)


# -- PolicyLayer compatibility ----------------------------------------------------------------------------------------


def test_policylayer_rate_limit_alias_loads_as_a_grant_limit() -> None:
    p = load_policy(json.dumps(tool({"rate_limit": {"max": 10, "window": 60}}, name="destroy_connection")))
    assert p.rules[0].rate_limit == Limit("destroy_connection_rate", 60.0, 10, Scope.GRANT)
    assert p.rules[0].located_limits == (('tools["destroy_connection"].rate_limit', p.rules[0].rate_limit),)


def test_policylayer_rate_limit_faults_have_paths() -> None:
    assert errors(tool({"rate_limit": {"max": 0, "window": 60, "per": "x"}})) == [
        ('$.tools["t"].rate_limit.per', 'unknown key "per"'),
        ('$.tools["t"].rate_limit.max', "max must be a positive whole number, got 0"),
    ]


def test_policylayer_listing_a_tool_with_empty_object_allows_it_under_default_deny() -> None:
    p = load_policy('{"version": "1", "default": "deny", "tools": {"list_customers": {}}}')
    assert p.rules[0].action is None
    assert p.default is Action.DENY


CONFIGURED = frozenset({"alice", "bob", "group:dba"})


def test_approvers_no_configured_entry_provides_are_errors_with_a_hint_and_the_configured_names() -> None:
    doc = {
        "version": "1",
        "default": "deny",
        "tools": {
            "kill": {"action": "require_approval", "approval": {"approvers": ["alice", "group:dbaa", "bbo"]}},
            "drop": {"action": "require_approval", "approval": {"approvers": ["carol"]}},
        },
    }
    found = [
        format_fault(f, "policies/pg.json")
        for f in check_policy(json.dumps(doc), approvers=CONFIGURED)
        if f.severity == "error"
    ]

    assert found == [
        'policies/pg.json: $.tools["kill"].approval.approvers[1]: error: "group:dbaa" names no configured approver or'
        ' group (hint: did you mean "group:dba"? configured: alice, bob, group:dba)',
        'policies/pg.json: $.tools["kill"].approval.approvers[2]: error: "bbo" names no configured approver or group'
        ' (hint: did you mean "bob"? configured: alice, bob, group:dba)',
        'policies/pg.json: $.tools["drop"].approval.approvers[0]: error: "carol" names no configured approver or group'
        " (hint: configured: alice, bob, group:dba)",
    ]
    with pytest.raises(PolicyInvalid):
        load_policy(json.dumps(doc), approvers=CONFIGURED)


def test_approver_names_are_checked_only_against_a_configuration() -> None:
    doc = tool({"action": "require_approval", "approval": {"approvers": ["carol", "group:ops"]}})

    assert errors(doc) == []
    assert load_policy(json.dumps(doc), approvers={"carol", "group:ops"}).rules[0].approval == ApprovalSpec(
        ("carol", "group:ops")
    )
    assert [f.hint for f in check_policy(json.dumps(doc), approvers=frozenset())] == [
        "configured: none",
        "configured: none",
    ]


def test_use_within_is_a_duration_and_defaults_to_the_timeout_capped_at_ten_minutes() -> None:
    def spec(**approval: object) -> ApprovalSpec:
        document = {"version": "1", "default": "require_approval", "tools": {"t": {"approval": approval}}}
        rule = load_policy(json.dumps(document)).rules[0]
        assert rule.approval is not None
        return rule.approval

    assert spec(timeout="2m").use_within == 120
    assert spec(timeout="1h").use_within == 600
    assert spec(timeout="1h", use_within="30m").use_within == 1800
    bad = {"version": "1", "default": "deny", "tools": {"t": {"approval": {"use_within": "soon"}}}}
    assert [path for path, _ in errors(bad)] == ['$.tools["t"].approval.use_within']
