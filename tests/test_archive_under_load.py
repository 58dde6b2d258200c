"""`signoff audit archive` run from the CLI while a `signoff serve` takes a steady stream of calls on the same
database: no row is lost or written twice, the archive holds exactly the rows before the cutoff, and both halves
verify with their checkpoints."""

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session, col, select

from approvals.checkpoints import private_key_text, public_key_text
from approvals.models import AuditEvent
from integrations.audit_files import read_export
from integrations.database import create_database_engine
from tests.cluster import ROOT, free_port, wait_until_healthy
from tests.conftest import AGENT_TOKEN, connect, write_config
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

AGENTS = 4
POLICY = {"version": "1", "default": "allow"}
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "ALPHA_TOKEN": AGENT_TOKEN}


@asynccontextmanager
async def serving(config: Path, log: Path) -> AsyncIterator[str]:
    """`signoff serve` as its own process; stopped with SIGTERM (a clean stop: the writer drains, the last rows
    are signed and sent) and waited for in a thread, so this process's own servers (the upstream, syslog) go on
    serving it until it has stopped."""
    port = free_port()
    argv = [sys.executable, "-m", "integrations.cli", "--config", str(config), "serve", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: ASYNC220
            [*argv, "--log-level", "warning"], env=ENV, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        await anyio.to_thread.run_sync(wait_until_healthy, url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            await anyio.to_thread.run_sync(process.wait, 30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


async def cli(*argv: str) -> tuple[int, str]:
    done = await anyio.run_process([sys.executable, "-m", "integrations.cli", *argv], env=ENV, check=False)
    return done.returncode, (done.stdout + done.stderr).decode()


def stored_rows(url: str) -> list[AuditEvent]:
    engine = create_database_engine(url)
    with Session(engine) as session:
        rows = list(session.exec(select(AuditEvent).order_by(col(AuditEvent.id))))
    engine.dispose()
    return rows


def at_of(row: dict[str, Any]) -> datetime:
    at = datetime.fromisoformat(str(row["at"]))
    return at if at.tzinfo else at.replace(tzinfo=UTC)


class SyslogReceiver:
    """A syslog server on UDP: the JSON of every message it gets, until cancelled."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.address = ""
        self.bound = anyio.Event()
        self._arrived = anyio.Event()

    async def run(self) -> None:
        async with await anyio.create_udp_socket(local_host="127.0.0.1") as receiver:
            self.address = f"127.0.0.1:{receiver.extra(anyio.abc.SocketAttribute.local_port)}"  # noqa: S610
            self.bound.set()
            async for packet, _ in receiver:
                self.records.append(json.loads(packet.decode().split("signoff-audit: ", 1)[1]))
                self._arrived.set()
                self._arrived = anyio.Event()

    async def checkpoint_of(self, row_id: int) -> None:
        """Wait until the checkpoint of `row_id` has arrived."""
        while not any(r.get("checkpoint", {}).get("row_id") == row_id for r in self.records):
            await self._arrived.wait()


class Load:
    """Agents calling `echo` with arguments of their own, each answered call remembered by its text."""

    def __init__(self) -> None:
        self.answered: list[str] = []
        self.stop = anyio.Event()
        self.moved = anyio.Event()
        self.wanted = 0

    def until(self, count: int) -> anyio.Event:
        self.moved, self.wanted = anyio.Event(), count
        return self.moved

    async def agent(self, url: str, number: int) -> None:
        async with connect(f"{url}/mcp/ev") as client:
            sent = 0
            while not self.stop.is_set():
                text = f"agent {number} call {sent}"
                sent += 1
                result = await client.call_tool("echo", {"text": text})
                assert not result.is_error, result
                self.answered.append(text)
                if len(self.answered) >= self.wanted:
                    self.moved.set()


async def test_archiving_while_agents_call_loses_no_row_and_both_halves_verify(
    tmp_path: Path, shared_database: str
) -> None:
    key = Ed25519PrivateKey.generate()
    (tmp_path / "audit.pem").write_text(private_key_text(key))
    public = public_key_text(key.public_key())
    copies = tmp_path / "checkpoints.jsonl"
    extra = (
        f'\n[audit]\nsigning_key_file = "{tmp_path / "audit.pem"}"\ncheckpoint_rows = 25\n'
        f'checkpoint_file = "{copies}"\n'
    )
    archive = tmp_path / "archive.jsonl.gz"
    load = Load()
    syslog = SyslogReceiver()
    async with serve_http(everything_http_app(EverythingState())) as upstream, anyio.create_task_group() as receiving:
        receiving.start_soon(syslog.run)
        await syslog.bound.wait()
        extra += f'\n[telemetry]\naudit_to = ["syslog"]\nsyslog_address = "{syslog.address}"\n'
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": POLICY}]
        config = write_config(tmp_path, servers, database_url=shared_database, extra=extra)
        async with serving(config, tmp_path / "serve.log") as url:
            with anyio.fail_after(150):
                async with anyio.create_task_group() as agents:
                    reached = load.until(60)
                    for number in range(AGENTS):
                        agents.start_soon(load.agent, url, number)
                    await reached.wait()
                    cutoff = datetime.now(UTC)  # rows are written on both sides of it
                    before_cutoff = len(load.answered)
                    await load.until(before_cutoff + 60).wait()
                    archived_at = len(load.answered)
                    code, said = await cli(
                        "--config",
                        str(config),
                        "audit",
                        "archive",
                        "--before",
                        cutoff.isoformat(),
                        "--out",
                        str(archive),
                    )
                    during = len(load.answered) - archived_at  # calls answered while the archive ran
                    await load.until(len(load.answered) + 40).wait()
                    load.stop.set()
        kept = stored_rows(shared_database)
        with anyio.fail_after(5):  # the checkpoint signoff signed as it stopped, sent last (already on loopback)
            await syslog.checkpoint_of(kept[-1].id or 0)
        receiving.cancel_scope.cancel()
    copy = tmp_path / "syslog.jsonl"  # what syslog got, as one file: rows and checkpoints
    copy.write_text("".join(json.dumps(r) + "\n" for r in syslog.records))
    verified_kept = await cli("--config", str(config), "audit", "verify", "--against", str(copies))
    verified_archive = await cli("audit", "verify", "--file", str(archive), "--key", public)
    verified_copy = await cli("audit", "verify", "--file", str(copy), "--key", public)

    assert code == 0, said
    assert verified_kept[0] == 0 and "audit chain ok" in verified_kept[1], verified_kept[1]
    assert "joined by the archive checkpoint" in verified_kept[1] and "unanchored: 0" in verified_kept[1]
    assert verified_archive[0] == 0 and "from the log's first row" in verified_archive[1], verified_archive[1]
    archived = list(read_export(archive).rows())
    calls = [json.loads(r["arguments"])["text"] for r in [*archived, *(r.model_dump() for r in kept)] if r["tool"]]
    assert sorted(calls) == sorted(load.answered)  # every answered call exactly once, in the archive or kept
    assert archived and all(at_of(r) < cutoff for r in archived)
    assert kept and all(at_of(r.model_dump()) >= cutoff for r in kept)  # so the archive has every row before it
    assert archived[-1]["hash"] == kept[0].prev_hash
    assert 0 < before_cutoff < len(archived) and len(kept) > 100
    assert during > 0, "no call was answered while the archive ran"

    # syslog got every row, archived or kept, and every checkpoint, the archive's too: its copy verifies alone.
    sent = syslog.records
    sent_rows = {r["hash"] for r in sent if "checkpoint" not in r}
    missing = [
        r["id"] for r in [*archived, *(k.model_dump() for k in kept)] if r["tool"] and r["hash"] not in sent_rows
    ]
    assert not missing, (missing, len(sent_rows), [r.get("id") for r in sent][:5], len(archived), len(kept))
    assert any(r["checkpoint"]["kind"] == "archive" for r in sent if "checkpoint" in r)
    assert verified_copy[0] == 0 and "unanchored: 0" in verified_copy[1], verified_copy[1]
