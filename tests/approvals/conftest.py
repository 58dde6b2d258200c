import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from integrations.database import create_database_engine, upgrade


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A real database with signoff's tables: an SQLite file always, PostgreSQL under `-m postgres`."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'signoff.db'}"
    else:
        url = os.environ.get("SIGNOFF_TEST_DATABASE_URL", "")
        if not url:
            pytest.skip("SIGNOFF_TEST_DATABASE_URL is not set")
    engine = create_database_engine(url, migrate=False)
    SQLModel.metadata.drop_all(engine)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    upgrade(engine)  # the schema the migrations build, as in production
    yield engine
    checked_out = engine.pool.checkedout()  # type: ignore[attr-defined]
    SQLModel.metadata.drop_all(engine)
    engine.dispose()
    assert checked_out == 0, "a test leaked a database connection"
