"""Signed checkpoints through the real CLI on SQLite and PostgreSQL: what a database editor can do to the audit log,
what plain `verify` missed, and what checkpoints (in the database, in a file kept elsewhere, in an export) catch."""

import json
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import Session, col, select

from approvals.audit import AuditRecord, append, row_hash, verify_chain
from approvals.models import AuditEvent
from integrations.audit_sinks import exported_record
from integrations.cli import main
from integrations.database import create_database_engine

Run = tuple[int, str, str]
Cli = Callable[..., Run]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    def run(*argv: str) -> Run:
        code = main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def write_config(tmp_path: Path, url: str, *, key: Path | None = None, checkpoints: Path | None = None) -> Path:
    lines = ["[gateway]", f'database_url = "{url}"', "", "[audit]"]
    if key is not None:
        lines.append(f'signing_key_file = "{key}"')
    if checkpoints is not None:
        lines.append(f'checkpoint_file = "{checkpoints}"')
    config = tmp_path / "signoff.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def add_rows(url: str, count: int, *, at: datetime | None = None, tool: str = "kill") -> None:
    engine = create_database_engine(url)
    with Session(engine) as session:
        moment = at or datetime.now(UTC)
        append(session, [AuditRecord(kind="allowed", server="pg", tool=tool, identity="ci", at=moment)] * count)
        session.commit()
    engine.dispose()


def ids(url: str) -> list[int]:
    engine = create_database_engine(url)
    with Session(engine) as session:
        found = [row_id or 0 for row_id in session.exec(select(AuditEvent.id).order_by(col(AuditEvent.id)))]
    engine.dispose()
    return found


def execute(url: str, sql: str, **params: object) -> None:
    engine = create_database_engine(url)
    with engine.begin() as connection:
        connection.execute(text(sql), params)
    engine.dispose()


def truncate(url: str, count: int) -> None:
    """The first attack: delete the newest `count` rows (the chain that is left is intact)."""
    execute(url, "DELETE FROM audit_events WHERE id > :keep", keep=ids(url)[-count - 1])


def rewrite(url: str, row_id: int) -> None:
    """The second attack: edit a row, then recompute its hash and every later one, so every link holds again."""
    engine = create_database_engine(url)
    with Session(engine) as session:
        session.execute(text("UPDATE audit_events SET identity = 'nobody' WHERE id = :id"), {"id": row_id})
        rows = list(session.exec(select(AuditEvent).where(col(AuditEvent.id) >= row_id).order_by(col(AuditEvent.id))))
        prev = session.exec(
            select(AuditEvent.hash).where(col(AuditEvent.id) < row_id).order_by(col(AuditEvent.id).desc())
        ).first()
        prev = prev or "0" * 64
        fixed = []
        for row in rows:
            new = row_hash(prev, row.model_dump())
            fixed.append({"id": row.id, "prev": prev, "hash": new})
            prev = new
        session.execute(text("UPDATE audit_events SET hash = 'x' || id WHERE id >= :id"), {"id": row_id})  # unique
        session.execute(text("UPDATE audit_events SET prev_hash = :prev, hash = :hash WHERE id = :id"), fixed)
        session.commit()
    engine.dispose()


def drop_checkpoints(url: str) -> None:
    """What the same editor does next: remove the checkpoints in the database that would give the edit away."""
    execute(url, "DELETE FROM audit_checkpoints")


@pytest.fixture
def key(tmp_path: Path, cli: Cli) -> tuple[Path, str]:
    path = tmp_path / "audit-key.pem"
    code, out, _ = cli("audit", "key", "--generate", "--out", str(path))
    assert code == 0
    public = next(line.removeprefix("public key: ") for line in out.splitlines() if line.startswith("public key: "))
    return path, public


def test_without_checkpoints_truncation_and_a_rewritten_tail_pass_verify(
    tmp_path: Path, shared_database: str, cli: Cli
) -> None:
    config = str(write_config(tmp_path, shared_database))
    add_rows(shared_database, 50)

    truncate(shared_database, 20)
    code, out, _ = cli("--config", config, "audit", "verify")
    assert code == 0 and "audit chain ok: 30 rows verified" in out
    assert "no signing key configured" in out  # and it says what that leaves unproven

    rewrite(shared_database, ids(shared_database)[5])
    code, out, _ = cli("--config", config, "audit", "verify")
    assert code == 0 and "audit chain ok: 30 rows verified" in out


