"""The audit log on a real database: rows append in order, chain, and any edit or removal shows."""

import functools
import itertools
import json
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from approvals.audit import (
    GENESIS,
    AuditRecord,
    append,
    append_rows,
    canonical_json,
    chain,
    digest_arguments,
    row_hash,
    verify_chain,
)
from approvals.models import AuditEvent, AuditKind
from integrations.auditing import AuditWriter
from integrations.database import create_database_engine
from integrations.supervision import Parts


def records(count: int) -> list[AuditRecord]:
    return [
        AuditRecord(
            kind="allowed",
            server="demo",
            tool=f"tool_{i}",
            identity="alpha",
            rule='tools["x"]',
            policy_version="abc",
            args_digest=digest_arguments({"i": i}),
            arguments=f'{{"i":{i}}}',
            outcome="ok",
            latency_ms=1.23456 + i,
            at=datetime(2026, 11, 23, 12, 0, i, 123456, tzinfo=UTC),
        )
        for i in range(count)
    ]


def test_appended_rows_chain_from_genesis_and_verify(engine: Engine) -> None:
    with Session(engine) as session:
        append(session, records(3))
        append(session, records(2))
        session.commit()
        rows = session.exec(select(AuditEvent).order_by(col(AuditEvent.id))).all()
        report = verify_chain(session, batch=2)

    assert [r.tool for r in rows] == ["tool_0", "tool_1", "tool_2", "tool_0", "tool_1"]
    assert rows[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))
    assert report.ok and report.checked == 5


def test_an_edited_row_is_named_by_verify(engine: Engine) -> None:
    with Session(engine) as session:
        rows = append(session, records(4))
        session.commit()
        session.commit()
        session.execute(text("UPDATE audit_events SET outcome = 'denied' WHERE id = :id"), {"id": rows[2]})
        session.commit()
        report = verify_chain(session)

    assert not report.ok
    assert report.first_bad_id == rows[2]
    assert report.checked == 2
    assert "edited" in (report.problem or "")


def test_a_removed_row_is_named_by_verify(engine: Engine) -> None:
    with Session(engine) as session:
        rows = append(session, records(4))
        session.commit()
        session.commit()
        session.execute(text("DELETE FROM audit_events WHERE id = :id"), {"id": rows[1]})
        session.commit()
        report = verify_chain(session)

    assert report.first_bad_id == rows[2]
    assert "removed" in (report.problem or "")


def test_argument_digest_ignores_key_order_but_not_values() -> None:
    assert digest_arguments({"a": 1, "b": [1, 2]}) == digest_arguments({"b": [1, 2], "a": 1})
    assert digest_arguments({"a": 1}) != digest_arguments({"a": "1"})


def test_append_rows_on_a_connection_chains_like_append(engine: Engine) -> None:
    with engine.connect() as connection:
        assert append_rows(connection, records(3)) == 3
        connection.commit()
    with Session(engine) as session:
        append(session, records(2))
        session.commit()
    with engine.connect() as connection:
        assert append_rows(connection, []) == 0
        append_rows(connection, records(1))
        connection.commit()
    with Session(engine) as session:
        rows = session.exec(select(AuditEvent).order_by(col(AuditEvent.id))).all()
        report = verify_chain(session)
    with Session(engine) as session:  # the same records through `append` hash the same
        session.execute(text("DELETE FROM audit_events"))
        append(session, records(3))
        session.commit()
        again = session.exec(select(AuditEvent).order_by(col(AuditEvent.id))).all()

    assert report.ok and report.checked == 6
    assert [r.tool for r in rows] == ["tool_0", "tool_1", "tool_2", "tool_0", "tool_1", "tool_0"]
    assert [r.hash for r in rows[:3]] == [r.hash for r in again]
    assert rows[0].at.replace(tzinfo=None) == datetime(2026, 11, 23, 12, 0, 0, 123456)
    assert rows[0].latency_ms == 1.235


