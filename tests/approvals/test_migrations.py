"""The Alembic migrations on an empty SQLite and PostgreSQL database: they build exactly the schema the models declare.

If a test here fails after a change to `approvals/models.py`, the change needs a migration (see `alembic_config`).
"""

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Index, MetaData, UniqueConstraint, inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, select

from approvals.audit import AuditRecord, append, of_kind, verify_chain
from approvals.models import AuditEvent
from integrations.database import (
    SHIPPED_HEAD,
    UnversionedDatabase,
    alembic_config,
    create_database_engine,
    current_revision,
    head_revision,
    upgrade,
)


def _drop_everything(engine: Engine) -> None:
    # Reflect rather than use SQLModel.metadata: alembic_version, and tables a model no longer declares, go too.
    reflected = MetaData()
    reflected.reflect(engine)
    reflected.drop_all(engine)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a database with no tables at all: a new SQLite file, or PostgreSQL emptied under `-m postgres`."""
    url = f"sqlite:///{tmp_path / 'signoff.db'}"
    if request.param == "postgres":
        url = os.environ.get("SIGNOFF_TEST_DATABASE_URL", "")
        if not url:
            pytest.skip("SIGNOFF_TEST_DATABASE_URL is not set")
    engine = create_database_engine(url, migrate=False)
    _drop_everything(engine)
    yield engine
    checked_out = engine.pool.checkedout()  # type: ignore[attr-defined]
    _drop_everything(engine)
    engine.dispose()
    assert checked_out == 0, "a test leaked a database connection"


def _schema(engine: Engine) -> dict[str, Any]:
    """What the database holds, per table: columns, primary key, indexes, unique constraints, foreign keys."""
    inspector = inspect(engine)
    return {
        table: {
            "columns": {c["name"]: c["nullable"] for c in inspector.get_columns(table)},
            "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]), _where(engine, i.get("dialect_options", {})))
                for i in inspector.get_indexes(table)
                if "duplicates_constraint" not in i  # PostgreSQL also lists the index behind each UNIQUE constraint
            ),
            "uniques": sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)),
            "foreign_keys": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                for f in inspector.get_foreign_keys(table)
            ),
        }
        for table in inspector.get_table_names()
        if table != "alembic_version"
    }


def _declared_schema(engine: Engine) -> dict[str, Any]:
    """The same shape as `_schema`, read from SQLModel.metadata for the engine's dialect."""
    return {
        table.name: {
            "columns": {c.name: c.nullable for c in table.columns},
            "primary_key": [c.name for c in table.primary_key.columns],
            "indexes": sorted(
                (i.name, tuple(c.name for c in i.columns), i.unique, _declared_where(engine, i)) for i in table.indexes
            ),
            "uniques": sorted(
                tuple(c.name for c in u.columns) for u in table.constraints if isinstance(u, UniqueConstraint)
            ),
            "foreign_keys": sorted(
                (
                    tuple(c.name for c in f.columns),
                    f.referred_table.name,
                    tuple(e.column.name for e in f.elements),
                )
                for f in table.foreign_key_constraints
            ),
        }
        for table in SQLModel.metadata.sorted_tables
    }


def _normalized(predicate: object) -> str | None:
    # PostgreSQL gives back "((status)::text = 'pending'::text)" for "status = 'pending'".
    if predicate is None:
        return None
    return re.sub(r"::[a-z_]+(?: varying)?|[()\s]", "", str(predicate))


def _where(engine: Engine, options: dict[str, Any]) -> str | None:
    return _normalized(options.get(f"{engine.dialect.name}_where"))


def _declared_where(engine: Engine, index: Index) -> str | None:
    return _normalized(index.dialect_options[engine.dialect.name].get("where"))


def test_upgrade_from_empty_creates_every_table_the_models_declare(empty_engine: Engine) -> None:
    assert current_revision(empty_engine) is None

    upgrade(empty_engine)

    assert current_revision(empty_engine) == head_revision()
    schema, declared = _schema(empty_engine), _declared_schema(empty_engine)
    assert sorted(schema) == sorted(declared)
    for table in declared:
        assert schema[table]["columns"] == declared[table]["columns"], table
        assert schema[table]["primary_key"] == declared[table]["primary_key"], table
        assert schema[table]["indexes"] == declared[table]["indexes"], table
        assert schema[table]["uniques"] == declared[table]["uniques"], table
        assert schema[table]["foreign_keys"] == declared[table]["foreign_keys"], table


