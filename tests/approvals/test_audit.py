"""The audit log on a real database: rows append in order, chain, and any edit or removal shows."""

import itertools
import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from approvals.audit import GENESIS, AuditRecord, append, append_rows, digest_arguments, verify_chain
from approvals.models import AuditEvent
from integrations.auditing import AuditWriter


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
