"""A serving signoff makes signed audit checkpoints by itself and sends each out: to the `audit.checkpoint` webhook
(the loopback receiver checks its HMAC) and to `[audit] checkpoint_file`; either copy then holds the log to account."""

import json
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from integrations.cli import main
from tests.fakes.upstreams import everything_http_app, serve_http
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.webpage import sign_in

pytestmark = pytest.mark.anyio
SECRET = "webhook-secret-for-checkpoints"
ALLOW_ALL = {"version": "1", "default": "allow"}


async def test_the_server_signs_checkpoints_and_sends_them_to_the_webhook_and_the_file(
    signoff: Any, tmp_path: Path, shared_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "audit.pem"
    assert main(["audit", "key", "--generate", "--out", str(key)]) == 0
    public = capsys.readouterr().out.split("public key: ")[1].split()[0]
    copies = tmp_path / "checkpoints.jsonl"
    receiver = WebhookReceiver(SECRET)
    async with serve_http(receiver.app) as hook_url, serve_http(everything_http_app()) as upstream:
        extra = (
            f'\n[audit]\nsigning_key_file = "{key}"\ncheckpoint_rows = 3\ncheckpoint_seconds = 0.2\n'
            f'checkpoint_file = "{copies}"\n\n'
            f'[[webhooks]]\nurl = "{hook_url}/hook"\nsecret = "{SECRET}"\nevents = ["audit.*"]\n'
        )
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": ALLOW_ALL}]
        async with signoff(servers, database_url=shared_database, extra=extra) as running:
            async with running.client("ev") as client:
                for i in range(4):
                    await client.call_tool("add", {"a": i, "b": 1})
            rows = await running.audit()  # flushed: every row is in the database
            with anyio.fail_after(5):  # the checkpointer signs the head within a poll (0.2 s here) of it landing
                while not any(d.json()["checkpoint"]["row_id"] == rows[-1].id for d in receiver.deliveries):
                    await receiver.wait_for(len(receiver.deliveries) + 1)
            health = running.app.state.signoff.checkpoints.health()

    delivery = receiver.deliveries[-1]
    assert delivery.signature_valid and delivery.headers["signoff-event"] == "audit.checkpoint"
    assert delivery.json()["checkpoint"]["hash"] == rows[-1].hash and health["last_error"] is None
    saved = tmp_path / "received.jsonl"  # what a receiver keeps: the bodies it was sent
    saved.write_text("".join(d.body.decode() + "\n" for d in receiver.deliveries))
    in_file = [json.loads(line)["checkpoint"] for line in copies.read_text().splitlines()]
    assert in_file[-1]["row_id"] >= rows[-1].id

    config = tmp_path / "auditor.toml"
    config.write_text(f'[gateway]\ndatabase_url = "{shared_database}"\n')
    assert main(["--config", str(config), "audit", "verify", "--key", public, "--against", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "checkpoint(s) verified; the chain passes through each" in out
    assert main(["--config", str(config), "audit", "verify", "--key", public, "--against", str(copies)]) == 0
    assert "unanchored: 0 row(s)" in capsys.readouterr().out  # a clean stop signs the last rows too


async def test_the_web_pages_jsonl_export_verifies_on_its_own_with_its_checkpoints(
    signoff: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "audit.pem"
    assert main(["audit", "key", "--generate", "--out", str(key)]) == 0
    public = capsys.readouterr().out.split("public key: ")[1].split()[0]
    extra = f'\n[audit]\nsigning_key_file = "{key}"\ncheckpoint_rows = 1000\ncheckpoint_seconds = "1h"\n'
    async with serve_http(everything_http_app()) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": ALLOW_ALL}]
        async with signoff(servers, approvers=True, extra=extra) as running:
            async with running.client("ev") as client:
                for i in range(3):
                    await client.call_tool("add", {"a": i, "b": 1})
            await running.audit()
            made = await running.app.state.signoff.checkpoints.checkpoint()
            async with running.client("ev") as client:
                await client.call_tool("add", {"a": 9, "b": 1})
            await running.audit()
            async with httpx2.AsyncClient(base_url=running.url, timeout=10) as http:
                await sign_in(http, "alice")
                whole = await http.get("/audit/export.jsonl")
                some = await http.get("/audit/export.jsonl?tool=add")

    assert made is not None and whole.status_code == 200
    (tmp_path / "whole.jsonl").write_text(whole.text)
    (tmp_path / "some.jsonl").write_text(some.text)
    assert main(["audit", "verify", "--file", str(tmp_path / "whole.jsonl"), "--key", public]) == 0
    out = capsys.readouterr().out
    assert "from the log's first row" in out and "1 signed checkpoint(s) verified" in out
    assert "5 rows verified" in out and "unanchored: 1 row(s)" in out  # the last call, after the checkpoint
    assert main(["audit", "verify", "--file", str(tmp_path / "some.jsonl"), "--key", public]) == 0
    assert "a partial export" in capsys.readouterr().out
