"""Shadow mode and replay over loopback: decisions audited while calls succeed, and a candidate policy replayed."""

import json
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp_types import CallToolResult

from integrations.cli import main
from tests.conftest import AGENT_TOKEN, READER
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http

pytestmark = pytest.mark.anyio


def text(result: CallToolResult) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


async def test_shadow_policy_audits_what_it_would_do_and_every_call_runs(signoff: Any) -> None:
    state = EverythingState()
    policy = {
        "version": "1",
        "default": "deny",
        "shadow": True,
        "hide": ["drop_table"],
        "tools": {
            "echo": {},
            "delete_record": {"action": "require_approval"},
            "counter": {"rate_limit": {"max": 1, "window": 3600}},
        },
    }
    async with serve_http(everything_http_app(state)) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": policy}]
        async with signoff(servers, approvers=True) as running, running.client("ev") as client:
            with anyio.fail_after(20):
                listed = {t.name for t in (await client.list_tools()).tools}
                echoed = await client.call_tool("echo", {"text": "hi"})
                added = await client.call_tool("add", {"a": 2, "b": 3})
                dropped = await client.call_tool("drop_table", {"name": "users"})
                deleted = await client.call_tool("delete_record", {"record_id": "r-1"})
                counted = [await client.call_tool("counter", {}) for _ in range(2)]
                async with httpx2.AsyncClient(base_url=running.url, headers=READER) as http:
                    requests = (await http.get("/api/approvals?status=")).json()["approvals"]
                    metrics = (await http.get("/metrics")).text
            rows = await running.audit()

    assert "drop_table" in listed  # nothing is enforced, so nothing is left out
    assert [r.is_error for r in (echoed, added, dropped, deleted, *counted)] == [False] * 6
    assert text(added) == "5" and state.dropped_tables == ["users"] and state.deleted_records == ["r-1"]
    assert state.counter == 2
    assert requests == []  # a shadowed approval asks nobody
    calls = [(r.tool, r.kind, r.outcome) for r in rows if r.kind not in ("policy_loaded",)]
    assert calls == [
        ("echo", "allowed", "ok"),
        ("add", "denied", "shadow_denied"),
        ("drop_table", "hidden", "shadow_hidden"),
        ("delete_record", "approval_required", "shadow_approval"),
        ("counter", "allowed", "ok"),
        ("counter", "rate_limited", "shadow_rate_limited"),
    ]
    add_row = next(r for r in rows if r.tool == "add")
    assert add_row.detail.endswith("; ran: ok") and "default is deny" in add_row.detail
    assert add_row.rule == "default"
    assert 'signoff_tool_calls_total{decision="shadow_denied",server="ev"} 1.0' in metrics.splitlines()


async def test_shadow_on_one_rule_leaves_the_others_enforced(signoff: Any) -> None:
    state = EverythingState()
    policy = {
        "version": "1",
        "default": "allow",
        "tools": {
            "drop_table": {"action": "deny", "shadow": True},
            "delete_record": {"action": "deny", "reason": "Deletes are done by hand"},
        },
    }
    async with serve_http(everything_http_app(state)) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": policy}]
        async with signoff(servers) as running, running.client("ev") as client:
            with anyio.fail_after(20):
                dropped = await client.call_tool("drop_table", {"name": "users"})
                deleted = await client.call_tool("delete_record", {"record_id": "r-1"})
            rows = await running.audit()

    assert not dropped.is_error and state.dropped_tables == ["users"]
    assert deleted.is_error and state.deleted_records == []
    outcomes = {r.tool: (r.kind, r.outcome) for r in rows if r.tool}
    assert outcomes == {"drop_table": ("denied", "shadow_denied"), "delete_record": ("denied", "refused")}


async def test_replay_prints_what_a_candidate_policy_would_change_on_recorded_traffic(
    signoff: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = {"version": "1", "default": "allow", "tools": {"echo": {"redact": ["text"]}}}
    async with serve_http(everything_http_app(EverythingState())) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": recorded}]
        async with signoff(servers) as running, running.client("ev") as client:
            with anyio.fail_after(20):
                for record_id in ("r-1", "r-2", "keep-3"):
                    await client.call_tool("delete_record", {"record_id": record_id})
                for _ in range(3):
                    await client.call_tool("add", {"a": 1, "b": 2})
                await client.call_tool("echo", {"text": "secret"})
            await running.audit()

    candidate = tmp_path / "candidate.json"
    candidate.write_text(
        json.dumps(
            {
                "version": "1",
                "default": "allow",
                "tools": {
                    "delete_record": {"deny_if": [{"arg": "record_id", "op": "starts_with", "value": "r-"}]},
                    "add": {"rate_limit": {"max": 2, "window": 3600}},
                    "echo": {"require": [{"arg": "text", "op": "eq", "value": "secret"}]},
                },
            }
        )
    )
    monkeypatch.setenv("ALPHA_TOKEN", AGENT_TOKEN)
    config = str(tmp_path / "signoff.toml")
    argv = ["--config", config, "policy", "replay", str(candidate), "--server", "ev", "--since", "1d"]
    code = main(argv)
    out = capsys.readouterr().out
    failing = main([*argv, "--fail-on-change"])
    nothing = main(["--config", config, "policy", "replay", str(candidate), "--server", "other"])
    quiet = capsys.readouterr().out

    assert code == 0 and failing == 1 and nothing == 0
    lines = out.splitlines()
    assert lines[1].startswith("replayed 7 call(s) against policy ") and lines[1].endswith(": 4 would change")
    assert "delete_record: 3 call(s), 2 would change" in lines
    assert "  allow -> deny: 2" in lines and "  allow -> allow: 1 (unchanged)" in lines
    examples = [line for line in lines if line.startswith("    e.g. #")]
    assert any(
        'alpha {"record_id": "r-1"}: allow by default -> deny by tools["delete_record"].deny_if[0]' in e
        for e in examples
    )
    assert "add: 3 call(s), 1 would change" in lines and "  allow -> rate_limited: 1" in lines
    # The echo text was stored redacted, so the replayed `require` sees "[redacted]" and refuses: said plainly.
    assert "echo: 1 call(s) (1 with redacted arguments), 1 would change" in lines
    assert lines[-1].startswith('note: 1 call(s) had redacted arguments, stored as "[redacted]"')
    assert "replayed 0 call(s)" in quiet
