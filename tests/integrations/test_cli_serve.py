"""`signoff serve` on a real config as an on-call engineer reads it, and commands run where there is no config."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx2

from tests.conftest import connect
from tests.integrations.test_cli import ROOT, free_port, run_signoff

CONFIG = """
[gateway]
port = {port}

[[agents]]
name = "claude"
token = "${{SIGNOFF_AGENT_TOKEN}}"

[[approvers]]
name = "alice"
token = "alice-approver-token"
slack_user = "U0ALICE"

[[approvers]]
name = "bob"
token = "bob-approver-token"

[[servers]]
name = "demo"
command = ["{python}", "-m", "integrations.demo"]
policy = "catalog:demo"

[[servers]]
name = "pg"
url = "https://user:secret-password@pg.internal:8443/mcp?key=secret-key"
policy = "catalog:postgres"
"""


async def tool_names(url: str) -> list[str]:
    async with connect(url, "agent-token-from-dotenv") as client:
        return [tool.name for tool in (await client.list_tools()).tools]


def test_serve_summarises_a_real_config_and_logs_json_lines_without_the_scheduler_internals(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "signoff.toml").write_text(CONFIG.format(port=port, python=sys.executable))
    (tmp_path / ".env").write_text("# read at start\nSIGNOFF_AGENT_TOKEN=agent-token-from-dotenv\n")
    command = [sys.executable, "-m", "integrations.cli", "serve", "--log-format", "json"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    env = {**clean, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
                for _ in range(300):  # the bounded poll until uvicorn listens
                    try:
                        health = http.get("/healthz")
                        break
                    except httpx2.TransportError:
                        time.sleep(0.05)
            listed = anyio.run(tool_names, f"http://127.0.0.1:{port}/mcp/demo")
        finally:
            process.terminate()
            out, err = process.communicate(timeout=20)

    base = f"http://127.0.0.1:{port}"
    assert health.status_code in (200, 503)
    assert "list_connections" in listed  # the agent's token came from .env
    assert out.splitlines()[:7] == [
        "signoff serves signoff.toml:",
        "  MCP endpoints:",
        f"    demo : {base}/mcp/demo   (stdio: {Path(sys.executable).name}; policy {ROOT}/policies/catalog/demo.json)",
        f"    pg   : {base}/mcp/pg   (https://pg.internal:8443/mcp; policy {ROOT}/policies/catalog/postgres.json)",
        f"  approvals page : {base}/approvals",
        "  approvers      : alice (slack), bob",
        "  slack          : off (no [slack] section)",
    ]
    assert "secret-" not in out and "secret-" not in err
    lines = [json.loads(line) for line in err.splitlines()]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert any(line["message"].startswith("Uvicorn running on") for line in lines)
    assert not [line for line in lines if line["logger"].startswith("apscheduler")]


def test_commands_that_read_state_refuse_to_run_without_a_config_and_say_where_they_looked(tmp_path: Path) -> None:
    refused = {
        "approvals list": run_signoff(["approvals", "list"], tmp_path),
        "audit": run_signoff(["audit"], tmp_path),
        "audit verify": run_signoff(["audit", "verify"], tmp_path),
        "grants list": run_signoff(["grants", "list"], tmp_path),
        "approve": run_signoff(["approve", "3f2c1a9b", "--token", "t"], tmp_path),
    }
    named = run_signoff(["audit", "--config", "nowhere.toml"], tmp_path)
    from_env = run_signoff(["audit"], tmp_path, SIGNOFF_CONFIG="elsewhere.toml")

    for done in refused.values():
        assert done.returncode == 2
        assert done.stderr == (
            f"signoff: no config: there is no signoff.toml in {tmp_path}, and neither --config nor $SIGNOFF_CONFIG"
            " names one. This command reads a running gateway's state: give --config PATH, or write a starter"
            " config with `signoff init`\n"
        )
    assert (
        named.returncode == 2 and named.stderr == "signoff: nowhere.toml: no such config file (given with --config)\n"
    )
    assert from_env.stderr == "signoff: elsewhere.toml: no such config file (named by $SIGNOFF_CONFIG)\n"
    assert not (tmp_path / "signoff.db").exists()


def test_config_faults_name_the_entry_and_suggest_the_key_meant(tmp_path: Path) -> None:
    (tmp_path / "signoff.toml").write_text(
        '[gatway]\nport = 1\n\n[[agents]]\nname = "claude"\ntoken = "agent-token-0123456789"\ntokn = "x"\n\n'
        '[[servers]]\nname = "fs"\ncomand = ["x"]\npolicy = "catalog:demo"\n'
    )
    done = run_signoff(["serve"], tmp_path)

    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "signoff: signoff.toml: invalid configuration:",
        '  agents[0] (claude).tokn: unknown key (did you mean "token"? known here: name, token, groups, servers,'
        " policies)",
        '  servers[0] (fs).comand: unknown key (did you mean "command"? known here: name, command, url, headers, env,'
        " cwd, policy)",
        '  gatway: unknown key (did you mean "gateway"? known here: gateway, agents, approvers, servers, slack,'
        " webhooks, web, auth, telemetry, audit)",
    ]


def test_a_json_log_line_carries_the_extra_fields_and_the_exception() -> None:
    import io
    import logging

    from integrations.logs import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.json_lines")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("upstream %s is down", "pg", extra={"server": "pg", "attempt": 3})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("call failed")
    finally:
        logger.removeHandler(handler)

    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "WARNING" and first["logger"] == "tests.json_lines"
    assert first["message"] == "upstream pg is down" and first["server"] == "pg" and first["attempt"] == 3
    assert first["time"].endswith("+00:00")
    assert second["message"] == "call failed" and "ValueError: boom" in second["exception"]
