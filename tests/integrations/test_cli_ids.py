"""Ids as people type them, and `signoff approvals show`, through the real CLI and a real signoff over loopback."""

import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from sqlmodel import Session

from approvals.models import ApprovalRequest, utcnow
from integrations.cli import main
from integrations.database import create_database_engine
from tests.conftest import AGENT_TOKEN, READER
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http

pytestmark = pytest.mark.anyio

GUARDED = {
    "version": "1",
    "default": "allow",
    "tools": {
        "delete_record": {
            "action": "require_approval",
            "reason": "Deletes a customer record",
            "grant_max": "30m",
            "approval": {"approvers": ["alice"], "timeout": "10m"},
        }
    },
}


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with anyio.fail_after(20):
        code = await anyio.to_thread.run_sync(main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fields(shown: str) -> dict[str, str]:
    """The `key : value` lines of `signoff approvals show`."""
    pairs = (line.partition(" : ") for line in shown.splitlines() if " : " in line and not line.startswith(" "))
    return {key.strip(): value for key, _, value in pairs}


def insert_requests(database: Path, *ids: str) -> None:
    """Pending requests with chosen ids, as the gateway writes them, so two can share a prefix."""
    engine = create_database_engine(f"sqlite:///{database}")
    with Session(engine) as session:
        for given in ids:
            session.add(
                ApprovalRequest(
                    id=uuid.UUID(given),
                    server="ev",
                    tool="delete_record",
                    identity="alpha",
                    arguments=json.dumps({"id": given[:4]}),
                    args_digest=given.replace("-", "")[:32],
                    deadline=utcnow() + timedelta(minutes=10),
                )
            )
        session.commit()
    engine.dispose()


async def test_a_unique_prefix_shows_approves_and_reads_a_request_in_the_cli_and_the_api(
    signoff: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALPHA_TOKEN", AGENT_TOKEN)  # the config's ${ALPHA_TOKEN}, for the CLI that reads it
    async with serve_http(everything_http_app(EverythingState())) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": GUARDED}]
        async with signoff(servers, approvers=True, gateway={"approval_hold": 0.2}) as running:
            async with running.client("ev") as client:
                pending = await client.call_tool("delete_record", {"id": "cust-42"})
            request = str((pending.meta or {})["signoff/decision"]["approval_id"])
            prefix = request[:8]
            config = str(tmp_path / "signoff.toml")

            shown_code, shown, _ = await cli(capsys, "approvals", "show", prefix, "--config", config)
            async with httpx2.AsyncClient(base_url=running.url, timeout=10, headers=READER) as http:
                read = await http.get(f"/api/approvals/{prefix}")
                short = await http.get(f"/api/approvals/{request[:5]}")
            approved = await cli(
                capsys, "approve", prefix, "--token", "alice-approver-token", "--url", running.url, "--grant", "15m"
            )
            grant = approved[1].splitlines()[1].split()[1].rstrip(":")
            revoked = await cli(
                capsys, "grants", "revoke", grant[:8], "--token", "alice-approver-token", "--url", running.url
            )
            json_code, as_json, _ = await cli(
                capsys, "--config", config, "approvals", "show", request, "--format", "json"
            )

    assert shown_code == 0
    assert fields(shown)["id"] == request and fields(shown)["status"] == "pending"
    assert fields(shown)["arguments"] == '{"id": "cust-42"}'  # the arguments, whole
    assert "audit trail:" in shown and "approval_required" in shown
    assert read.status_code == 200 and read.json()["id"] == request
    assert short.status_code == 400
    assert (
        short.json()["error"]
        == f"'{request[:5]}' is too short for an id: give at least 8 of its characters, or all of it"
    )
    assert approved[0] == 0 and approved[1].splitlines()[0] == f"{request} is now approved"
    assert revoked[0] == 0, revoked[2]
    assert revoked[1].startswith(f"grant {grant} revoked: ev/delete_record for alpha")
    assert json_code == 0
    detail = json.loads(as_json)
    assert detail["status"] == "approved" and detail["decisions"][0]["approver"] == "alice"
    assert [event["kind"] for event in detail["audit"]][-1] == "approved"


async def test_an_ambiguous_or_short_prefix_is_refused_listing_the_matches(
    signoff: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALPHA_TOKEN", AGENT_TOKEN)  # the config's ${ALPHA_TOKEN}, for the CLI that reads it
    twins = ("3f2c1a9b-0000-4000-8000-000000000001", "3f2c1a9b-0000-4000-8000-000000000002")
    async with signoff([], approvers=True) as running:
        insert_requests(tmp_path / "signoff.db", *twins)
        config = str(tmp_path / "signoff.toml")
        async with httpx2.AsyncClient(base_url=running.url, timeout=10) as http:
            ambiguous = await http.post(
                "/api/approvals/3f2c1a9b/approve", json={}, headers={"Authorization": "Bearer alice-approver-token"}
            )
            unique = await http.get("/api/approvals/3f2c1a9b-0000-4000-8000-0000000000", headers=READER)
            nobody = await http.get("/api/approvals/ffffffff", headers=READER)
        shown = await cli(capsys, "--config", config, "approvals", "show", "3f2c1a9b")
        short = await cli(capsys, "--config", config, "approvals", "show", "3f2c")
        one = await cli(capsys, "--config", config, "approvals", "show", "3F2C1A9B000040008000000000000001")

    assert ambiguous.status_code == 409
    assert ambiguous.json()["matches"] == list(twins)
    assert ambiguous.json()["error"] == (
        f"'3f2c1a9b' matches more than one approval request: {twins[0]}, {twins[1]}; give more of the id"
    )
    assert unique.status_code == 409  # still two: 30 of 32 digits
    assert nobody.status_code == 404
    assert shown[0] == 1 and shown[2] == f"signoff: {ambiguous.json()['error']}\n"
    assert short[0] == 1 and "too short for an id: give at least 8" in short[2]
    assert one[0] == 0 and fields(one[1])["id"] == twins[0]
