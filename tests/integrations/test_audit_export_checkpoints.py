"""`[telemetry] audit_to` and the audit log's other records: each signed checkpoint goes to syslog and OpenTelemetry
logs as the line `checkpoint_file` holds, whoever signed it; and `signoff audit archive` never removes, unsaid, rows
a destination has not sent."""

import json
import socket
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from sqlmodel import Session, col, select

from approvals.models import AuditEvent, AuditExportCursor
from integrations.app import create_app
from integrations.audit_files import read_export
from integrations.cli import main
from integrations.database import create_database_engine
from integrations.settings import load_settings
from tests.conftest import AGENT_TOKEN, connect, write_config
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http

pytestmark = pytest.mark.anyio

POLICY = {"version": "1", "default": "allow"}


def drained(receiver: socket.socket) -> list[str]:
    """Every message waiting on a datagram socket (the sender has stopped)."""
    receiver.setblocking(False)
    messages = []
    try:
        while True:
            messages.append(receiver.recv(65536).decode())
    except BlockingIOError:
        return messages


def generated_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, str]:
    key = tmp_path / "audit.pem"
    assert main(["audit", "key", "--generate", "--out", str(key)]) == 0
    return key, capsys.readouterr().out.split("public key: ")[1].split()[0]


async def serve_calls(config: Path, count: int, exporter: Any = None, *, between: Any = None) -> Any:
    """Serve `config` in this process, make `count` calls (then `between()` in a thread, then `count` more), stop;
    the running parts, for their health."""
    settings = load_settings(config, environ={"ALPHA_TOKEN": AGENT_TOKEN})
    app = create_app(settings, log_exporter=exporter)
    async with serve_http(app) as url, connect(f"{url}/mcp/ev") as client:
        for n in range(count):
            assert not (await client.call_tool("echo", {"text": f"call {n}"})).is_error
        if between is not None:
            await app.state.signoff.audit.flush()
            await anyio.to_thread.run_sync(between)
            for n in range(count):
                assert not (await client.call_tool("echo", {"text": f"call {count + n}"})).is_error
    return app.state.signoff


async def test_each_checkpoint_goes_to_syslog_and_opentelemetry_as_the_checkpoint_file_holds_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, public = generated_key(tmp_path, capsys)
    copies = tmp_path / "checkpoints.jsonl"
    address = tmp_path / "log.sock"
    auditor = tmp_path / "auditor.toml"  # the CLI on another machine: the database and the key, no audit_to
    exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(address))
        async with serve_http(everything_http_app(EverythingState())) as upstream:
            extra = (
                f'\n[audit]\nsigning_key_file = "{key}"\ncheckpoint_file = "{copies}"\n\n'
                f'[telemetry]\naudit_to = ["syslog", "otlp"]\nsyslog_address = "{address}"\n'
                'otlp_endpoint = "http://127.0.0.1:9"\n'
            )
            config = write_config(tmp_path, [{"name": "ev", "url": f"{upstream}/mcp", "policy": POLICY}], extra=extra)
            auditor.write_text(
                f'[gateway]\ndatabase_url = "sqlite:///{tmp_path / "signoff.db"}"\n\n'
                f'[audit]\nsigning_key_file = "{key}"\ncheckpoint_file = "{copies}"\n'
            )

            def checkpoint() -> None:  # signed by another process: the server's tail sends it all the same
                assert main(["--config", str(auditor), "audit", "checkpoint"]) == 0

            await serve_calls(config, 3, exporter, between=checkpoint)  # it signs its own last rows as it stops
        messages = drained(receiver)

    in_file = [json.loads(line) for line in copies.read_text().splitlines()]
    sent = [json.loads(m.split("signoff-audit: ", 1)[1]) for m in messages]
    assert all(m.startswith("<38>signoff-audit: ") for m in messages)
    assert len(in_file) == 2  # the CLI's, then the one signoff made as it stopped
    assert [s for s in sent if "checkpoint" in s] == in_file
    logs = [entry.log_record for entry in exporter.get_finished_logs()]
    bodies = [json.loads(str(r.body)) for r in logs if r.event_name == "signoff.audit.checkpoint"]
    assert bodies == in_file
    signed = next(r for r in logs if r.event_name == "signoff.audit.checkpoint")
    assert signed.attributes is not None and signed.attributes["signoff.checkpoint.kind"] == "periodic"
    assert signed.attributes["signoff.checkpoint.row_id"] == in_file[0]["checkpoint"]["row_id"]

    copy = tmp_path / "syslog.jsonl"  # what syslog holds verifies on its own, every row anchored
    copy.write_text("".join(json.dumps(s) + "\n" for s in sent))
    capsys.readouterr()
    assert main(["audit", "verify", "--file", str(copy), "--key", public]) == 0
    out = capsys.readouterr().out
    assert "2 signed checkpoint(s) verified" in out and "unanchored: 0 row(s)" in out


