import json

from policies import Allow, Deny, Hidden, NeedsApproval, RateLimited, RateLimiter, check_policy, evaluate, load_policy
from policies.risk import Category, Hints, ToolInfo
from policies.suggest import EXECUTE_LIMIT, WRITE_LIMIT, Treatment, literal_key, report_lines, suggest_policy
from tests.policies.helpers import T0, call
from tests.policies.test_risk import SEEDS

TOOLS = [
    ToolInfo("list_items", "List items.", Hints(read_only=True)),
    ToolInfo("create_item", "Create an item."),
    ToolInfo("run_job", "Run a job now."),
    ToolInfo("delete_item", "Delete an item for good."),
]


def errors(text: str) -> list[str]:
    return [f"{f.path}: {f.message}" for f in check_policy(text) if f.severity == "error"]


def test_the_suggested_policy_loads_and_treats_each_category_as_documented() -> None:
    suggested = suggest_policy(TOOLS)
    policy = load_policy(suggested.text)
    limiter = RateLimiter()

    assert errors(suggested.text) == []
    assert evaluate(policy, call("list_items"), limiter, T0) == Allow('tools["list_items"]')
    assert evaluate(policy, call("create_item"), limiter, T0) == Allow('tools["create_item"]')
    assert evaluate(policy, call("run_job"), limiter, T0) == Allow('tools["run_job"]')
    assert isinstance(evaluate(policy, call("delete_item"), limiter, T0), NeedsApproval)
    assert isinstance(evaluate(policy, call("not_listed"), limiter, T0), Deny)


def test_writes_get_30_calls_a_minute_and_executes_10() -> None:
    policy = load_policy(suggest_policy(TOOLS).text)
    limiter = RateLimiter()
    writes = [evaluate(policy, call("create_item"), limiter, T0) for _ in range(WRITE_LIMIT + 1)]
    runs = [evaluate(policy, call("run_job"), limiter, T0) for _ in range(EXECUTE_LIMIT + 1)]

    assert all(isinstance(d, Allow) for d in writes[:-1]) and isinstance(writes[-1], RateLimited)
    assert all(isinstance(d, Allow) for d in runs[:-1]) and isinstance(runs[-1], RateLimited)
    assert evaluate(policy, call("run_job"), limiter, T0 + 60) == Allow('tools["run_job"]')


def test_every_rule_carries_its_classification_as_a_one_line_reason() -> None:
    tools = suggest_policy(TOOLS).document()["tools"]
    assert tools["list_items"]["reason"].startswith("read tool, low risk: ")
    assert tools["delete_item"]["reason"].startswith('destructive tool, critical risk: name says "delete"')
    assert all("\n" not in rule["reason"] for rule in tools.values())


def test_hide_destructive_hides_them_instead_and_the_policy_has_no_faults_at_all() -> None:
    suggested = suggest_policy(TOOLS, hide_destructive=True)
    doc = suggested.document()
    policy = load_policy(suggested.text)

    assert doc["hide"] == ["delete_item"]
    assert "delete_item" not in doc["tools"]
    assert evaluate(policy, call("delete_item"), RateLimiter(), T0) == Hidden('hide["delete_item"]')
    assert check_policy(suggested.text) == []


def test_approvers_are_written_into_the_destructive_rules() -> None:
    suggested = suggest_policy(TOOLS, approvers=["alice", "group:dba"])
    rule = suggested.document()["tools"]["delete_item"]
    assert rule["approval"] == {"approvers": ["alice", "group:dba"]}
    assert check_policy(suggested.text) == []


def test_the_five_seeds_get_the_catalogues_treatment() -> None:
    suggested = suggest_policy(ToolInfo(name, text) for name, text in SEEDS.items())
    tools = suggested.document()["tools"]

    assert tools["destroy_connection"]["action"] == "require_approval"
    assert tools["session_destroy"]["action"] == "require_approval"
    assert tools["PostgreSQL_kill_connection"]["limits"] == [
        {"counter": "PostgreSQL_kill_connection_rate", "window": "minute", "max": 10, "scope": "grant"}
    ]
    assert tools["ip_control_drop_connections"]["limits"][0]["max"] == 10
    assert tools["terminate_user_connections"]["limits"] == [
        {"counter": "terminate_user_connections_rate", "window": "minute", "max": 30, "scope": "grant"}
    ]


def test_the_text_is_stable_whatever_order_the_server_lists_its_tools_in() -> None:
    forward = suggest_policy(TOOLS).text
    backward = suggest_policy(list(reversed(TOOLS))).text
    assert forward == backward
    assert list(json.loads(forward)) == ["version", "default", "default_reason", "tools"]
    assert list(json.loads(forward)["tools"]) == ["list_items", "create_item", "run_job", "delete_item"]
    assert list(json.loads(forward)["tools"]["create_item"]) == ["reason", "limits"]


def test_names_with_glob_characters_become_keys_that_match_only_themselves() -> None:
    suggested = suggest_policy([ToolInfo("get*", "Get anything."), ToolInfo("run[x]?", "Run x.")])
    policy = load_policy(suggested.text)
    limiter = RateLimiter()

    assert literal_key("a*b?[c]") == "a[*]b[?][[]c]"
    assert errors(suggested.text) == []
    assert evaluate(policy, call("get*"), limiter, T0) == Allow('tools["get[*]"]')
    assert evaluate(policy, call("get_secrets"), limiter, T0).rule == "default"
    assert evaluate(policy, call("run[x]?"), limiter, T0) == Allow('tools["run[[]x][?]"]')


def test_nameless_and_repeated_tools_are_skipped_and_reported() -> None:
    suggested = suggest_policy([ToolInfo(""), ToolInfo("list_a"), ToolInfo("list_a", "again")])
    lines = report_lines(suggested)

    assert [s.classification.tool for s in suggested.suggestions] == ["list_a"]
    assert [name for name, _ in suggested.skipped] == ["", "list_a"]
    assert 'skipped "list_a": the server lists this name more than once; the first is used' in lines


def test_the_report_has_a_line_per_tool_and_a_count_per_category() -> None:
    suggested = suggest_policy(TOOLS, hide_destructive=True)
    lines = report_lines(suggested)

    assert lines[0].split() == ["tool", "category", "risk", "suggested", "reason"]
    assert lines[1].split()[:5] == ["list_items", "read", "low", "allow", "name"]
    assert "allow, 30/minute" in lines[2]
    assert "allow, 10/minute" in lines[3]
    assert lines[4].split()[:4] == ["delete_item", "destructive", "critical", "hide"]
    assert lines[-1] == "4 tools: 1 read, 1 write, 1 execute, 1 destructive"
    assert [s.treatment for s in suggested.suggestions][-1] is Treatment.HIDE


def test_no_tools_give_a_policy_that_denies_everything() -> None:
    suggested = suggest_policy([])
    assert errors(suggested.text) == []
    assert suggested.document()["tools"] == {}
    assert report_lines(suggested)[-1] == "0 tools: 0 read, 0 write, 0 execute, 0 destructive"
    assert {s.classification.category for s in suggest_policy(TOOLS).suggestions} == set(Category)
