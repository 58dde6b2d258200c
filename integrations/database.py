"""The database engine and its schema: SQLite by default, PostgreSQL (`postgresql+psycopg://`) for several replicas.

Tables are created and changed only by the Alembic migrations in `integrations/migrations/`, never by `create_all`.
Alembic itself is imported only when a migration has to run: with Mako and Pygments it weighs ~11 MB, which a
server started on a database already at head (the Procfile's `release:` step migrated it) never carries.
"""

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import SQLModel, create_engine

import approvals.models  # noqa: F401 - registers every table on SQLModel.metadata
from integrations.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration in MIGRATIONS, known without Alembic (a test keeps the two in step).
SHIPPED_HEAD = "0016"

# Any constant shared by every signoff process; replicas that start together take turns migrating.
_MIGRATION_LOCK_KEY = 0x5160FF
POOL_SIZE, POOL_OVERFLOW = 5, 5  # PostgreSQL connections per process
CHECKPOINT_INTERVAL = 1.0  # seconds between background checkpoints of SQLite's write-ahead log
AUTOCHECKPOINT_PAGES = 10_000  # where SQLite would checkpoint by itself, in the committing transaction


class UnversionedDatabase(ConfigError):
    """Raised when the database has signoff's tables but no Alembic revision: it predates migrations."""

    def __init__(self, tables: list[str]) -> None:
        super().__init__(
            f"gateway.database_url: the database has tables ({', '.join(tables)}) but no alembic_version; "
            "it was created before signoff used migrations, so move it aside or drop those tables and start again"
        )
        self.tables = tables


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (the API, `signoff audit`) run while the gateway appends; busy_timeout makes a
    # second process wait for the write lock instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    # SQLite's own checkpoint only bounds the log now (~40 MB); `checkpoint_wal` keeps it short.
    cursor.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
    cursor.close()


async def checkpoint_wal(engine: Engine, interval: float = CHECKPOINT_INTERVAL) -> None:
    """Copy SQLite's write-ahead log into the database file every `interval` seconds, beside the transactions.

    Otherwise the commit that finds 1,000 pages in the log copies them itself, with an fsync: with 10,000 calls
    held, one decision in ~33 waited 15-20 ms for it. A passive checkpoint takes no lock writers or readers wait
    on, and kept up like this the log never grows to where SQLite's own checkpoint (the fallback, at
    AUTOCHECKPOINT_PAGES) starts.
    """
    while True:
        await anyio.sleep(interval)
        try:
            await anyio.to_thread.run_sync(_checkpoint, engine)
        except Exception:  # a background loop's top-level handler: SQLite's own checkpoint still bounds the log
            logger.exception("Checkpointing the SQLite write-ahead log failed")


def _checkpoint(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")


def transaction_slots(engine: Engine) -> int:
    """How many transactions are worth running at once: one on SQLite, whose writers take turns anyway (a second
    worker thread would only wait on the lock), as many as the pool has connections on PostgreSQL."""
    return 1 if engine.dialect.name == "sqlite" else POOL_SIZE + POOL_OVERFLOW


def create_database_engine(url: str, *, migrate: bool = True) -> Engine:
    """An engine for `url`, migrated to head unless `migrate` is false; SQLite gets WAL and a busy timeout."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)
    if migrate:
        upgrade(engine)
    return engine


def alembic_config(connection: Connection | None = None) -> "Config":
    """Alembic's configuration, built in code: the migrations ship inside the package and no alembic.ini exists.

    Migrations run on `connection` (see `migrations/env.py`). To write a new one after changing `approvals/models.py`:
    `with engine.begin() as c: alembic.command.revision(alembic_config(c), "what changed", autogenerate=True)`.
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(engine_or_url: Engine | str) -> None:
    """Bring the database to the newest migration; at the newest already, it changes nothing."""
    engine = create_database_engine(engine_or_url, migrate=False) if isinstance(engine_or_url, str) else engine_or_url
    try:
        if _recorded_revision(engine) == SHIPPED_HEAD:
            return
        from alembic import command
        from alembic.runtime.migration import MigrationContext

        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Held until this transaction ends: a second replica waits here, then finds the schema at head.
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
            if MigrationContext.configure(connection).get_current_revision() is None:
                existing = sorted(set(inspect(connection).get_table_names()) & set(SQLModel.metadata.tables))
                if existing:
                    raise UnversionedDatabase(existing)
            command.upgrade(alembic_config(connection), "head")
    finally:
        if engine is not engine_or_url:
            engine.dispose()


def _recorded_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:  # no alembic_version table: a new database, or one from before migrations
        return None


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at, or None when it has none yet."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    """The newest migration shipped with this version of signoff, as Alembic reads it from MIGRATIONS."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS}")
    return head