def test_checkpoints_detect_truncation_in_the_database_and_against_a_file_kept_elsewhere(
    tmp_path: Path, shared_database: str, key: tuple[Path, str], cli: Cli
) -> None:
    copies = tmp_path / "elsewhere" / "checkpoints.jsonl"
    copies.parent.mkdir()
    config = str(write_config(tmp_path, shared_database, key=key[0], checkpoints=copies))
    add_rows(shared_database, 50)
    code, out, _ = cli("--config", config, "audit", "checkpoint")
    assert code == 0 and f"checkpoint of row {ids(shared_database)[-1]} signed" in out
    add_rows(shared_database, 5)

    code, out, _ = cli("--config", config, "audit", "verify")
    assert code == 0 and "audit chain ok: 55 rows verified, from the log's first row" in out
    assert "1 signed checkpoint(s) verified" in out and "unanchored: 5 row(s) after the last checkpoint" in out
    assert [json.loads(line)["checkpoint"]["row_id"] for line in copies.read_text().splitlines()] == [
        ids(shared_database)[49]
    ]

    truncate(shared_database, 20)
    code, out, _ = cli("--config", config, "audit", "verify")
    assert code == 1 and "rows were removed from the end" in out

    drop_checkpoints(shared_database)
    code, out, _ = cli("--config", config, "audit", "verify")
    assert code == 0  # the database alone no longer shows it...
    code, out, _ = cli("--config", config, "audit", "verify", "--against", str(copies))
    assert code == 1 and "rows were removed from the end" in out  # ...the copy kept elsewhere does
    assert "1 of them no longer in the database" in out


def test_checkpoints_detect_a_rewritten_tail_and_a_forged_checkpoint(
    tmp_path: Path, shared_database: str, key: tuple[Path, str], cli: Cli
) -> None:
    copies = tmp_path / "checkpoints.jsonl"
    config = str(write_config(tmp_path, shared_database, key=key[0], checkpoints=copies))
    add_rows(shared_database, 30)
    assert cli("--config", config, "audit", "checkpoint")[0] == 0
    add_rows(shared_database, 10)
    edited = ids(shared_database)[5]

    rewrite(shared_database, edited)
    code, out, _ = cli("--config", config, "audit", "verify")
    assert code == 1 and "is not the one the checkpoint" in out and "rewritten" in out

    drop_checkpoints(shared_database)
    assert cli("--config", config, "audit", "verify")[0] == 0
    code, out, _ = cli("--config", config, "audit", "verify", "--against", str(copies))
    assert code == 1 and "rewritten" in out

    # The editor cannot sign: a checkpoint made up to cover the edit has a bad signature.
    forged = json.loads(copies.read_text())["checkpoint"]
    forged["hash"] = "f" * 64
    execute(
        shared_database,
        "INSERT INTO audit_checkpoints (row_id, hash, at, kind, key_id, signature)"
        " VALUES (:row_id, :hash, :at, :kind, :key_id, :signature)",
        **{**forged, "at": datetime.fromisoformat(forged["at"])},
    )
    code, out, _ = cli("--config", config, "audit", "verify")
    assert code == 1 and "its signature is bad" in out


def test_an_auditor_verifies_with_the_public_key_alone(
    tmp_path: Path, shared_database: str, key: tuple[Path, str], cli: Cli
) -> None:
    signer = str(write_config(tmp_path, shared_database, key=key[0]))
    add_rows(shared_database, 12)
    assert cli("--config", signer, "audit", "checkpoint")[0] == 0
    code, out, err = cli("--config", signer, "audit", "key")
    assert code == 0 and out.strip() == key[1] and "key id:" in err

    auditor_dir = tmp_path / "auditor"
    auditor_dir.mkdir()
    auditor = str(write_config(auditor_dir, shared_database))  # no signing key here
    code, out, _ = cli("--config", auditor, "audit", "verify", "--key", key[1])
    assert code == 0 and "1 signed checkpoint(s) verified" in out and "unanchored: 0" in out
    code, out, _ = cli("--config", auditor, "audit", "verify")
    assert code == 0 and "1 found, not checked: no public key" in out

    other = tmp_path / "other.pem"
    assert cli("audit", "key", "--generate", "--out", str(other))[0] == 0
    other_public = cli("--config", str(write_config(auditor_dir, shared_database, key=other)), "audit", "key")[1]
    code, out, _ = cli("--config", auditor, "audit", "verify", "--key", other_public.strip())
    assert code == 1 and "which was not given" in out  # fail closed: a checkpoint nobody can check is no anchor