def syslog_cursor(url: str) -> int:
    engine = create_database_engine(url)
    with Session(engine) as session:
        cursor = session.get(AuditExportCursor, "syslog")
        newest = session.exec(select(AuditEvent.id).order_by(col(AuditEvent.id).desc())).first()
    engine.dispose()
    assert cursor is not None and newest is not None and cursor.last_id < newest
    return cursor.last_id


async def test_archive_refuses_to_remove_rows_syslog_has_not_sent_and_what_it_removed_unsent_is_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALPHA_TOKEN", AGENT_TOKEN)
    key, _ = generated_key(tmp_path, capsys)
    address = tmp_path / "log.sock"  # nothing listens yet: syslog is down
    database = f"sqlite:///{tmp_path / 'signoff.db'}"
    auditor = tmp_path / "auditor.toml"
    auditor.write_text(f'[gateway]\ndatabase_url = "{database}"\n\n[audit]\nsigning_key_file = "{key}"\n')
    archive = tmp_path / "archive.jsonl"
    async with serve_http(everything_http_app(EverythingState())) as upstream:
        extra = (
            f'\n[audit]\nsigning_key_file = "{key}"\n\n'
            f'[telemetry]\naudit_to = ["syslog"]\nsyslog_address = "{address}"\n'
        )
        config = write_config(tmp_path, [{"name": "ev", "url": f"{upstream}/mcp", "policy": POLICY}], extra=extra)
        await serve_calls(config, 4)
        sent_through = syslog_cursor(database)
        await serve_calls(config, 1)  # a newer row to keep: the archive takes every row before it

        argv = ["audit", "archive", "--before", "2099-01-01", "--out", str(archive)]
        capsys.readouterr()
        code = main(["--config", str(config), *argv, "--wait", "1s"])
        refused = capsys.readouterr().err
        assert code == 1 and f"syslog has sent the rows through {sent_through} only" in refused
        assert not archive.exists() and syslog_cursor(database) == sent_through

        # Archived with a config that does not send to syslog: it goes ahead, and says what syslog never got.
        assert main(["--config", str(auditor), *argv]) == 0
        done = capsys.readouterr()
        through = int(done.out.split("through row ")[1].split(",")[0])
        assert f"the audit export syslog (rows after {sent_through}) had not sent every archived row" in done.err

        # syslog is back: the next start sends what is left and the archive's checkpoint, and says what it missed.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
            receiver.bind(str(address))
            running = await serve_calls(config, 1)
            sent = [json.loads(m.split("signoff-audit: ", 1)[1]) for m in drained(receiver)]

    (tail,) = running.audit_exports
    assert tail.health()["archived_unsent"] == [f"rows {sent_through + 1}-{through}"]
    rows = [s for s in sent if "checkpoint" not in s]
    assert rows[0]["id"] > through and rows[0]["prev_hash"] == list(read_export(archive).rows())[-1]["hash"]
    assert [s["checkpoint"]["row_id"] for s in sent if s.get("checkpoint", {}).get("kind") == "archive"] == [through]
