"""The deployment recipes in deploy/, run as far as this machine can: the commands they start, with their signals.

No container engine runs here, so the Containerfile is checked by running what it would run: its build step is
the README's install command, and its CMD and HEALTHCHECK, with its ENV, serve a config and answer. The systemd
unit is checked by `systemd-analyze verify` and by running its ExecStartPre, ExecStart, ExecReload and stop signal.
"""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

from tests.cluster import ROOT, free_port, wait_until_healthy
from tests.conftest import AGENT_TOKEN
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http

pytestmark = pytest.mark.anyio

DEPLOY = ROOT / "deploy"
SIGNOFF = f"{sys.executable} -m integrations.cli"  # what `.venv/bin/signoff` runs, in this checkout


def _containerfile() -> list[tuple[str, str]]:
    """The Containerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Containerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0], line.split(None, 1)[1]) for line in lines]


def _unit() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (DEPLOY / "signoff.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def _config(tmp_path: Path, upstream: str) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "ev.json").write_text(json.dumps({"version": "1", "default": "allow"}))
    config = etc / "signoff.toml"
    config.write_text(
        '[gateway]\ndatabase_url = "sqlite:///signoff.db"\n\n'
        '[[agents]]\nname = "alpha"\ntoken = "${ALPHA_TOKEN}"\n\n'
        f'[[servers]]\nname = "ev"\nurl = "{upstream}/mcp"\npolicy = "ev.json"\n'
    )
    return config


def _environment(extra: dict[str, str]) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    return {**clean, "PYTHONPATH": str(ROOT), **extra}


def _stop(process: "subprocess.Popen[bytes]", sig: int, within: float) -> int:
    process.send_signal(sig)
    try:
        return process.wait(within)
    finally:
        if process.poll() is None:
            process.kill()


def test_the_containerfile_builds_with_the_readmes_install_command_and_copies_every_package() -> None:
    steps = _containerfile()
    readme = (ROOT / "README.md").read_text()
    run_command = re.search(r"```sh\n(python3 -m venv \.venv && \.venv/bin/pip install -q -e \.) && ", readme)
    packages = re.search(r"packages = \[(.*?)\]", (ROOT / "pyproject.toml").read_text())

    assert run_command is not None and packages is not None
    assert ("RUN", run_command.group(1)) in steps  # the build step is the README's, verbatim
    copied = {part for kind, args in steps if kind == "COPY" for part in args.split()[:-1]}
    assert {p.strip(' "') for p in packages.group(1).split(",")} | {"pyproject.toml", "README.md"} <= copied
    assert ("USER", "signoff") in steps and ("STOPSIGNAL", "SIGTERM") in steps


async def test_the_containers_command_and_healthcheck_serve_a_mounted_config_and_stop_on_its_signal(
    tmp_path: Path,
) -> None:
    steps = _containerfile()
    command: list[str] = json.loads(next(args for kind, args in steps if kind == "CMD"))
    check = next(args for kind, args in steps if kind == "HEALTHCHECK").split(" CMD ", 1)[1]
    port = free_port()
    async with serve_http(everything_http_app(EverythingState())) as upstream:
        config = _config(tmp_path, upstream)
        volume = tmp_path / "var-lib-signoff"  # the image's WORKDIR and VOLUME
        volume.mkdir()
        argv = [part.replace("/etc/signoff", str(config.parent)) for part in command]
        argv = [*shlex.split(SIGNOFF), *argv[1:]]  # `signoff` is on the image's PATH
        argv[argv.index("0.0.0.0")] = "127.0.0.1"  # noqa: S104 - the container's own interface is loopback here
        argv[argv.index("8080")] = str(port)
        log = tmp_path / "container.log"
        with log.open("wb") as out:
            process = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything waits on the loop
                argv, cwd=volume, env=_environment({"ALPHA_TOKEN": AGENT_TOKEN}), stdout=out, stderr=subprocess.STDOUT
            )
        try:
            wait_until_healthy(f"http://127.0.0.1:{port}", process, log)
            healthy = subprocess.run(shlex.split(check.replace("8080", str(port))), timeout=10)  # noqa: ASYNC221
        finally:
            code = _stop(process, signal.SIGTERM, 30)

    assert healthy.returncode == 0
    assert (volume / "signoff.db").exists()  # the database is in the volume, not in the image
    _stopped_cleanly(code, log)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (DEPLOY / "signoff.service").read_text().replace("/opt/signoff/.venv/bin/signoff", "/bin/true")
    copy = tmp_path / "signoff.service"
    copy.write_text(unit)
    verified = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)

    assert verified.returncode == 0
    assert "signoff.service" not in verified.stderr, verified.stderr  # no unknown key, no bad value


async def test_the_systemd_units_commands_migrate_serve_reload_on_hup_and_stop_on_term(tmp_path: Path) -> None:
    unit = _unit()
    port = free_port()
    async with serve_http(everything_http_app(EverythingState())) as upstream:
        config = _config(tmp_path, upstream)
        (config.parent / "signoff.env").write_text(f"ALPHA_TOKEN={AGENT_TOKEN}\n")
        environment = dict(
            line.split("=", 1) for line in (config.parent / "signoff.env").read_text().splitlines() if line
        )  # EnvironmentFile
        state = tmp_path / "state"  # StateDirectory and WorkingDirectory
        state.mkdir()

        def argv(line: str) -> list[str]:
            line = line.replace("/opt/signoff/.venv/bin/signoff", SIGNOFF).replace("/etc/signoff", str(config.parent))
            return shlex.split(line)

        env = _environment(environment)
        migrated = subprocess.run(  # noqa: ASYNC221
            argv(unit["ExecStartPre"][0]), cwd=state, env=env, capture_output=True, text=True, timeout=60
        )
        log = tmp_path / "service.log"
        with log.open("wb") as out:
            process = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything waits on the loop
                [*argv(unit["ExecStart"][0]), "--port", str(port)],
                cwd=state,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_healthy(url, process, log)
            before = httpx2.get(f"{url}/healthz", timeout=5).json()["servers"]["ev"]["policy_version"]
            (config.parent / "ev.json").write_text(json.dumps({"version": "1", "default": "deny"}))
            reload = unit["ExecReload"][0].replace("$MAINPID", str(process.pid))
            assert subprocess.run(shlex.split(reload), timeout=10).returncode == 0  # noqa: ASYNC221
            deadline = time.monotonic() + 20
            after = before
            while after == before and time.monotonic() < deadline:
                time.sleep(0.1)  # noqa: ASYNC251 - a short poll of the process under test
                after = httpx2.get(f"{url}/healthz", timeout=5).json()["servers"]["ev"]["policy_version"]
        finally:
            stop = float(unit["TimeoutStopSec"][0])
            code = _stop(process, getattr(signal, unit["KillSignal"][0]), stop)

    assert migrated.returncode == 0 and "database upgraded" in migrated.stdout
    assert after != before  # the edited policy is in force after `systemctl reload`
    _stopped_cleanly(code, log)


def _stopped_cleanly(code: int, log: Path) -> None:
    """uvicorn shuts down on SIGTERM, then ends by the signal it caught: a clean stop to systemd and to docker."""
    assert code in (0, -signal.SIGTERM), log.read_text()
    assert "Application shutdown complete." in log.read_text()
