"""`signoff init` as a newcomer runs it: a starter config that `signoff serve` serves at once, and a call works."""

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp_types import TextContent

from integrations.errors import ConfigError
from integrations.settings import load_settings
from integrations.starter import server_name
from tests.conftest import connect
from tests.integrations.test_cli import ROOT, free_port, run_signoff

DEMO_COMMAND = f"{sys.executable} -m integrations.demo"


def dotenv(directory: Path) -> dict[str, str]:
    lines = (directory / ".env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


@contextmanager
def serving(config: Path, port: int, cwd: Path) -> Iterator[str]:
    """`signoff serve --config CONFIG` in its own process, from another directory, until it listens on `port`."""
    command = [sys.executable, "-m", "integrations.cli", "serve", "--config", str(config)]
    command += [] if f"port = {port}\n" in config.read_text() else ["--port", str(port)]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    env = {**clean, "PYTHONPATH": str(ROOT)}
    base = f"http://127.0.0.1:{port}"
    with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as process:
        try:
            with httpx2.Client(timeout=5) as http:
                for _ in range(300):  # the bounded poll until uvicorn listens
                    try:
                        http.get(f"{base}/healthz")
                        break
                    except httpx2.TransportError:
                        time.sleep(0.05)
            yield base
        finally:
            process.terminate()
            process.wait(timeout=20)


async def call(url: str, token: str, tool: str, arguments: dict[str, str] | None = None) -> str:
    async with connect(url, token) as client:
        result = await client.call_tool(tool, arguments or {})
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def test_init_with_a_server_writes_a_suggested_policy_and_serve_serves_it_at_once(tmp_path: Path) -> None:
    directory = tmp_path / "gateway"
    port = free_port()
    argv = ["init", "--server", DEMO_COMMAND, "--name", "fleet", "--dir", str(directory), "--port", str(port)]
    done = run_signoff(argv, tmp_path)
    secrets = dotenv(directory)
    config = directory / "signoff.toml"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    held: list[str] = []
    with serving(config, port, elsewhere) as base:
        listed = anyio.run(call, f"{base}/mcp/fleet", secrets["SIGNOFF_AGENT_TOKEN"], "list_connections")
        destroy = {"connection_id": "conn-1"}  # destructive: the suggested policy asks the approver
        url, agent = f"{base}/mcp/fleet", secrets["SIGNOFF_AGENT_TOKEN"]
        caller = threading.Thread(
            target=lambda: held.append(anyio.run(call, url, agent, "destroy_connection", destroy))
        )
        caller.start()
        with httpx2.Client(base_url=base, timeout=5) as http:
            for _ in range(400):  # the bounded poll until the held call is a pending request
                page = http.get(
                    "/api/approvals", headers={"Authorization": f"Bearer {secrets['SIGNOFF_APPROVER_TOKEN']}"}
                )
                if page.json()["approvals"]:
                    break
                time.sleep(0.05)
        # The approver's token from the .env beside the config, the gateway's address from the config.
        approved = run_signoff(["approve", page.json()["approvals"][0]["id"][:8], "--config", str(config)], elsewhere)
        caller.join(timeout=30)

    assert done.returncode == 0, done.stderr
    assert f"wrote {directory / 'policies' / 'fleet.json'}" in done.stdout.splitlines()
    assert "destroy_connection           destructive  critical  require approval" in done.stdout
    assert sorted(secrets) == ["SIGNOFF_AGENT_TOKEN", "SIGNOFF_APPROVER_TOKEN", "SIGNOFF_SESSION_SECRET"]
    assert all(len(value) >= 32 for value in secrets.values())
    assert (directory / ".env").stat().st_mode & 0o777 == 0o600
    assert not any(value in config.read_text() for value in secrets.values())
    assert "conn-1 pid=4121 user=alice" in listed
    assert approved.returncode == 0 and approved.stdout.endswith(" is now approved\n"), approved.stderr
    assert held == ["Destroyed conn-1: subscriber stopped, stream buffer cleaned up."]
    assert (directory / "signoff.db").exists() and not (elsewhere / "signoff.db").exists()


def test_init_without_a_server_serves_the_demo_and_never_overwrites(tmp_path: Path) -> None:
    first = run_signoff(["init", "--port", "0"], tmp_path)
    config_text = (tmp_path / "signoff.toml").read_text()
    again = run_signoff(["init"], tmp_path)
    port = free_port()
    with serving(tmp_path / "signoff.toml", port, tmp_path) as base:
        listed = anyio.run(call, f"{base}/mcp/demo", dotenv(tmp_path)["SIGNOFF_AGENT_TOKEN"], "list_connections")

    assert first.returncode == 0 and 'policy = "catalog:demo"' in config_text
    assert again.returncode == 2
    assert again.stderr == (
        f"signoff: refusing to overwrite {tmp_path / 'signoff.toml'}, {tmp_path / '.env'}; nothing was written\n"
    )
    assert (tmp_path / "signoff.toml").read_text() == config_text
    assert "conn-1 pid=4121" in listed


def test_init_refuses_a_server_it_cannot_list_and_writes_nothing(tmp_path: Path) -> None:
    done = run_signoff(["init", "--server", f"http://127.0.0.1:{free_port()}/mcp"], tmp_path)

    assert done.returncode == 2
    assert done.stderr.startswith("signoff: ") and done.stderr.endswith("; nothing was written\n")
    assert list(tmp_path.iterdir()) == []


def test_a_server_is_named_for_its_package_script_or_host() -> None:
    assert server_name("npx -y @modelcontextprotocol/server-memory") == "memory"
    assert server_name("uvx mcp-server-time --local-timezone UTC") == "time"
    assert server_name("npx -y @acme/github-mcp@1.2.0") == "github"
    assert server_name("/opt/bin/jira-mcp-server --stdio") == "jira"
    assert server_name("https://pg-mcp.internal:8443/mcp") == "pg"
    assert server_name("python servers/github_mcp.py") == "github_mcp"


def test_the_dotenv_beside_a_config_fills_its_variables_the_environment_wins_and_a_bad_line_is_refused(
    tmp_path: Path,
) -> None:
    config = tmp_path / "signoff.toml"
    config.write_text(
        '[[agents]]\nname = "a"\ntoken = "${A_TOKEN}"\n\n[[agents]]\nname = "b"\ntoken = "${B_TOKEN}"\n\n'
        '[[servers]]\nname = "demo"\ncommand = ["x"]\npolicy = "catalog:demo"\n'
    )
    (tmp_path / ".env").write_text(
        "# comment\n\nexport A_TOKEN='agent-a-token-from-dotenv'\nB_TOKEN=\"agent-b-token-from-dotenv\"\n"
    )
    settings = load_settings(config, environ={"B_TOKEN": "agent-b-token-from-environ"})
    tokens = [a.token.get_secret_value() for a in settings.agents if a.token is not None]
    (tmp_path / ".env").write_text("A_TOKEN=agent-a-token-from-dotenv\nnot a line\n")
    with pytest.raises(ConfigError) as refused:
        load_settings(config, environ={})

    assert tokens == ["agent-a-token-from-dotenv", "agent-b-token-from-environ"]
    assert str(refused.value).startswith(f"{tmp_path / '.env'}:2: not a KEY=VALUE line")