def test_autogenerate_finds_no_difference_between_the_migrated_database_and_the_models(empty_engine: Engine) -> None:
    upgrade(empty_engine)

    with empty_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": True})
        differences = compare_metadata(context, SQLModel.metadata)

    assert differences == [], "approvals/models.py and integrations/migrations/ disagree; add a migration"


def test_upgrading_twice_changes_nothing_and_keeps_the_rows(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    before = _schema(empty_engine)
    with Session(empty_engine) as session:
        session.add(AuditEvent(kind="allowed", tool="list_connections", hash="h1"))
        session.commit()

    upgrade(empty_engine)

    assert _schema(empty_engine) == before
    assert current_revision(empty_engine) == head_revision()
    with empty_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
        assert connection.execute(text("SELECT tool FROM audit_events")).scalars().all() == ["list_connections"]


def test_downgrade_to_base_removes_every_table_and_upgrade_rebuilds_them(empty_engine: Engine) -> None:
    upgrade(empty_engine)

    with empty_engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")
    assert set(inspect(empty_engine).get_table_names()) <= {"alembic_version"}
    assert current_revision(empty_engine) is None

    upgrade(empty_engine)
    assert set(SQLModel.metadata.tables) <= set(inspect(empty_engine).get_table_names())


def test_create_database_engine_migrates_unless_told_not_to(empty_engine: Engine) -> None:
    url = empty_engine.url.render_as_string(hide_password=False)

    untouched = create_database_engine(url, migrate=False)
    assert current_revision(untouched) is None
    untouched.dispose()

    migrated = create_database_engine(url)
    assert current_revision(migrated) == head_revision()
    assert set(SQLModel.metadata.tables) <= set(inspect(migrated).get_table_names())
    migrated.dispose()


def test_a_database_created_before_migrations_is_refused_by_name(empty_engine: Engine) -> None:
    SQLModel.metadata.create_all(empty_engine)

    with pytest.raises(UnversionedDatabase):
        upgrade(empty_engine)
    assert current_revision(empty_engine) is None


def test_the_head_known_without_alembic_is_the_newest_migration() -> None:
    assert head_revision() == SHIPPED_HEAD


def test_a_server_started_on_a_database_at_head_never_loads_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'signoff.db'}"
    probe = (
        "import sys; from integrations.database import create_database_engine; "
        f"create_database_engine({url!r}); print('alembic' in sys.modules)"
    )

    def loads_alembic() -> bool:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
        return done.stdout.strip() == "True"

    assert loads_alembic()  # a new database is migrated
    assert not loads_alembic()  # at head already: nothing to do, and ~11 MB not loaded


def test_the_lean_audit_indexes_keep_a_log_written_before_them_whole_and_verifiable(empty_engine: Engine) -> None:
    with empty_engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0015")
    with Session(empty_engine) as session:
        append(session, [AuditRecord(kind="allowed", tool="t", identity="a") for _ in range(5)])
        append(session, [AuditRecord(kind="denied", tool="kill", identity="a", rule="tools.kill")])
        session.commit()

    upgrade(empty_engine)

    indexes = {index["name"] for index in inspect(empty_engine).get_indexes("audit_events")}
    assert indexes == {
        "ix_audit_events_at",
        "ix_audit_events_tool",
        "ix_audit_events_identity",
        "ix_audit_events_kind_notable",
    }
    assert inspect(empty_engine).get_unique_constraints("audit_events") == []
    with Session(empty_engine) as session:
        report = verify_chain(session)
        assert (report.checked, report.problem) == (6, None)
        denied = session.exec(of_kind(select(AuditEvent), "denied")).all()
        assert [(row.tool, row.rule) for row in denied] == [("kill", "tools.kill")]
        assert len(session.exec(of_kind(select(AuditEvent), "allowed")).all()) == 5
        if empty_engine.dialect.name == "sqlite":  # the planner takes the partial index for a kind other than allowed
            statement = of_kind(select(col(AuditEvent.id)), "denied").compile(
                empty_engine, compile_kwargs={"literal_binds": True}
            )
            plan = session.connection().exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}").all()
            assert "ix_audit_events_kind_notable" in str(plan)