def test_key_generate_writes_a_private_file_and_refuses_to_overwrite_it(tmp_path: Path, cli: Cli) -> None:
    path = tmp_path / "k.pem"
    code, out, _ = cli("audit", "key", "--generate", "--out", str(path))
    assert code == 0 and "public key: " in out and "PRIVATE KEY" not in out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    code, _, err = cli("audit", "key", "--generate", "--out", str(path))
    assert code == 2 and "never overwritten" in err

    config = tmp_path / "signoff.toml"
    config.write_text('[audit]\nsigning_key = "bm90IGEga2V5"\n')
    code, _, err = cli("--config", str(config), "audit", "key")
    assert code == 2 and "audit.signing_key: the signing key is 9 bytes; an Ed25519 key is 32" in err
    code, _, err = cli("--config", str(config), "serve")
    assert code == 2 and "audit.signing_key: the signing key is 9 bytes" in err  # refused before serving
    config.write_text(f'[audit]\nsigning_key_file = "{path}"\nsigning_key = "x"\n')
    code, _, err = cli("--config", str(config), "audit", "key")
    assert code == 2 and "give signing_key or signing_key_file, not both" in err
    config.write_text("[audit]\n")
    code, _, err = cli("--config", str(config), "audit", "key")
    assert code == 2 and "no signing key configured" in err
    code, _, err = cli("--config", str(config), "audit", "checkpoint")
    assert code == 2 and "needs a signing key" in err


def test_an_export_verifies_on_its_own_and_shows_what_was_done_to_it(
    tmp_path: Path, shared_database: str, key: tuple[Path, str], cli: Cli
) -> None:
    copies = tmp_path / "checkpoints.jsonl"
    config = str(write_config(tmp_path, shared_database, key=key[0], checkpoints=copies))
    add_rows(shared_database, 1500, tool="add")  # more than one batch of the export
    assert cli("--config", config, "audit", "checkpoint")[0] == 0
    add_rows(shared_database, 3, tool="kill")

    code, out, _ = cli("--config", config, "audit", "--format", "jsonl")
    lines = out.splitlines()
    rows = [json.loads(line) for line in lines if '"checkpoint"' not in line and '"export"' not in line]
    assert code == 0 and len(rows) == 1503 and all(row["prev_hash"] and row["hash"] for row in rows)
    export = tmp_path / "export.jsonl"
    export.write_text(out)
    code, out, _ = cli("audit", "verify", "--file", str(export), "--key", key[1])
    assert code == 0 and "1503 rows verified, from the log's first row" in out
    assert "1 signed checkpoint(s) verified" in out and "unanchored: 3 row(s)" in out

    # Newest first: lines 1-3 are the unanchored rows, 4 the checkpointed row, 5 its checkpoint.
    assert '"checkpoint"' in lines[5] and json.loads(lines[5])["checkpoint"]["row_id"] == json.loads(lines[4])["id"]
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join([lines[0], *lines[5:]]) + "\n")
    code, out, _ = cli("audit", "verify", "--file", str(cut), "--key", key[1])
    assert code == 1 and "rows were removed from the end" in out
    cut.write_text("\n".join([lines[0], *lines[6:]]) + "\n")  # and its checkpoint with it: only a copy tells
    assert cli("audit", "verify", "--file", str(cut), "--key", key[1])[0] == 0
    code, out, _ = cli("audit", "verify", "--file", str(cut), "--key", key[1], "--against", str(copies))
    assert code == 1 and "rows were removed from the end" in out
    edited = tmp_path / "edited.jsonl"
    edited.write_text(out_of(export).replace('"identity":"ci"', '"identity":"me"', 1))
    code, out, _ = cli("audit", "verify", "--file", str(edited), "--key", key[1])
    assert code == 1 and "its content does not match its hash" in out
    holed = tmp_path / "holed.jsonl"
    holed.write_text("\n".join([*lines[:100], *lines[101:]]) + "\n")
    code, out, _ = cli("audit", "verify", "--file", str(holed), "--key", key[1])
    assert code == 1 and "prev_hash does not match" in out

    code, out, _ = cli("--config", config, "audit", "--format", "jsonl", "--tool", "kill")
    (tmp_path / "kill.jsonl").write_text(out)
    code, out, _ = cli("audit", "verify", "--file", str(tmp_path / "kill.jsonl"), "--key", key[1])
    assert code == 0 and "3 rows verified" in out and "a partial export (filtered or limited)" in out
    code, out, _ = cli("--config", config, "audit", "--format", "jsonl", "--limit", "2")
    assert len([line for line in out.splitlines() if '"hash"' in line and '"checkpoint"' not in line]) == 2
    code, out, _ = cli("--config", config, "audit", "--format", "csv", "--limit", "2")
    assert out.splitlines()[0].endswith(",prev_hash,hash") and len(out.splitlines()) == 3