@pytest.mark.anyio
async def test_the_writer_appends_everything_recorded_and_survives_a_failed_batch(engine: Engine) -> None:
    writer = AuditWriter(engine, max_batch=4, gather=0)
    for record in records(6):
        writer.record(record)
    await writer.flush()
    with engine.connect() as connection:  # the writer's kept connection is dropped after an error
        connection.execute(text("ALTER TABLE audit_events RENAME TO audit_events_away"))
        connection.commit()
    writer.record(records(1)[0])
    with pytest.raises(SQLAlchemyError):
        writer._write(records(1))
    with engine.connect() as connection:
        connection.execute(text("ALTER TABLE audit_events_away RENAME TO audit_events"))
        connection.commit()
    writer.record(records(2)[1])
    await writer.close()
    with Session(engine) as session:
        report = verify_chain(session)

    assert report.ok and report.checked == 8
    assert writer.written == 8 and writer.queued == 0


def test_appenders_racing_in_threads_never_fork_the_chain(engine: Engine) -> None:
    def work(worker: int) -> None:
        for i in range(20):
            with Session(engine) as session:
                append(session, [AuditRecord(kind="allowed", tool=f"w{worker}-{i}")])
                session.commit()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    with Session(engine) as session:
        report = verify_chain(session)

    assert report.ok and report.checked == 120


