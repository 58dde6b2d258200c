"""What the benchmarks share: loopback ports, child processes started and always stopped, CPU readings.

Imported by the bench scripts as `harness` (they run as `python bench/NAME.py`, so this folder is on the path).
"""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# -- a small HTTP/1.1 client on asyncio streams ------------------------------------------------------


class BenchError(Exception):
    """The benchmark cannot go on: a bad answer, a missed deadline."""


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response, read in full (Content-Length, chunked, or until close)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise BenchError(f"bad status line {status_line!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                break
            chunks.append((await reader.readexactly(size + 2))[:-2])
        body = b"".join(chunks)
    elif status in (204, 304) or 100 <= status < 200:
        body = b""
    else:
        body = await reader.read()  # delimited by close
        headers["connection"] = "close"
    return status, headers, body


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (0 where there is no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def descendants(pid: int) -> list[int]:
    """The processes `pid` started, and the ones they started, from /proc (none where there is no /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # it ended while we looked
        children.setdefault(parent, []).append(int(stat.parent.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def machine_busy() -> float:
    """CPU seconds the whole machine has spent not idle, from /proc/stat (0 where there is none)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(x) for x in fields[:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """A list to `start` children into; every one is stopped on the way out, whatever happened."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def start(
    procs: list[subprocess.Popen[bytes]], args: list[str], log: Path, tree: Path = ROOT
) -> subprocess.Popen[bytes]:
    """Start `args` in `tree`, output to `log`: `python -m` there imports that checkout's code before any other."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=tree, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    procs.append(proc)
    return proc


def wait_http(port: int, path: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Wait until `proc` serves `path` on `port` (a 200 for /healthz, any answer otherwise)."""
    deadline = time.monotonic() + timeout
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before serving on port {port}")
        try:
            with socket.create_connection((HOST, port), timeout=1.0) as sock:
                sock.sendall(request)
                if sock.recv(64).startswith(b"HTTP/1.1 200") or path != "/healthz":
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing served on {HOST}:{port}{path} within {timeout}s")


def wait_settled(pid: int, workers: int, timeout: float = 60.0, quiet: float = 0.3) -> None:
    """Wait until `pid` has spawned `workers` worker processes and its children used (almost) no CPU for `quiet` s.

    A worker of `signoff serve --workers N` that has not finished starting accepts no connection, and the bench's
    keep-alive connections stay where they were accepted: they must not all land on the workers that came first.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = descendants(pid)
        spawned = [p for p in pids if b"multiprocessing.spawn" in _cmdline(p)]  # not its resource tracker
        before = sum(map(cpu_seconds, pids))
        time.sleep(quiet)
        if len(spawned) >= workers and sum(map(cpu_seconds, pids)) - before < 0.03:
            return
    raise RuntimeError(f"process {pid} did not settle with {workers} workers within {timeout}s")


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def empty_database(url: str) -> None:
    """Create the database at `url` if it does not exist (PostgreSQL), then drop every table in it."""
    from sqlalchemy import MetaData, create_engine, make_url, text

    from integrations.database import create_database_engine

    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.database:
        server = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with server.connect() as db:
            known = db.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": parsed.database})
            if known.first() is None:
                db.execute(text(f'CREATE DATABASE "{parsed.database}"'))
        server.dispose()
    engine = create_database_engine(url, migrate=False)
    reflected = MetaData()
    reflected.reflect(engine)
    reflected.drop_all(engine)
    engine.dispose()


def launch_signoff(
    procs: list[subprocess.Popen[bytes]], config: Path, log: Path, workers: int = 1
) -> subprocess.Popen[bytes]:
    """Start `signoff serve` with `config` (and `--workers N` past one); `wait_serving` waits until it serves."""
    command = [sys.executable, "-m", "integrations.cli", "--config", str(config), "serve", "--log-level", "warning"]
    if workers > 1:
        command += ["--workers", str(workers)]
    return start(procs, command, log)


def wait_serving(gateway: subprocess.Popen[bytes], port: int, workers: int = 1) -> None:
    wait_http(port, "/healthz", gateway)
    if workers > 1:
        wait_settled(gateway.pid, workers)


def print_tail(log: Path) -> None:
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    if tail.strip():
        print(f"--- {log.name} (tail) ---\n{tail}", file=sys.stderr)


@contextmanager
def signoff_serve(config: Path, port: int, log: Path, workers: int = 1) -> Iterator[subprocess.Popen[bytes]]:
    """`signoff serve` with `config` (which sets `port`), once every worker serves; its log's tail if the block fails.

    On the way out it is stopped gracefully (SIGTERM), so that its audit writer has drained when the block ends.
    """
    with processes() as procs:
        gateway = launch_signoff(procs, config, log, workers)
        try:
            wait_serving(gateway, port, workers)
            yield gateway
        except BaseException:
            print_tail(log)
            raise


@contextmanager
def py_spy(pid: int, directory: Path, name: str, rate: int = 250) -> Iterator[Path]:
    """Sample process `pid` with py-spy while the block runs; then `DIR/NAME.collapsed` and `DIR/NAME-summary.txt`."""
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"{name}.collapsed"
    spy_path = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))  # on PATH, or the venv's
    command = [spy_path, "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate), "--nonblocking"]
    spy = subprocess.Popen(
        [*command, "--threads", "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    summary = directory / f"{name}-summary.txt"
    try:
        time.sleep(1.0)  # py-spy attaches
        yield summary
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(timeout=60)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(timeout=5)
    if out.exists():
        summary.write_text(summarize_profile(out, name))


def summarize_profile(path: Path, name: str, top: int = 30) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    lines = [f"py-spy samples of signoff during {name}: {total}", "", "self %  function"]
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * count / max(total, 1):6.1f}  {frame}")
    lines += ["", "incl %  function"]
    for frame, count in sorted(inclusive.items(), key=lambda kv: -kv[1])[: top * 2]:
        lines.append(f"{100 * count / max(total, 1):6.1f}  {frame}")
    return "\n".join(lines) + "\n"
