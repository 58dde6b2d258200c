"""`signoff policy suggest|test|explain` as a user runs them, against real upstreams.

Suggest connects to the demo server and to `mcp-server-time` from PyPI over stdio, and to a Streamable HTTP
server that refuses requests without the configured Authorization header.
"""

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from integrations.cli import main
from integrations.errors import UpstreamUnavailable
from integrations.policy_tools import cases_path, list_tools
from integrations.settings import ServerSettings
from policies import Allow, NeedsApproval, RateLimiter, ToolCall, check_policy, evaluate, load_policy
from tests.fakes.upstreams import everything_http_app, serve_http

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "policies" / "catalog"
DEMO = [sys.executable, "-m", "integrations.demo"]
TIME_SERVER = [sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"]
TOKEN = "upstream-secret-token"


def write_config(tmp_path: Path, *servers: dict[str, Any]) -> Path:
    lines = []
    for server in servers:
        lines.append("[[servers]]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in server.items() if key != "headers"]
        lines.append('policy = "policy.json"')
        if "headers" in server:
            lines.append("[servers.headers]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in server["headers"].items()]
        lines.append("")
    config = tmp_path / "signoff.toml"
    config.write_text("\n".join(lines))
    return config


def report(text: str) -> dict[str, tuple[str, str, str]]:
    """The suggest report as {tool: (category, risk, suggested)}."""
    rows = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 5 and parts[1] in ("read", "write", "execute", "destructive"):
            suggested = " ".join(parts[3:5]) if parts[3] in ("allow,", "require") else parts[3]
            rows[parts[0]] = (parts[1], parts[2], suggested)
    return rows


# -- suggest -----------------------------------------------------------------------------------------------------------


def test_suggest_classifies_the_demo_servers_tools_and_writes_a_policy_that_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, {"name": "demo", "command": DEMO, "cwd": str(ROOT)})
    out = tmp_path / "demo.json"

    code = main(["--config", str(config), "policy", "suggest", "demo", "--out", str(out)])
    printed = capsys.readouterr().out

    assert code == 0
    assert report(printed) == {
        "list_connections": ("read", "low", "allow"),
        "get_connection": ("read", "low", "allow"),
        "terminate_user_connections": ("write", "medium", "allow, 30/minute"),
        "kill_connection": ("execute", "high", "allow, 10/minute"),
        "PostgreSQL_kill_connection": ("execute", "high", "allow, 10/minute"),
        "ip_control_drop_connections": ("execute", "high", "allow, 10/minute"),
        "execute_sql": ("execute", "high", "allow, 10/minute"),
        "destroy_connection": ("destructive", "critical", "require approval"),
        "session_destroy": ("destructive", "critical", "require approval"),
    }
    assert "9 tools: 2 read, 1 write, 4 execute, 2 destructive" in printed
    assert f"wrote {out}" in printed
    assert [f for f in check_policy(out.read_text()) if f.severity == "error"] == []
    assert main(["policy", "check", str(out)]) == 0

    policy = load_policy(out.read_text())
    limiter = RateLimiter()
    destroy = evaluate(policy, ToolCall("demo", "destroy_connection", {}, "a"), limiter, 0)
    assert isinstance(destroy, NeedsApproval)
    assert destroy.reason.startswith('destructive tool, critical risk: name says "destroy"')


def test_suggest_against_mcp_server_time_from_pypi_prints_the_policy_and_reports_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, {"name": "time", "command": TIME_SERVER})

    code = main(["--config", str(config), "policy", "suggest", "time"])
    captured = capsys.readouterr()

    assert code == 0
    assert report(captured.err) == {
        "convert_time": ("read", "low", "allow"),
        "get_current_time": ("read", "low", "allow"),
    }
    policy = load_policy(captured.out)
    assert evaluate(policy, ToolCall("time", "get_current_time", {}, "a"), RateLimiter(), 0) == Allow(
        'tools["get_current_time"]'
    )
    assert json.loads(captured.out)["default"] == "deny"


def test_suggest_can_hide_destructive_tools_and_name_approvers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, {"name": "demo", "command": DEMO, "cwd": str(ROOT)})
    base = ["--config", str(config), "policy", "suggest", "demo"]

    assert main([*base, "--hide-destructive"]) == 0
    hidden = json.loads(capsys.readouterr().out)
    assert main([*base, "--approver", "alice", "--approver", "group:dba"]) == 0
    approved = json.loads(capsys.readouterr().out)

    assert hidden["hide"] == ["destroy_connection", "session_destroy"]
    assert "destroy_connection" not in hidden["tools"]
    assert approved["tools"]["session_destroy"]["approval"] == {"approvers": ["alice", "group:dba"]}