def out_of(path: Path) -> str:
    return path.read_text()


def test_archive_moves_old_rows_to_a_file_that_verifies_and_the_kept_log_still_verifies(
    tmp_path: Path, shared_database: str, key: tuple[Path, str], cli: Cli
) -> None:
    copies = tmp_path / "checkpoints.jsonl"
    config = str(write_config(tmp_path, shared_database, key=key[0], checkpoints=copies))
    add_rows(shared_database, 40, at=datetime.now(UTC) - timedelta(days=120))
    assert cli("--config", config, "audit", "checkpoint")[0] == 0
    add_rows(shared_database, 20, at=datetime.now(UTC) - timedelta(days=100))
    add_rows(shared_database, 15)
    last_old = ids(shared_database)[59]

    archive = tmp_path / "archive.jsonl.gz"
    code, out, _ = cli("--config", config, "audit", "archive", "--before", "90d", "--out", str(archive))
    assert code == 0 and f"archived 60 rows (through row {last_old}" in out and "15 rows kept" in out
    assert len(ids(shared_database)) == 15
    code, out, _ = cli("audit", "verify", "--file", str(archive), "--key", key[1])
    assert code == 0 and "60 rows verified, from the log's first row" in out and "unanchored: 0" in out
    code, out, _ = cli("--config", config, "audit", "verify")
    assert code == 0 and f"15 rows verified, after row {last_old}, joined by the archive checkpoint" in out
    assert cli("--config", config, "audit", "verify", "--against", str(copies))[0] == 0
    engine = create_database_engine(shared_database)
    with Session(engine) as session:
        assert verify_chain(session).ok  # the web page's check accepts the archive's join too
    engine.dispose()
    code, out, _ = cli("--config", config, "audit", "archive", "--before", "90d", "--out", str(archive))
    assert code == 1 and "exists" in out + _

    # A second archive starts where the first ended, and verifies on its own too.
    add_rows(shared_database, 2)
    second = tmp_path / "second.jsonl"
    soon = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()  # a date this time: every row is before it
    code, out, _ = cli("--config", config, "audit", "archive", "--before", soon, "--out", str(second))
    assert code == 0 and "archived 16 rows" in out and "1 rows kept" in out
    code, out, _ = cli("audit", "verify", "--file", str(second), "--key", key[1])
    assert code == 0 and f"after row {last_old}, joined by the archive checkpoint" in out
    assert cli("--config", config, "audit", "verify")[0] == 0

    # Removing the first kept row now shows: nothing joins the log's start to the archive any more.
    add_rows(shared_database, 3)
    execute(shared_database, "DELETE FROM audit_events WHERE id = :id", id=ids(shared_database)[0])
    code, out, _ = cli("--config", config, "audit", "verify")
    assert code == 1 and "rows were removed from the start" in out


