"""Replicas as they run in production: several `signoff serve` processes on one database, behind HAProxy.

Each replica is its own process (`python -m integrations.cli serve --config ... --port P`), so nothing is shared
but what the database (and Redis, when the config names it) holds. HAProxy, from Debian's package, balances
requests round-robin, one request at a time (not one connection), so consecutive calls of one client land on
different replicas, as they would behind any load balancer. A replica can be killed with SIGKILL and started
again; the load balancer's health check (`/healthz`) takes it out and puts it back.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parents[1]
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_healthy(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    """Poll `url`/healthz until it answers (any status: a degraded replica still serves)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            httpx2.get(f"{url}/healthz", timeout=2)
            return
        except httpx2.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")


@dataclass
class Replica:
    """One `signoff serve` process."""

    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    """Replicas of one config behind a round-robin HAProxy at `url`."""

    config: Path
    folder: Path
    env: dict[str, str]
    replicas: list[Replica] = field(default_factory=list)
    url: str = ""
    _haproxy: subprocess.Popen[bytes] | None = None

    def start(self, index: int) -> None:
        """Start replica `index` (again) and wait until it serves."""
        replica = self.replicas[index]
        command = [sys.executable, "-m", "integrations.cli", "--config", str(self.config), "serve"]
        command += ["--port", str(replica.port), "--log-level", "warning"]
        with replica.log.open("ab") as log:
            replica.process = subprocess.Popen(
                command, cwd=self.folder, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_until_healthy(replica.url, replica.process, replica.log)

    def kill(self, index: int) -> None:
        """SIGKILL replica `index`: no shutdown, no flush, as a crashing machine would stop it."""
        process = self.replicas[index].process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(10)

    def stop(self) -> None:
        for replica in self.replicas:
            if replica.process is not None and replica.process.poll() is None:
                replica.process.terminate()
        for replica in self.replicas:
            if replica.process is not None:
                try:
                    replica.process.wait(15)
                except subprocess.TimeoutExpired:
                    replica.process.kill()
        if self._haproxy is not None:
            self._haproxy.terminate()
            self._haproxy.wait(10)

    def balance(self, port: int) -> None:
        """Start HAProxy on `port`, round-robin over every replica, each checked on /healthz."""
        servers = "\n".join(
            f"  server r{i} 127.0.0.1:{r.port} check inter 300ms fall 1 rise 1" for i, r in enumerate(self.replicas)
        )
        conf = self.folder / "haproxy.cfg"
        conf.write_text(
            "global\n  maxconn 4096\n"
            "defaults\n  mode http\n  timeout connect 2s\n  timeout client 300s\n  timeout server 300s\n"
            "  option http-keep-alive\n  retries 0\n"
            f"frontend signoff\n  bind 127.0.0.1:{port}\n  default_backend replicas\n"
            "backend replicas\n  balance roundrobin\n  option httpchk GET /healthz\n"
            "  http-check expect rstatus (200|503)\n"
            f"{servers}\n"
        )
        with (self.folder / "haproxy.log").open("ab") as log:
            self._haproxy = subprocess.Popen([HAPROXY, "-f", str(conf), "-db"], stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx2.get(f"{self.url}/healthz", timeout=2).status_code in (200, 503):
                    return
            except httpx2.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("HAProxy did not start")


@contextmanager
def cluster(folder: Path, config_text: str, count: int = 3, **env: str) -> Iterator[Cluster]:
    """`count` replicas of the config (written to `folder`, `{public_url}` filled in with HAProxy's URL) behind
    HAProxy; all stopped at the end, their logs left in `folder`."""
    lb_port = free_port()
    config = folder / "signoff.toml"
    config.write_text(config_text.replace("{public_url}", f"http://127.0.0.1:{lb_port}"))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    running = Cluster(config, folder, {**clean, "PYTHONPATH": str(ROOT), **env})
    running.replicas = [Replica(free_port(), folder / f"replica-{i}.log") for i in range(count)]
    try:
        running.start(0)  # the first migrates the database; the others find it at head
        for index in range(1, count):
            running.start(index)
        running.balance(lb_port)
        yield running
    finally:
        running.stop()


def policy_file(folder: Path, name: str, policy: dict[str, object]) -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(policy))
    return path
