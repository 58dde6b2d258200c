"""Time-boxed grants end to end: an approver approves "this tool, this agent, N minutes", and later calls run."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp_types import CallToolResult

from integrations.cli import main
from tests.conftest import AGENT_TOKEN, OTHER_TOKEN, READER, Running
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http

pytestmark = pytest.mark.anyio


def policy(limit: int) -> dict[str, Any]:
    return {
        "version": "1",
        "default": "allow",
        "tools": {
            "delete_record": {
                "action": "require_approval",
                "grant_max": "30m",
                "approval": {"approvers": ["group:dba"], "timeout": "10m"},
                "deny_if": [{"arg": "record_id", "op": "eq", "value": "protected"}],
                "rate_limit": {"max": limit, "window": 3600},
            },
            "drop_table": {"action": "require_approval", "approval": {"approvers": ["alice"], "timeout": "10m"}},
        },
    }


class Now:
    """The approvals' clock, moved by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def meta(result: CallToolResult) -> dict[str, Any]:
    decision: dict[str, Any] = (result.meta or {}).get("signoff/decision", {})
    return decision


@asynccontextmanager
async def guarded(signoff: Any, state: EverythingState, now: Now, limit: int = 100) -> AsyncIterator[Running]:
    async with serve_http(everything_http_app(state)) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": policy(limit)}]
        async with signoff(servers, approvers=True, gateway={"approval_hold": "0.2s"}, now=now) as running:
            yield running


async def api(running: Running, path: str, token: str | None = None, **body: Any) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(base_url=running.url, timeout=10) as http:
        if token is None and not body:
            return await http.get(path, headers=READER)
        return await http.post(path, headers=headers, json=body)