def test_archive_needs_a_signing_key_and_refuses_a_broken_chain(
    tmp_path: Path, shared_database: str, key: tuple[Path, str], cli: Cli
) -> None:
    add_rows(shared_database, 5, at=datetime.now(UTC) - timedelta(days=200))
    add_rows(shared_database, 1)
    out_file = tmp_path / "a.jsonl"
    code, _, err = cli(
        "--config",
        str(write_config(tmp_path, shared_database)),
        "audit",
        "archive",
        "--before",
        "90d",
        "--out",
        str(out_file),
    )
    assert code == 2 and "needs a signing key" in err
    config = str(write_config(tmp_path, shared_database, key=key[0]))
    execute(shared_database, "UPDATE audit_events SET tool = 'edited' WHERE id = :id", id=ids(shared_database)[2])
    code, _, err = cli("--config", config, "audit", "archive", "--before", "90d", "--out", str(out_file))
    assert code == 1 and "do not verify, so none were removed" in err
    assert not out_file.exists() and len(ids(shared_database)) == 6
    code, _, err = cli("--config", config, "audit", "archive", "--before", "someday", "--out", str(out_file))
    assert code == 2 and "neither a duration" in err


def test_cutting_the_start_at_a_checkpoint_is_not_mistaken_for_an_archive(
    tmp_path: Path, shared_database: str, key: tuple[Path, str], cli: Cli
) -> None:
    config = str(write_config(tmp_path, shared_database, key=key[0]))
    add_rows(shared_database, 30)
    assert cli("--config", config, "audit", "checkpoint")[0] == 0
    add_rows(shared_database, 10)

    execute(shared_database, "DELETE FROM audit_events WHERE id <= :id", id=ids(shared_database)[29])
    code, out, _ = cli("--config", config, "audit", "verify")
    assert code == 1 and "rows were removed from the start" in out


def test_the_json_lines_audit_to_sends_verify_against_the_checkpoints(
    tmp_path: Path, shared_database: str, key: tuple[Path, str], cli: Cli
) -> None:
    copies = tmp_path / "checkpoints.jsonl"
    config = str(write_config(tmp_path, shared_database, key=key[0], checkpoints=copies))
    add_rows(shared_database, 5)
    assert cli("--config", config, "audit", "checkpoint")[0] == 0
    add_rows(shared_database, 5)
    engine = create_database_engine(shared_database)
    with Session(engine) as session:  # as [telemetry] audit_to = ["stdout"] writes them, from the 3rd row on
        rows = list(session.exec(select(AuditEvent).order_by(col(AuditEvent.id))))[2:]
        shipped = "".join(json.dumps({"signoff_audit": exported_record(r.model_dump())}) + "\n" for r in rows)
    engine.dispose()
    (tmp_path / "shipped.jsonl").write_text(shipped)

    code, out, _ = cli(
        "audit", "verify", "--file", str(tmp_path / "shipped.jsonl"), "--key", key[1], "--against", str(copies)
    )
    assert code == 0 and "8 rows verified" in out and "1 signed checkpoint(s) verified" in out
    assert "unanchored: 5 row(s)" in out and "no export header" in out
    (tmp_path / "shipped.jsonl").write_text(shipped.replace('"identity": "ci"', '"identity": "xx"', 1))
    code, out, _ = cli("audit", "verify", "--file", str(tmp_path / "shipped.jsonl"), "--key", key[1])
    assert code == 1 and "its content does not match its hash" in out


def test_a_large_archive_is_removed_in_steps_and_leaves_one_archive_checkpoint(
    tmp_path: Path, shared_database: str, key: tuple[Path, str], cli: Cli
) -> None:
    config = str(write_config(tmp_path, shared_database, key=key[0]))
    add_rows(shared_database, 12_001, at=datetime.now(UTC) - timedelta(days=120))  # three steps of 5,000 or less
    add_rows(shared_database, 5)
    archive = tmp_path / "archive.jsonl.gz"

    code, out, _ = cli("--config", config, "audit", "archive", "--before", "90d", "--out", str(archive))
    assert code == 0 and "archived 12001 rows" in out and "5 rows kept" in out
    engine = create_database_engine(shared_database)
    with Session(engine) as session:
        kinds = list(session.execute(text("SELECT kind FROM audit_checkpoints")).scalars())
    engine.dispose()
    assert kinds == ["archive"]  # each step's own checkpoint went with the next step
    code, out, _ = cli("--config", config, "audit", "verify")
    assert code == 0 and "5 rows verified" in out and "joined by the archive checkpoint" in out
    code, out, _ = cli("audit", "verify", "--file", str(archive), "--key", key[1])
    assert code == 0 and "12001 rows verified, from the log's first row" in out