def _refuse_tool_named(engine: Engine, name: str) -> None:
    """Make the database itself refuse audit rows for the tool `name` (a CHECK on PostgreSQL, a trigger on SQLite)."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text(f"ALTER TABLE audit_events ADD CONSTRAINT refuse_{name} CHECK (tool <> '{name}')"))
        else:
            connection.execute(
                text(
                    f"CREATE TRIGGER refuse_{name} BEFORE INSERT ON audit_events WHEN NEW.tool = '{name}' "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                )
            )


def _rows(engine: Engine) -> list[AuditEvent]:
    with Session(engine) as session:
        return list(session.exec(select(AuditEvent).order_by(col(AuditEvent.id))).all())


@pytest.mark.anyio
async def test_nul_and_lone_surrogates_are_stored_as_their_escapes_and_the_chain_verifies(engine: Engine) -> None:
    writer = AuditWriter(engine, gather=0)
    arguments = {"sql": "select '\x00'", "\ud800key": "half \udfff pair", "ok": "é😀"}
    writer.record(
        AuditRecord(
            kind="allowed",
            tool="evil\x00tool\ud800",
            detail="upstream said \x00",
            args_digest=digest_arguments(arguments),
            arguments=canonical_json(arguments),
        )
    )
    writer.record(AuditRecord(kind="allowed", tool="x" * 300, outcome="o" * 40))
    await writer.close()
    rows = _rows(engine)
    with Session(engine) as session:
        report = verify_chain(session)

    assert report.ok and report.checked == 2 and writer.quarantined == 0
    assert rows[0].tool == "evil\\u0000tool\\ud800" and rows[0].detail == "upstream said \\u0000"
    assert json.loads(rows[0].arguments or "") == arguments  # the arguments read back exactly as sent
    assert rows[1].tool == "x" * 255 + "…" and rows[1].outcome == "o" * 31 + "…"


@pytest.mark.anyio
async def test_a_record_the_database_refuses_is_quarantined_and_the_rest_are_written(engine: Engine) -> None:
    _refuse_tool_named(engine, "evil")
    writer = AuditWriter(engine, gather=0)
    for tool in ("before", "evil", "after"):
        writer.record(AuditRecord(kind="allowed", server="demo", tool=tool, identity="alpha", detail=f"{tool} call"))
    await writer.flush()
    writer.record(AuditRecord(kind="allowed", tool="later"))
    await writer.close()
    rows = _rows(engine)
    with Session(engine) as session:
        report = verify_chain(session)

    assert [r.tool for r in rows] == ["before", "", "after", "later"]
    assert [r.kind for r in rows] == ["allowed", AuditKind.QUARANTINED, "allowed", "allowed"]
    quarantined = [r for r in rows if r.kind == AuditKind.QUARANTINED]
    assert len(quarantined) == 1 and writer.quarantined == 1 and writer.queued == 0
    assert quarantined[0].detail.startswith("an audit record could not be stored as it was: IntegrityError")
    kept = json.loads(quarantined[0].arguments or "")
    assert kept["tool"] == "evil" and kept["detail"] == "evil call" and kept["identity"] == "alpha"
    assert report.ok and report.checked == 4 and writer.health()["ok"]


@pytest.mark.anyio
async def test_a_record_whose_builder_fails_is_quarantined_with_what_it_was_given(engine: Engine) -> None:
    def build(tool: str) -> AuditRecord:
        raise ValueError(f"cannot build {tool}")

    writer = AuditWriter(engine, gather=0)
    writer.record(functools.partial(build, "broken"))
    writer.record(AuditRecord(kind="allowed", tool="fine"))
    await writer.close()
    rows = _rows(engine)

    assert [r.kind for r in rows] == [AuditKind.QUARANTINED, "allowed"]
    assert rows[0].detail.endswith("building it failed: ValueError: cannot build broken")
    assert json.loads(rows[0].arguments or "")["args"] == ["'broken'"]


@pytest.mark.anyio
async def test_while_the_database_is_down_records_wait_health_says_so_and_shutdown_is_bounded(engine: Engine) -> None:
    writer = AuditWriter(engine, gather=0, close_timeout=0.5)
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE audit_events RENAME TO audit_events_away"))
    async with anyio.create_task_group() as tg:
        writer.start(tg)
        writer.record(AuditRecord(kind="allowed", tool="waits"))
        with anyio.fail_after(5):
            while True:
                if writer.down_since is not None:
                    break
                await anyio.sleep(0.01)
        down = writer.health()
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE audit_events_away RENAME TO audit_events"))
        with anyio.fail_after(5):
            while True:
                if not writer.queued:
                    break
                await anyio.sleep(0.01)
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE audit_events RENAME TO audit_events_away"))
        writer.record(AuditRecord(kind="allowed", tool="lost at shutdown"))
        with anyio.fail_after(5):
            await writer.close()
        tg.cancel_scope.cancel()
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE audit_events_away RENAME TO audit_events"))

    assert not down["ok"] and down["queued"] == 1 and down["last_error"]
    assert [r.tool for r in _rows(engine)] == ["waits"] and writer.quarantined == 0
    assert writer.queued == 1  # not written, not quarantined: the database was down, and shutdown said so


@pytest.mark.anyio
async def test_on_sqlite_a_write_lock_held_elsewhere_waits_off_the_loop_and_no_connection_is_left_impatient(
    tmp_path: Path,
) -> None:
    """The writer takes SQLite's write lock on the event loop only when it is free at once; held by another
    process (here: a connection of its own), the batch waits in a worker thread, and every pooled connection
    still waits for the lock as configured afterwards (one left at 0 would fail other writers at once)."""
    engine = create_database_engine(f"sqlite:///{tmp_path / 'signoff.db'}")
    writer = AuditWriter(engine)
    blocker = sqlite3.connect(tmp_path / "signoff.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the write lock, as another process would hold it
    async with anyio.create_task_group() as tg:
        writer.start(Parts(tg))
        place = writer.record(records(1)[0])
        with anyio.move_on_after(0.5):
            await writer.committed(place)
        waited = writer.written == 0
        blocker.execute("COMMIT")
        with anyio.fail_after(10):
            await writer.committed(place)
        await writer.close()
        tg.cancel_scope.cancel()
    pooled = [engine.connect() for _ in range(3)]
    timeouts = [c.exec_driver_sql("PRAGMA busy_timeout").scalar() for c in pooled]
    for connection in pooled:
        connection.close()
    blocker.close()

    assert waited  # not written while another held the lock, and not failed either
    assert writer.written == 1 and writer.quarantined == 0
    assert timeouts == [30000, 30000, 30000]


def test_chained_rows_carry_the_hash_verify_computes_from_what_is_stored() -> None:
    records = [
        AuditRecord(kind="allowed", tool="echo", identity="bot", latency_ms=5),  # an int latency: hashed as 5.0
        AuditRecord(kind="denied", tool="é\x00\ud800", rule="r" * 600, latency_ms=0.12345),  # escaped, cut
        AuditRecord(kind="held", tool="t", at=datetime(2026, 1, 1, 12, tzinfo=UTC), latency_ms=None),
    ]
    rows = chain(GENESIS, records)

    assert [row["prev_hash"] for row in rows] == [GENESIS, rows[0]["hash"], rows[1]["hash"]]
    for row in rows:
        assert row["hash"] == row_hash(row["prev_hash"], row)
        stored = {**row, "at": row["at"].isoformat()}  # as a database hands `at` back, as text
        assert row["hash"] == row_hash(row["prev_hash"], stored)
    assert rows[1]["tool"] == "é\\u0000\\ud800"
    assert rows[1]["rule"] == "r" * 511 + "…"  # the column's 512
    assert rows[0]["latency_ms"] == 5 and rows[1]["latency_ms"] == 0.123
