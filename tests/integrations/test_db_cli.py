"""`signoff db upgrade` and `signoff db current`, as the Procfile's release step and an operator run them."""

from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlmodel import SQLModel

from integrations.cli import main
from integrations.database import create_database_engine, head_revision


def test_db_current_reports_behind_until_db_upgrade_brings_it_to_head(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "signoff.db"
    config = tmp_path / "signoff.toml"
    config.write_text(f'[gateway]\ndatabase_url = "sqlite:///{database}"\n')

    assert main(["--config", str(config), "db", "current"]) == 1
    assert capsys.readouterr().out == f"current: (none)\nhead:    {head_revision()}\n"

    assert main(["--config", str(config), "db", "upgrade"]) == 0
    assert main(["--config", str(config), "db", "upgrade"]) == 0
    assert f"database upgraded to {head_revision()} (head)" in capsys.readouterr().out

    assert main(["--config", str(config), "db", "current"]) == 0
    assert capsys.readouterr().out == f"current: {head_revision()}\nhead:    {head_revision()}\n"
    engine = create_database_engine(f"sqlite:///{database}", migrate=False)
    assert set(SQLModel.metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_db_upgrade_names_the_setting_when_the_database_predates_migrations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "signoff.db"
    config = tmp_path / "signoff.toml"
    config.write_text(f'[gateway]\ndatabase_url = "sqlite:///{database}"\n')
    engine = create_database_engine(f"sqlite:///{database}", migrate=False)
    SQLModel.metadata.create_all(engine)
    engine.dispose()

    assert main(["--config", str(config), "db", "upgrade"]) == 2
    assert "gateway.database_url" in capsys.readouterr().err
