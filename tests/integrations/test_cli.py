"""The `signoff` command as a user runs it: policy check, a refused config, audit export and verify."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import text
from sqlmodel import Session

from approvals.audit import AuditRecord, append
from integrations.cli import main
from integrations.database import create_database_engine
from integrations.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "policies" / "catalog"
KILL_NEEDS_APPROVAL = {
    "version": "1",
    "default": "allow",
    "tools": {"kill": {"action": "require_approval", "approval": {"approvers": ["alice", "group:dbaa"]}}},
}
SIGNED_BY_ALICE_AND_BOB = (
    '[[approvers]]\nname = "alice"\ntoken = "alice-approver-token"\ngroups = ["dba"]\n\n'
    '[[approvers]]\nname = "bob"\ntoken = "bob-approver-token"\n\n'
)


def run_signoff(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`signoff ARGV` in its own process, as a user runs it, with SIGNOFF_* cleared unless given."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    command = [sys.executable, "-m", "integrations.cli", *argv]
    environment = {**clean, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=30, check=False)


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
    header, *exported = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert header["export"]["filters"] == {"tool": "t1"} and header["export"]["contiguous"] is False
    assert [(e["tool"], e["kind"]) for e in exported] == [("t1", "denied")]
    assert main(["--config", str(config), "audit", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("id,at,kind,server,tool")  # and prev_hash, hash
    assert main(["--config", str(config), "audit", "verify"]) == 0
    assert "audit chain ok: 3 rows verified" in capsys.readouterr().out

    with Session(engine) as session:
        session.execute(text("UPDATE audit_events SET identity = 'mallory' WHERE id = :id"), {"id": tampered})
        session.commit()
    engine.dispose()
    assert main(["--config", str(config), "audit", "verify"]) == 1
    assert f"BROKEN: row {tampered}: its content does not match its hash" in capsys.readouterr().out


def test_serve_refuses_short_and_shared_tokens_and_unknown_approvers_listing_every_fault(tmp_path: Path) -> None:
    (tmp_path / "pg.json").write_text(json.dumps(KILL_NEEDS_APPROVAL))
    (tmp_path / "signoff.toml").write_text(
        '[[agents]]\nname = "ci-bot"\ntoken = "ci-bot-token-0123"\n\n'
        '[[agents]]\nname = "cursor"\ntoken = "short-1"\n\n'
        '[[approvers]]\nname = "alice"\ntoken = "ci-bot-token-0123"\ngroups = ["dba"]\n\n'
        '[[approvers]]\nname = "bob"\ntoken = "bob-approver-token"\n\n'
        '[[approvers]]\nname = "carol"\ntoken = "bob-approver-token"\n\n'
        '[[servers]]\nname = "pg"\nurl = "http://127.0.0.1:9/mcp"\npolicy = "pg.json"\n'
    )
    done = run_signoff(["--config", "signoff.toml", "serve", "--port", "0"], tmp_path)

    assert done.returncode == 2
    assert done.stderr.splitlines()[-6:] == [
        "signoff: signoff.toml: the configuration is refused:",
        "  agents[1].token: is 7 characters; a token needs at least 16 (e.g. `openssl rand -hex 32`)",
        "  approvers[0].token: is the same as agents[0].token (agent 'ci-bot'), so that agent could approve its own"
        " calls through /api; give each their own",
        "  approvers[2].token: is the same as approvers[1].token (approver 'bob'), so either could decide as the"
        " other; give each their own",
        "  servers[0].policy (pg) is invalid:",
        f'    {tmp_path / "pg.json"}: $.tools["kill"].approval.approvers[1]: error: "group:dbaa" names no configured'
        ' approver or group (hint: did you mean "group:dba"? configured: alice, bob, carol, group:dba)',
    ]
    assert "ci-bot-token-0123" not in done.stderr and "bob-approver-token" not in done.stderr


def test_policy_check_with_a_config_refuses_approvers_it_does_not_configure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "pg.json"
    policy.write_text(json.dumps(KILL_NEEDS_APPROVAL))
    config = tmp_path / "signoff.toml"
    config.write_text(SIGNED_BY_ALICE_AND_BOB)

    assert main(["policy", "check", str(policy)]) == 0
    assert capsys.readouterr().out == f"{policy}: ok\n"
    assert main(["policy", "check", "--config", str(config), str(policy)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"approvers checked against {config}: alice, bob, group:dba",
        f'{policy}: $.tools["kill"].approval.approvers[1]: error: "group:dbaa" names no configured approver or group'
        ' (hint: did you mean "group:dba"? configured: alice, bob, group:dba)',
        "1 error(s), 0 warning(s) in 1 file(s)",
    ]
    assert main(["--config", str(config), "policy", "check", str(policy)]) == 1


def test_the_demo_approver_token_is_random_at_each_start_unless_chosen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first, second = (load_settings(environ={}).approvers[0].token for _ in range(2))
    chosen = load_settings(environ={"SIGNOFF_DEMO_APPROVER_TOKEN": "my-demo-approver-token"}).approvers[0].token

    assert first is not None and second is not None and chosen is not None
    assert first.get_secret_value() != second.get_secret_value()
    assert len(first.get_secret_value()) >= 16
    assert chosen.get_secret_value() == "my-demo-approver-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_the_demo_banner_shows_the_approver_token_the_approvals_page_and_an_approve_command(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "integrations.cli", "serve", "--port", str(port), "--log-level", "warning"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    env = {**clean, "PYTHONPATH": str(ROOT), "SIGNOFF_DEMO_APPROVER_TOKEN": "chosen-demo-approver-token"}
    approver = {"Authorization": "Bearer chosen-demo-approver-token"}
    with subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            banner = [process.stdout.readline() for _ in range(10)]  # the banner is out; uvicorn starts next
            with httpx2.Client(base_url=base, timeout=5, headers=approver) as http:
                for _ in range(200):  # the bounded poll until uvicorn listens
                    try:
                        listed = http.get("/api/approvals")
                        break
                    except httpx2.TransportError:
                        time.sleep(0.05)
        finally:
            process.kill()

    assert f"  approvals page : {base}/approvals   (sign in with the approver token)\n" in banner
    assert "  approver token : chosen-demo-approver-token   (set SIGNOFF_DEMO_APPROVER_TOKEN to choose it)\n" in banner
    assert (
        f"  approve        : signoff approve ID --token chosen-demo-approver-token --url {base}"
        "   (ID: on the approvals page; its first 8 characters will do)\n"
    ) in banner
    assert listed.status_code == 200  # the printed token signs in


def test_the_demo_refuses_a_host_beyond_loopback_and_says_how_to_serve_a_gateway(tmp_path: Path) -> None:
    refused = run_signoff(["serve", "--host", "0.0.0.0"], tmp_path)  # noqa: S104 - what the demo must refuse

    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1] == (
        "signoff: refusing to serve the demo on 0.0.0.0: with no servers configured signoff serves its demo, which"
        " prints its tokens and listens on loopback only. Give --config (or $SIGNOFF_CONFIG, or ./signoff.toml) to"
        " serve your gateway, or add --public-demo to serve the demo on 0.0.0.0 anyway (e.g. in a container)"
    )
    assert not (tmp_path / "signoff.db").exists()


def test_the_procfile_app_refuses_to_start_without_a_config(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "uvicorn", "integrations.app:app", "--host", "127.0.0.1", "--port", "0"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    env = {**clean, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30, check=False)

    assert done.returncode == 3  # uvicorn's "startup failed"
    assert (
        f"ERROR:    signoff: no config: there is no signoff.toml in {tmp_path} and $SIGNOFF_CONFIG is not set. A"
        " deployment needs a config naming its agents, approvers and servers; the demo runs only from `signoff"
        " serve`, on loopback"
    ) in done.stderr.splitlines()
    assert "Uvicorn running" not in done.stderr


def test_config_is_taken_after_the_command_too_and_version_and_bare_signoff_help(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "audit.db"
    config = tmp_path / "elsewhere.toml"
    config.write_text(f'[gateway]\ndatabase_url = "sqlite:///{database}"\n')

    assert main(["audit", "verify", "--config", str(config)]) == 0
    after = capsys.readouterr().out
    assert main([f"--config={config}", "audit", "verify"]) == 0
    before = capsys.readouterr().out
    assert main([]) == 0
    bare = capsys.readouterr().out
    with pytest.raises(SystemExit) as version:
        main(["--version"])
    shown = capsys.readouterr().out
    with pytest.raises(SystemExit) as missing:
        main(["audit", "--config"])

    assert after == before and after.startswith("audit chain ok")
    assert database.exists()  # the config named after the command was the one read
    assert bare.startswith("usage: signoff") and "serve" in bare and "approvals" in bare
    assert version.value.code == 0 and shown.startswith("signoff ")
    assert missing.value.code == 2 and "expected one argument" in capsys.readouterr().err
