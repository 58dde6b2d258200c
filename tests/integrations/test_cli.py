"""The `signoff` command as a user runs it: policy check, a refused config, audit export and verify."""

import json
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import Session

from approvals.audit import AuditRecord, append
from integrations.cli import main
from integrations.database import create_database_engine

CATALOG = Path(__file__).resolve().parents[2] / "policies" / "catalog"


def test_policy_check_passes_the_catalog_and_warns_about_policies_that_allow_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = sorted(str(p) for p in CATALOG.glob("*.json"))
    code = main(["policy", "check", *files])
    out = capsys.readouterr().out

    assert code == 0
    assert f"{CATALOG / 'postgres.json'}: ok" in out
    assert "livetap.json: $: warning:" in out and "allows nothing" in out
    assert main(["policy", "check", "--strict", str(CATALOG / "livetap.json")]) == 1


def test_policy_check_prints_every_fault_with_its_path_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "version": "1",
                "default": "allow",
                "tool": {},
                "tools": {
                    "kill_[": {"action": "deny"},
                    "x": {"deny_if": [{"arg": "pid", "op": "less", "value": 1}]},
                    "y": {"limits": [{"counter": "c", "window": "fortnight", "max": 1}]},
                },
            }
        )
    )
    code = main(["policy", "check", str(bad), str(tmp_path / "missing.json")])
    out = capsys.readouterr().out

    assert code == 1
    assert f"{bad}: $.tool: error:" in out
    assert 'tools["kill_["]' in out
    assert 'tools["x"].deny_if[0].op: error:' in out
    assert 'tools["y"].limits[0].window: error:' in out
    assert "missing.json: error: cannot read the file" in out


def test_serve_refuses_an_invalid_policy_with_its_faults(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.json").write_text('{"version": "1", "default": "maybe"}')
    config = tmp_path / "signoff.toml"
    config.write_text(
        '[[agents]]\nname = "a"\ntoken = "long-enough-token"\n\n'
        '[[servers]]\nname = "s"\nurl = "http://127.0.0.1:9/mcp"\npolicy = "p.json"\n'
    )
    code = main(["--config", str(config), "serve"])
    err = capsys.readouterr().err

    assert code == 2
    assert "servers[0].policy (s) is invalid:" in err
    assert "$.default: error:" in err


def test_serve_refuses_a_config_naming_an_unset_variable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "signoff.toml"
    config.write_text('[[agents]]\nname = "a"\ntoken = "${SIGNOFF_TEST_SURELY_UNSET_TOKEN}"\n')

    assert main(["--config", str(config), "serve"]) == 2
    assert "agents[0].token: environment variable SIGNOFF_TEST_SURELY_UNSET_TOKEN is not set" in capsys.readouterr().err


def test_audit_exports_and_verify_names_a_tampered_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database = tmp_path / "audit.db"
    config = tmp_path / "signoff.toml"
    config.write_text(f'[gateway]\ndatabase_url = "sqlite:///{database}"\n')
    engine = create_database_engine(f"sqlite:///{database}")
    with Session(engine) as session:
        written = [AuditRecord(kind="denied", server="demo", tool=f"t{i}", identity="alpha") for i in range(3)]
        rows = append(session, written)
        session.commit()
        session.commit()
        tampered = rows[1]

    assert main(["--config", str(config), "audit", "--format", "jsonl", "--tool", "t1"]) == 0
    exported = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["tool"], e["kind"]) for e in exported] == [("t1", "denied")]
    assert main(["--config", str(config), "audit", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("id,at,kind,server,tool")
    assert main(["--config", str(config), "audit", "verify"]) == 0
    assert "audit chain ok: 3 rows verified" in capsys.readouterr().out

    with Session(engine) as session:
        session.execute(text("UPDATE audit_events SET identity = 'mallory' WHERE id = :id"), {"id": tampered})
        session.commit()
    engine.dispose()
    assert main(["--config", str(config), "audit", "verify"]) == 1
    assert f"BROKEN at row {tampered}" in capsys.readouterr().out
