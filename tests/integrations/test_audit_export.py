"""Audit rows sent where auditors read them (`[telemetry] audit_to`): JSON lines on stdout, syslog, OTel logs.

What arrives is compared with the database the rows came from: the same rows, in order, with the same hashes.
"""

import itertools
import json
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter

from integrations.app import create_app
from integrations.errors import ConfigError
from integrations.settings import load_settings
from tests.cluster import ROOT, free_port, wait_until_healthy
from tests.conftest import AGENT_TOKEN, Running, connect, write_config
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http

pytestmark = pytest.mark.anyio

POLICY = {"version": "1", "default": "allow", "tools": {"drop_table": {"action": "deny"}}}


def database_rows(path: Path) -> dict[str, dict[str, Any]]:
    """Every audit row in the SQLite file, by hash."""
    database = sqlite3.connect(path)
    database.row_factory = sqlite3.Row
    rows = {row["hash"]: dict(row) for row in database.execute("SELECT * FROM audit_events ORDER BY id")}
    database.close()
    return rows


def assert_a_chain_of(exported: list[dict[str, Any]], stored: dict[str, dict[str, Any]]) -> None:
    """`exported` is a run of the stored log: each row the database's, each linked to the one before."""
    assert exported
    for before, row in itertools.pairwise(exported):
        assert row["prev_hash"] == before["hash"] and row["id"] == before["id"] + 1
    for row in exported:
        kept = stored[row["hash"]]
        assert (row["id"], row["kind"], row["tool"], row["arguments"]) == (
            kept["id"],
            kept["kind"],
            kept["tool"],
            kept["arguments"],
        )


async def calls(url: str) -> None:
    async with connect(f"{url}/mcp/ev") as client:
        for n in range(5):
            assert not (await client.call_tool("echo", {"text": f"exported {n}"})).is_error
        assert (await client.call_tool("drop_table", {"name": "users"})).is_error


async def test_json_lines_on_stdout_carry_every_row_with_its_hashes(tmp_path: Path) -> None:
    async with serve_http(everything_http_app(EverythingState())) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": POLICY}]
        config = write_config(tmp_path, servers, extra='\n[telemetry]\naudit_to = ["stdout"]\n')
        port = free_port()
        env = {"PYTHONPATH": str(ROOT), "ALPHA_TOKEN": AGENT_TOKEN, "PATH": "/usr/bin:/bin"}
        argv = [sys.executable, "-m", "integrations.cli", "--config", str(config), "serve", "--port", str(port)]
        log = tmp_path / "stderr.log"
        with log.open("wb") as errors:
            process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=errors)  # noqa: ASYNC220
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_healthy(url, process, log)
            await calls(url)
        finally:
            process.terminate()
            out, _ = process.communicate(timeout=30)
    lines = [json.loads(line) for line in out.decode().splitlines() if line.startswith('{"signoff_audit"')]
    exported = [line["signoff_audit"] for line in lines]
    stored = database_rows(tmp_path / "signoff.db")

    assert_a_chain_of(exported, stored)
    texts = [json.loads(r["arguments"]).get("text") for r in exported if r["tool"] == "echo"]
    assert texts == [f"exported {n}" for n in range(5)]  # every call, sent by the last step as signoff stopped
    assert [r["kind"] for r in exported if r["tool"] == "drop_table"] == ["denied"]


async def test_syslog_over_udp_gets_one_message_per_row(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5)
        address = f"127.0.0.1:{receiver.getsockname()[1]}"
        extra = f'\n[telemetry]\naudit_to = ["syslog"]\nsyslog_address = "{address}"\n'
        async with serve_http(everything_http_app(EverythingState())) as upstream:
            servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": POLICY}]
            settings = load_settings(write_config(tmp_path, servers, extra=extra), environ={"ALPHA_TOKEN": AGENT_TOKEN})
            app = create_app(settings)
            async with serve_http(app) as url:
                await calls(url)
        messages = []
        receiver.settimeout(0.5)
        try:
            while True:
                messages.append(receiver.recv(65536).decode())
        except TimeoutError:
            pass
    stored = database_rows(tmp_path / "signoff.db")
    exported = [json.loads(m.split("signoff-audit: ", 1)[1]) for m in messages]

    assert all(m.startswith("<38>signoff-audit: ") for m in messages)  # facility auth, severity info
    assert_a_chain_of(exported, stored)
    assert sum(1 for r in exported if r["tool"] == "echo") == 5


async def test_opentelemetry_logs_carry_the_row_as_body_and_its_fields_as_attributes(tmp_path: Path) -> None:
    exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    extra = '\n[telemetry]\naudit_to = ["otlp"]\notlp_endpoint = "http://127.0.0.1:9"\n'
    async with serve_http(everything_http_app(EverythingState())) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": POLICY}]
        settings = load_settings(write_config(tmp_path, servers, extra=extra), environ={"ALPHA_TOKEN": AGENT_TOKEN})
        app = create_app(settings, log_exporter=exporter)
        async with serve_http(app) as url:
            await calls(url)
    records = [entry.log_record for entry in exporter.get_finished_logs()]
    stored = database_rows(tmp_path / "signoff.db")

    assert {r.event_name for r in records} == {"signoff.audit"}
    exported = [json.loads(str(r.body)) for r in records]
    assert_a_chain_of(exported, stored)
    denied = next(r for r in records if r.attributes and r.attributes["signoff.audit.tool"] == "drop_table")
    assert denied.attributes is not None and denied.attributes["signoff.audit.kind"] == "denied"
    assert denied.attributes["signoff.audit.hash"] == json.loads(str(denied.body))["hash"]


async def test_a_sink_that_fails_is_shown_and_calls_go_on_then_it_resumes_where_it_stopped(tmp_path: Path) -> None:
    missing = tmp_path / "no-syslog-here.sock"
    extra = f'\n[telemetry]\naudit_to = ["syslog"]\nsyslog_address = "{missing}"\n'
    async with serve_http(everything_http_app(EverythingState())) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": POLICY}]
        settings = load_settings(write_config(tmp_path, servers, extra=extra), environ={"ALPHA_TOKEN": AGENT_TOKEN})
        app = create_app(settings)
        async with serve_http(app) as url:
            running = Running(url=url, app=app)
            await calls(url)
            with anyio.fail_after(10):
                while True:  # the tail tries, and says why it could not send
                    async with httpx2.AsyncClient(timeout=5) as http:
                        health = (await http.get(f"{url}/healthz")).json()
                    if health["audit_export"]["syslog"]["last_error"]:
                        break
                    await anyio.sleep(0.1)
            rows = await running.audit()

    assert health["status"] == "ok"  # the log is whole in the database: nothing is failing
    assert "No such file or directory" in health["audit_export"]["syslog"]["last_error"]
    assert sum(1 for r in rows if r.tool == "echo") == 5


@pytest.mark.parametrize(
    ("telemetry", "why"),
    [
        ('audit_to = ["otlp"]', 'audit_to includes "otlp", so otlp_endpoint must be set'),
        ('audit_to = ["stdout", "stdout"]', "audit_to names a destination twice"),
        ('audit_to = ["kafka"]', "telemetry.audit_to\\[0\\]: Input should be 'stdout', 'syslog' or 'otlp'"),
    ],
)
def test_a_bad_audit_to_is_refused_at_startup(tmp_path: Path, telemetry: str, why: str) -> None:
    config = write_config(tmp_path, [], extra=f"\n[telemetry]\n{telemetry}\n")
    with pytest.raises(ConfigError, match=why):
        load_settings(config, environ={"ALPHA_TOKEN": AGENT_TOKEN})