async def test_a_grant_within_grant_max_lets_the_agents_later_calls_run_still_under_deny_rules_and_limits(
    signoff: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, now = EverythingState(), Now()
    async with guarded(signoff, state, now, limit=4) as running, running.client("ev") as client:
        with anyio.fail_after(30):
            first = await client.call_tool("delete_record", {"record_id": "r-1"})
            approval_id = meta(first)["approval_id"]
            too_long = await api(running, f"/api/approvals/{approval_id}/approve", "alice-approver-token", grant="1h")
            garbled = await api(running, f"/api/approvals/{approval_id}/approve", "alice-approver-token", grant="soon")
            argv = ["approve", approval_id, "--grant", "15m", "--url", running.url, "--token", "alice-approver-token"]
            code = await anyio.to_thread.run_sync(main, argv)
            approved_out = capsys.readouterr().out
            collected = await client.call_tool("delete_record", {"record_id": "r-1"})
            granted = [await client.call_tool("delete_record", {"record_id": f"r-{i}"}) for i in (2, 3)]
            protected = await client.call_tool("delete_record", {"record_id": "protected"})
            limited = await client.call_tool("delete_record", {"record_id": "r-4"})
            async with running.client("ev", token=OTHER_TOKEN) as bravo:
                other_agent = await bravo.call_tool("delete_record", {"record_id": "r-9"})
            listing = (await api(running, "/api/grants")).json()["grants"]
            pending = (await api(running, "/api/approvals?status=pending")).json()["approvals"]
        rows = await running.audit()
    monkeypatch.setenv("ALPHA_TOKEN", AGENT_TOKEN)
    list_code = main(["--config", str(tmp_path / "signoff.toml"), "grants", "list"])
    listed_out = capsys.readouterr().out

    assert too_long.status_code == 422 and "longer than the rule's grant_max of 30m" in too_long.json()["error"]
    assert garbled.status_code == 400
    assert code == 0 and "is now approved" in approved_out and "without approval until" in approved_out
    assert not collected.is_error
    assert [g.is_error for g in granted] == [False, False]
    assert state.deleted_records == ["r-1", "r-2", "r-3"]
    assert meta(protected)["outcome"] == "denied"  # a grant replaces only the approval step
    assert meta(limited)["outcome"] == "rate_limited"  # and limits: r-1 twice, r-2 and r-3 used the 4 an hour
    assert meta(other_agent)["outcome"] == "approval_pending"  # the grant is for alpha only
    assert [p["agent"] for p in pending] == ["bravo"]
    (grant,) = listing
    assert (grant["agent"], grant["tool"], grant["granted_by"], grant["status"]) == (
        "alpha",
        "delete_record",
        "alice",
        "active",
    )
    assert grant["remaining_seconds"] == 900
    assert list_code == 0 and f"{grant['id']}  active   ev/delete_record  for alpha  by alice" in listed_out
    used = [r for r in rows if r.kind == "grant_used"]
    assert [r.outcome for r in used] == ["ok", "ok", "ok"]  # the repeat of r-1 ran on the grant too
    assert all(r.detail.startswith(f"grant {grant['id']} from alice until ") for r in used)
    assert [r.kind for r in rows if r.kind.startswith("grant_")].count("grant_created") == 1


async def test_grants_are_refused_where_the_rule_has_no_grant_max(signoff: Any) -> None:
    state, now = EverythingState(), Now()
    async with guarded(signoff, state, now) as running, running.client("ev") as client:
        with anyio.fail_after(20):
            first = await client.call_tool("drop_table", {"name": "users"})
            approval_id = meta(first)["approval_id"]
            refused = await api(running, f"/api/approvals/{approval_id}/approve", "alice-approver-token", grant="5m")
            rejected = await api(
                running, f"/api/approvals/{approval_id}/reject", "alice-approver-token", reason="no", grant="5m"
            )
            detail = (await api(running, f"/api/approvals/{approval_id}")).json()

    assert refused.status_code == 422 and "allows no grants" in refused.json()["error"]
    assert rejected.status_code == 422 and "comes with an approval" in rejected.json()["error"]
    assert detail["status"] == "pending" and detail["grant_max"] is None


async def test_a_grant_stops_at_its_expiry_and_at_revocation_and_both_are_audited(
    signoff: Any, capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    state, now = EverythingState(), Now()
    async with guarded(signoff, state, now) as running, running.client("ev", mode=mode) as client:
        with anyio.fail_after(30):
            first = await client.call_tool("delete_record", {"record_id": "r-1"})
            await api(
                running, f"/api/approvals/{meta(first)['approval_id']}/approve", "bob-approver-token", grant="10m"
            )
            await client.call_tool("delete_record", {"record_id": "r-1"})
            inside = await client.call_tool("delete_record", {"record_id": "r-2"})
            now.now += timedelta(minutes=10, seconds=1)
            expired = await client.call_tool("delete_record", {"record_id": "r-3"})
            approval_id = meta(expired)["approval_id"]
            await api(running, f"/api/approvals/{approval_id}/approve", "bob-approver-token", grant="30m")
            await client.call_tool("delete_record", {"record_id": "r-3"})
            (grant,) = (await api(running, "/api/grants")).json()["grants"]
            argv = ["grants", "revoke", grant["id"], "--reason", "done", "--url", running.url]
            code = await anyio.to_thread.run_sync(main, [*argv, "--token", "carol-approver-token"])
            again = await anyio.to_thread.run_sync(main, [*argv, "--token", "carol-approver-token"])
            revoked = await client.call_tool("delete_record", {"record_id": "r-4"})
            everything = (await api(running, "/api/grants?status=all")).json()["grants"]
        rows = await running.audit()

    assert not inside.is_error
    assert meta(expired)["outcome"] == "approval_pending"  # stopped at once, at use
    assert code == 0 and again == 1
    assert "needs approval again" in capsys.readouterr().out
    assert meta(revoked)["outcome"] == "approval_pending"
    assert state.deleted_records == ["r-1", "r-2", "r-3"]
    assert sorted(g["status"] for g in everything) == ["expired", "revoked"]
    ended = [(r.kind, r.actor) for r in rows if r.kind in ("grant_expired", "grant_revoked")]
    assert ended == [("grant_expired", "signoff"), ("grant_revoked", "carol")]


async def test_an_active_grant_survives_a_restart(signoff: Any) -> None:
    state, now = EverythingState(), Now()
    async with guarded(signoff, state, now) as running, running.client("ev") as client:
        with anyio.fail_after(20):
            first = await client.call_tool("delete_record", {"record_id": "r-1"})
            await api(
                running, f"/api/approvals/{meta(first)['approval_id']}/approve", "alice-approver-token", grant="5m"
            )

    async with guarded(signoff, state, now) as running, running.client("ev") as client:
        with anyio.fail_after(20):
            after = await client.call_tool("delete_record", {"record_id": "r-2"})
            health = (await api(running, "/healthz")).json()

    assert not after.is_error and state.deleted_records == ["r-2"]
    assert health["active_grants"] == 1


async def until(client: Any, record_id: str, *, pending: bool) -> CallToolResult:
    """Call delete_record until its answer is (or is not) "approval pending"; bounded by the caller's fail_after."""
    while True:
        result: CallToolResult = await client.call_tool("delete_record", {"record_id": record_id})
        if (meta(result).get("outcome") == "approval_pending") is pending:
            return result
        await anyio.sleep(0.05)


@pytest.mark.postgres
async def test_a_grant_given_or_revoked_on_one_replica_holds_on_another_at_once(
    signoff: Any, postgres_url: str
) -> None:
    state = EverythingState()
    async with serve_http(everything_http_app(state)) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": policy(100)}]
        options = {"approvers": True, "database_url": postgres_url, "gateway": {"approval_hold": "0.2s"}}
        async with (
            signoff(servers, **options) as here,
            signoff(servers, **options) as there,
            here.client("ev") as client,
        ):
            with anyio.fail_after(30):
                first = await client.call_tool("delete_record", {"record_id": "r-1"})
                approval_id = meta(first)["approval_id"]
                given = await api(there, f"/api/approvals/{approval_id}/approve", "alice-approver-token", grant="15m")
                # The grant refresh is every 30 s while the bus is up: only the bus makes this quick.
                granted = await until(client, "r-2", pending=False)
                grant_id = given.json()["grant"]["id"]
                revoked = await api(there, f"/api/grants/{grant_id}/revoke", "alice-approver-token", reason="done")
                after = await until(client, "r-3", pending=True)

    assert given.status_code == 200 and revoked.status_code == 200
    assert not granted.is_error and "r-2" in state.deleted_records
    assert meta(after)["outcome"] == "approval_pending"