def guarded(app: ASGIApp, seen: list[str]) -> ASGIApp:
    """The app behind a check of `Authorization: Bearer TOKEN`, recording every Authorization it is sent."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            auth = dict(scope["headers"]).get(b"authorization", b"").decode()
            seen.append(auth)
            if auth != f"Bearer {TOKEN}":
                await PlainTextResponse("unauthorized", status_code=401)(scope, receive, send)
                return
        await app(scope, receive, send)

    return asgi


@pytest.mark.anyio
async def test_suggest_over_streamable_http_sends_the_configured_headers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    monkeypatch.setenv("UPSTREAM_TOKEN", TOKEN)
    async with serve_http(guarded(everything_http_app(), seen)) as base_url:
        url = f"{base_url}/mcp"
        config = write_config(
            tmp_path, {"name": "everything", "url": url, "headers": {"Authorization": "Bearer ${UPSTREAM_TOKEN}"}}
        )
        with anyio.fail_after(30):
            code = await anyio.to_thread.run_sync(main, ["--config", str(config), "policy", "suggest", "everything"])
            sent_by_suggest = list(seen)
            with pytest.raises(UpstreamUnavailable) as refused:
                await list_tools(ServerSettings(name="bare", url=url, policy="p.json"))
    captured = capsys.readouterr()

    assert code == 0
    assert sent_by_suggest and set(sent_by_suggest) == {f"Bearer {TOKEN}"}
    assert "401" in str(refused.value)
    assert report(captured.err) == {
        "echo": ("read", "low", "allow"),  # its readOnlyHint, uncontradicted
        "add": ("write", "medium", "allow, 30/minute"),  # "add" reads as a write; the hint cannot lower it
        "slow_count": ("read", "low", "allow"),
        "counter": ("write", "medium", "allow, 30/minute"),  # "Increment ..."
        "fail": ("execute", "high", "allow, 10/minute"),  # unannotated, nothing places it
        "confirm": ("execute", "high", "allow, 10/minute"),
        "delete_record": ("destructive", "critical", "require approval"),
        "drop_table": ("destructive", "critical", "require approval"),
    }
    assert "readOnlyHint is not trusted" in captured.err


def test_suggest_will_not_overwrite_a_policy_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, {"name": "time", "command": TIME_SERVER})
    out = tmp_path / "mine.json"
    out.write_text('{"version": "1", "default": "deny"}')

    assert main(["--config", str(config), "policy", "suggest", "time", "--out", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_text() == '{"version": "1", "default": "deny"}'
    assert main(["--config", str(config), "policy", "suggest", "time", "--out", str(out), "--force"]) == 0
    assert "get_current_time" in json.loads(out.read_text())["tools"]


def test_suggest_names_an_unknown_or_unreachable_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(
        tmp_path,
        {"name": "missing", "command": [str(tmp_path / "no-such-server")]},
        {"name": "exits", "command": [sys.executable, "-c", "raise SystemExit(3)"]},
    )
    base = ["--config", str(config), "policy", "suggest"]

    assert main([*base, "nope"]) == 2
    assert "no server named 'nope' (configured: missing, exits)" in capsys.readouterr().err
    assert main([*base, "missing"]) == 2
    assert "upstream server 'missing' is unavailable: FileNotFoundError" in capsys.readouterr().err
    assert main([*base, "exits"]) == 2
    assert "upstream server 'exits' is unavailable" in capsys.readouterr().err


# -- test --------------------------------------------------------------------------------------------------------------


DEMO_CASES: list[dict[str, Any]] = [
    {"name": "reads are allowed", "identity": "alice", "tool": "list_connections", "arguments": {}, "expect": "allow"},
    {"name": "system pids are protected", "tool": "kill_connection", "arguments": {"pid": 87}, "expect": "deny"},
    {"name": "destroy is hidden", "tool": "destroy_connection", "expect": "hidden"},
    {
        "name": "11th kill waits",
        "tool": "kill_connection",
        "arguments": {"pid": 4121},
        "expect": "rate_limited",
        "repeat": 11,
    },
    {"name": "unknown denied", "tool": "format_disk", "expect": "deny", "rule": "default"},
]


def write_policy(tmp_path: Path, cases: list[dict[str, Any]] | None = None) -> Path:
    policy = tmp_path / "demo.json"
    policy.write_text((CATALOG / "demo.json").read_text())
    if cases is not None:
        cases_path(policy).write_text(json.dumps(cases))
    return policy


def test_policy_test_runs_the_cases_beside_the_policy_and_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = write_policy(tmp_path, DEMO_CASES)

    assert main(["policy", "test", str(policy)]) == 0
    out = capsys.readouterr().out
    assert cases_path(policy) == tmp_path / "demo.tests.json"
    assert out.splitlines()[:5] == [f"PASS  {case['name']}" for case in DEMO_CASES]
    assert out.splitlines()[-1] == f"5 passed, 0 failed ({tmp_path / 'demo.tests.json'} against {policy})"


def test_policy_test_prints_each_failure_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = write_policy(tmp_path)
    cases = tmp_path / "elsewhere.json"
    cases.write_text(
        json.dumps(
            [
                DEMO_CASES[0],
                {"name": "sql is denied", "tool": "execute_sql", "arguments": {"sql": "select 1"}, "expect": "deny"},
                {**DEMO_CASES[1], "name": "wrong rule", "rule": "default"},
            ]
        )
    )

    assert main(["policy", "test", str(policy), "--cases", str(cases)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "PASS  reads are allowed"
    assert lines[1] == "FAIL  sql is denied: expected deny, got allow"
    assert lines[2] == '      the policy said: allow by tools["execute_sql"]'
    assert lines[3] == 'FAIL  wrong rule: expected rule default, got tools["kill_connection"].deny_if[0]'
    assert lines[-1].startswith("1 passed, 2 failed")


def test_policy_test_refuses_a_malformed_case_file_with_json_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = write_policy(tmp_path, [{"name": "x", "tool": "t", "expect": "allowed"}, {"tool": "t", "expect": "deny"}])

    assert main(["policy", "test", str(policy)]) == 2
    err = capsys.readouterr().err
    assert f'{tmp_path / "demo.tests.json"}: $[0].expect: error: invalid expect "allowed"' in err
    assert f'{tmp_path / "demo.tests.json"}: $[1]: error: missing required key "name"' in err


def test_policy_test_refuses_an_invalid_policy_or_a_missing_case_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": "1", "default": "maybe"}')
    cases_path(bad).write_text("[]")

    assert main(["policy", "test", str(bad)]) == 2
    assert 'bad.json: $.default: error: invalid default "maybe"' in capsys.readouterr().err
    assert main(["policy", "test", str(write_policy(tmp_path))]) == 2
    assert "demo.tests.json: error: cannot read the test cases" in capsys.readouterr().err


# -- explain -----------------------------------------------------------------------------------------------------------


def test_policy_explain_prints_the_trace_of_one_call(capsys: pytest.CaptureFixture[str]) -> None:
    demo = str(CATALOG / "demo.json")
    code = main(["policy", "explain", demo, "--tool", "kill_connection", "--args", '{"pid": 87}', "--identity", "bob"])
    lines = capsys.readouterr().out.splitlines()

    assert code == 0
    assert lines[0] == 'call: "kill_connection" by "bob" on server "explain" with {"pid": 87}'
    assert lines[3].split()[:2] == ["deny_if[0]", "decided"]
    assert 'pid lt 100: argument "pid" is 87, so it holds, and the call is denied' in lines[3]
    assert "10 left; not counted" in lines[4]
    assert lines[-1].startswith('decision: deny, by tools["kill_connection"].deny_if[0]: PIDs below 100')


def test_policy_explain_shows_a_hidden_tool_and_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    demo = str(CATALOG / "demo.json")
    assert main(["policy", "explain", demo, "--tool", "session_destroy"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == 'decision: hidden, by hide["session_destroy"]'
    assert main(["policy", "explain", demo, "--tool", "format_disk"]) == 0
    assert 'no tools key matches "format_disk", so the default applies (deny)' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"), [("{pid: 1}", "--args is not JSON"), ("[87]", "--args must be a JSON object")]
)
def test_policy_explain_refuses_arguments_that_are_not_a_json_object(
    args: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy", "explain", str(CATALOG / "demo.json"), "--tool", "t", "--args", args]) == 2
    assert message in capsys.readouterr().err
