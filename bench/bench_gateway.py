"""End-to-end benchmark of the gateway hop: `tools/call` direct to an upstream vs through signoff.

Run: python bench/bench_gateway.py [--quick] [--calls 2000] [--duration 5] [--clients 64]

In one run on one machine it starts two upstreams (bench/fast_upstream.py, the fastest honest
Streamable HTTP server, and bench/sdk_upstream.py, the MCP SDK's own server), a `signoff serve` in
front of both with the audit log on (SQLite in a temp dir, an allow-all policy), and measures for
each of direct-fast, via-fast, direct-sdk, via-sdk:

* sequential: one client, N `tools/call echo` one at a time after a warm-up; median/p90/p99 in ms;
* concurrent: C clients (one keep-alive connection and MCP session each) for a fixed duration
  after a warm-up; calls/s.

The load client is a hand-written HTTP/1.1 client on asyncio streams so that it costs little next to
the servers: it writes requests by hand, reads every response in full (Content-Length, chunked or
until close), parses JSON and SSE bodies and checks each `tools/call` returned a non-error result
with the echoed text. Each process's CPU time per call (client, signoff, upstream, from /proc) is
reported too, which shows what the hop costs independent of scheduling.

Goals (against the fast upstream): signoff adds at most 1.5 ms to the median sequential call, and
keeps at least 0.45x the direct concurrent rate. The markdown report is printed and written to
bench/results-gateway.md. After signoff stops, the audit table must hold one `allowed` row per call
made through it, which proves the audit log was on.

Only 127.0.0.1 is used; every subprocess is killed in `finally`.
"""

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import (
    HERE,
    HOST,
    BenchError,
    cpu_seconds,
    free_port,
    machine_busy,
    percentile,
    processes,
    py_spy,
    read_response,
    start,
    wait_http,
)

PROTOCOL_VERSION = "2025-11-25"
TOKEN = "bench-agent-token-0123456789"  # noqa: S105 - a throwaway token for a loopback benchmark
ADDED_MS_GOAL = 1.5
RATIO_GOAL = 0.45


# -- a small, honest HTTP/1.1 + MCP client ------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON-RPC and reads each response in full."""

    def __init__(self, port: int, path: str, headers: dict[str, str]) -> None:
        self.port = port
        self.path = path
        self.headers = dict(headers)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    def _head(self, length: int) -> bytes:
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {HOST}:{self.port}",
            "Content-Type: application/json",
            "Accept: application/json, text/event-stream",
            f"Content-Length: {length}",
        ]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def post(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(self._head(len(body)) + body)
        status, headers, data = await read_response(self.reader)
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers, data


def sse_messages(data: bytes) -> Iterator[Any]:
    """The JSON `data` of each event in an SSE body (any line ending)."""
    text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    for event in text.split("\n\n"):
        lines = [line[5:].removeprefix(" ") for line in event.split("\n") if line.startswith("data:")]
        if lines:
            yield json.loads("\n".join(lines))


def response_to(status: int, headers: dict[str, str], data: bytes, request_id: int) -> dict[str, Any]:
    if status != 200:
        raise BenchError(f"HTTP {status}: {data[:300]!r}")
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == "application/json":
        messages: Any = [json.loads(data)]
    elif content_type == "text/event-stream":
        messages = list(sse_messages(data))
    else:
        raise BenchError(f"unexpected content-type {content_type!r}")
    for message in messages:
        if isinstance(message, dict) and message.get("id") == request_id and "method" not in message:
            return message
    raise BenchError(f"no response to id {request_id} in {data[:300]!r}")


class McpClient:
    """One simulated agent: a connection, an MCP session, and a loop of `tools/call echo`."""

    def __init__(self, port: int, path: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.conn = Connection(port, path, headers)
        self.next_id = 0

    async def start(self) -> None:
        await self.conn.open()
        self.next_id += 1
        init = {
            "jsonrpc": "2.0",
            "id": self.next_id,
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "bench-gateway", "version": "1.0"},
            },
        }
        status, headers, data = await self.conn.post(json.dumps(init).encode())
        result = response_to(status, headers, data, self.next_id).get("result")
        if not isinstance(result, dict) or "protocolVersion" not in result:
            raise BenchError(f"initialize failed: {data[:300]!r}")
        session = headers.get("mcp-session-id")
        if session:
            self.conn.headers["Mcp-Session-Id"] = session
        self.conn.headers["Mcp-Protocol-Version"] = result["protocolVersion"]
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        status, _, data = await self.conn.post(json.dumps(note).encode())
        if status not in (200, 202):
            raise BenchError(f"notifications/initialized: HTTP {status} {data[:200]!r}")

    async def call(self) -> None:
        self.next_id += 1
        request_id = self.next_id
        body = (
            b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}'
            % request_id
        )
        status, headers, data = await self.conn.post(body)
        message = response_to(status, headers, data, request_id)
        result = message.get("result")
        if not isinstance(result, dict) or result.get("isError"):
            raise BenchError(f"tools/call failed: {data[:300]!r}")
        content = result.get("content")
        if not content or content[0].get("text") != "hi":
            raise BenchError(f"tools/call returned {data[:300]!r}")

    async def close(self) -> None:
        await self.conn.close()


# -- processes ------------------------------------------------------------------------------------


def self_cpu() -> float:
    return time.process_time()


def wait_quiet(limit: float, threshold: float = 0.2) -> float:
    """Wait (at most `limit` s) until other processes use under `threshold` cores; returns the last reading."""
    deadline = time.monotonic() + limit
    while True:
        before, t0 = machine_busy(), time.monotonic()
        time.sleep(1.0)
        busy = (machine_busy() - before) / (time.monotonic() - t0)
        if busy < threshold or time.monotonic() >= deadline:
            return busy
        print(f"  waiting for a quiet machine: other processes use {busy:.2f} cores", flush=True)


def write_config(tmp: Path, port: int, upstreams: dict[str, int]) -> tuple[Path, Path]:
    policy = tmp / "allow.json"
    policy.write_text(json.dumps({"version": "1", "default": "allow"}))
    database = tmp / "signoff.db"
    lines = [
        "[gateway]",
        f'host = "{HOST}"',
        f"port = {port}",
        f'database_url = "sqlite:///{database}"',
        "",
        "[[agents]]",
        'name = "bench"',
        f'token = "{TOKEN}"',
        "",
    ]
    for name, upstream_port in upstreams.items():
        lines += [
            "[[servers]]",
            f'name = "{name}"',
            f'url = "http://{HOST}:{upstream_port}/mcp"',
            f"policy = {json.dumps(str(policy))}",
            "",
        ]
    config = tmp / "signoff.toml"
    config.write_text("\n".join(lines))
    return config, database


# -- measurements ---------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    port: int
    path: str
    token: str | None
    server_pids: list[int]  # processes serving this target (upstream, and signoff when via)
    via: str | None = None  # the signoff server name, when through signoff
    calls: int = 0  # every tools/call made, warm-ups included
    seq_ms: list[float] = field(default_factory=list)
    seq_cpu_us: dict[str, float] = field(default_factory=dict)
    seq_other: float = 0.0  # cores used by processes outside the benchmark while it measured
    conc_other: float = 0.0
    rate: float = 0.0
    conc_ms: list[float] = field(default_factory=list)
    conc_cpu_us: dict[str, float] = field(default_factory=dict)


def cpu_snapshot(target: Target, names: list[str]) -> dict[str, float]:
    snap = {"client": self_cpu(), "machine": machine_busy(), "wall": time.perf_counter()}
    for name, pid in zip(names, target.server_pids, strict=True):
        snap[name] = cpu_seconds(pid)
    return snap


def cpu_per_call(before: dict[str, float], after: dict[str, float], calls: int) -> dict[str, float]:
    ours = ("client", "signoff", "upstream")
    return {k: (after[k] - before[k]) / max(calls, 1) * 1e6 for k in before if k in ours}


def other_cores(before: dict[str, float], after: dict[str, float]) -> float:
    """Cores used by everything but the benchmark's own processes between two snapshots."""
    ours = sum(after[k] - before[k] for k in before if k in ("client", "signoff", "upstream"))
    wall = after["wall"] - before["wall"]
    return max(0.0, (after["machine"] - before["machine"] - ours) / wall) if wall > 0 else 0.0


async def sequential(target: Target, names: list[str], calls: int, warmup: int) -> None:
    client = McpClient(target.port, target.path, target.token)
    await client.start()
    try:
        for _ in range(warmup):
            await client.call()
            target.calls += 1
        samples = []
        before = cpu_snapshot(target, names)
        perf = time.perf_counter
        for _ in range(calls):
            t0 = perf()
            await client.call()
            samples.append((perf() - t0) * 1000)
            target.calls += 1
        after = cpu_snapshot(target, names)
        target.seq_cpu_us = cpu_per_call(before, after, calls)
        target.seq_other = other_cores(before, after)
        target.seq_ms = samples
    finally:
        await client.close()


async def concurrent(target: Target, names: list[str], clients: int, duration: float, warmup: float) -> None:
    agents = [McpClient(target.port, target.path, target.token) for _ in range(clients)]
    await asyncio.wait_for(asyncio.gather(*(a.start() for a in agents)), timeout=60)
    state = {"measuring": False, "stop": False, "count": 0}
    latencies: list[float] = []
    perf = time.perf_counter

    async def loop(agent: McpClient) -> int:
        made = 0
        while not state["stop"]:
            t0 = perf()
            await agent.call()
            made += 1
            if state["measuring"]:
                state["count"] += 1
                latencies.append((perf() - t0) * 1000)
        return made

    tasks = [asyncio.create_task(loop(a)) for a in agents]
    try:
        await asyncio.sleep(warmup)
        _check(tasks)
        before = cpu_snapshot(target, names)
        state["measuring"] = True
        t0 = perf()
        await asyncio.sleep(duration)
        state["measuring"] = False
        elapsed = perf() - t0
        counted = state["count"]
        after = cpu_snapshot(target, names)
        state["stop"] = True
        made = await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
        target.calls += sum(made)
        target.rate = counted / elapsed
        target.conc_ms = latencies
        target.conc_cpu_us = cpu_per_call(before, after, counted)
        target.conc_other = other_cores(before, after)
    finally:
        state["stop"] = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(a.close() for a in agents), return_exceptions=True)


def _check(tasks: list[asyncio.Task[int]]) -> None:
    for task in tasks:
        if task.done() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def measure(targets: list[Target], args: argparse.Namespace) -> None:
    for target in targets:
        names = ["upstream", "signoff"] if target.via else ["upstream"]
        if args.wait_quiet > 0:
            wait_quiet(args.wait_quiet)
        with profiled(target, args):
            print(f"  {target.name}: sequential {args.calls} calls ...", flush=True)
            await sequential(target, names, args.calls, args.warmup_calls)
            print(f"  {target.name}: {args.clients} clients for {args.duration:g}s ...", flush=True)
            await concurrent(target, names, args.clients, args.duration, args.warmup_seconds)


@contextmanager
def profiled(target: Target, args: argparse.Namespace) -> Iterator[None]:
    """With --profile DIR, sample signoff with py-spy while the via-fast target is measured."""
    if args.profile is None or target.name != "via-fast":
        yield
        return
    with py_spy(target.server_pids[1], args.profile, "via-fast") as summary:
        yield
    if summary.exists():
        print(summary.read_text())


# -- report ---------------------------------------------------------------------------------------


def cpu_text(cpu: dict[str, float]) -> str:
    return " / ".join(f"{cpu.get(k, 0):.0f}" if k in cpu else "-" for k in ("client", "signoff", "upstream"))


def report(targets: dict[str, Target], args: argparse.Namespace, audit: str) -> tuple[str, bool]:
    rows = [
        "| target | seq median ms | seq p90 ms | seq p99 ms | conc calls/s | conc median ms | conc p99 ms "
        "| seq CPU µs/call client / signoff / upstream | conc CPU µs/call client / signoff / upstream "
        "| other load, cores (seq / conc) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for t in targets.values():
        rows.append(
            f"| {t.name} | {statistics.median(t.seq_ms):.3f} | {percentile(t.seq_ms, 90):.3f} "
            f"| {percentile(t.seq_ms, 99):.3f} | {t.rate:,.0f} | {statistics.median(t.conc_ms):.2f} "
            f"| {percentile(t.conc_ms, 99):.2f} | {cpu_text(t.seq_cpu_us)} | {cpu_text(t.conc_cpu_us)} "
            f"| {t.seq_other:.2f} / {t.conc_other:.2f} |"
        )
    verdicts = []
    ok = True
    for kind in ("fast", "sdk"):
        direct, via = targets[f"direct-{kind}"], targets[f"via-{kind}"]
        added = statistics.median(via.seq_ms) - statistics.median(direct.seq_ms)
        ratio = via.rate / direct.rate if direct.rate else 0.0
        if kind == "fast":
            met_added, met_ratio = added <= ADDED_MS_GOAL, ratio >= RATIO_GOAL
            ok = met_added and met_ratio
            verdicts.append(
                f"- **Goal 1** (fast upstream): signoff adds **{added:.3f} ms** to the median sequential call "
                f"(goal ≤ {ADDED_MS_GOAL} ms): **{'MET' if met_added else 'MISSED'}**"
            )
            verdicts.append(
                f"- **Goal 2** (fast upstream): via/direct concurrent rate **{ratio:.3f}x** "
                f"(goal ≥ {RATIO_GOAL}x): **{'MET' if met_ratio else 'MISSED'}**"
            )
        else:
            verdicts.append(
                f"- SDK upstream (no goal): signoff adds {added:.3f} ms to the median sequential call; "
                f"via/direct concurrent rate {ratio:.3f}x"
            )
    machine = (
        f"{platform.python_implementation()} {platform.python_version()} on {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs; load average before the run {args.loadavg}"
    )
    settings = (
        f"sequential: {args.calls} calls after {args.warmup_calls} warm-up; concurrent: {args.clients} clients, "
        f"{args.duration:g} s after {args.warmup_seconds:g} s warm-up; one keep-alive connection and MCP session "
        f'per client; `tools/call echo {{"text":"hi"}}`, protocol {PROTOCOL_VERSION}'
    )
    text = "\n".join(
        [
            "# Gateway benchmark: `tools/call` direct vs through signoff",
            "",
            f"Generated by `python bench/bench_gateway.py{' --quick' if args.quick else ''}` on "
            f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}.",
            "",
            f"- Machine: {machine}",
            f"- {settings}",
            "- Client, signoff and upstream all run on this machine; CPU µs/call is each process's user+system "
            "time over the measured calls (from /proc, 10 ms ticks), `-` where the process is not in the path.",
            "- Audit log on: SQLite (WAL) in a temp dir, allow-all policy.",
            "- Other load: CPU used by processes outside the benchmark while it measured (machine busy time from "
            "/proc/stat minus the three processes); above ~0.1 cores the rates and latencies are disturbed, "
            "the CPU µs/call much less so.",
            "",
            *rows,
            "",
            *verdicts,
            f"- Audit: {audit}",
            "",
        ]
    )
    return text, ok


def count_audit(database: Path) -> dict[str, int]:
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT server, COUNT(*) FROM audit_events WHERE kind = 'allowed' AND tool = 'echo' GROUP BY server"
        ).fetchall()
    return dict(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a short run: 300 calls, 2 s concurrent")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup-calls", type=int, default=200)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup-seconds", type=float, default=1.0)
    parser.add_argument("--wait-quiet", type=float, default=60.0, help="wait up to N s for a quiet machine per target")
    parser.add_argument("--output", type=Path, default=HERE / "results-gateway.md")
    parser.add_argument("--profile", type=Path, help="sample signoff with py-spy during via-fast into this dir")
    parser.add_argument("--keep-going", action="store_true", help="exit 0 even if a goal is missed")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.warmup_calls, args.duration, args.warmup_seconds = 300, 50, 2.0, 0.5
    args.loadavg = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"

    with tempfile.TemporaryDirectory(prefix="signoff-bench-") as tmp_name, processes() as procs:
        tmp = Path(tmp_name)
        fast_port, sdk_port, gateway_port = free_port(), free_port(), free_port()
        fast = start(procs, [sys.executable, str(HERE / "fast_upstream.py"), str(fast_port)], tmp / "fast.log")
        sdk = start(procs, [sys.executable, str(HERE / "sdk_upstream.py"), str(sdk_port)], tmp / "sdk.log")
        config, database = write_config(tmp, gateway_port, {"fast": fast_port, "sdk": sdk_port})
        gateway = start(
            procs,
            [sys.executable, "-m", "integrations.cli", "--config", str(config), "serve", "--log-level", "warning"],
            tmp / "signoff.log",
        )
        try:
            wait_http(fast_port, "/mcp", fast)
            wait_http(sdk_port, "/mcp", sdk)
            wait_http(gateway_port, "/healthz", gateway)
            targets = {
                "direct-fast": Target("direct-fast", fast_port, "/mcp", None, [fast.pid]),
                "via-fast": Target("via-fast", gateway_port, "/mcp/fast", TOKEN, [fast.pid, gateway.pid], "fast"),
                "direct-sdk": Target("direct-sdk", sdk_port, "/mcp", None, [sdk.pid]),
                "via-sdk": Target("via-sdk", gateway_port, "/mcp/sdk", TOKEN, [sdk.pid, gateway.pid], "sdk"),
            }
            print(f"measuring (signoff pid {gateway.pid}, fast pid {fast.pid}, sdk pid {sdk.pid}) ...", flush=True)
            asyncio.run(measure(list(targets.values()), args))
        except BaseException:
            for log in ("fast.log", "sdk.log", "signoff.log"):
                text = (tmp / log).read_text(errors="replace")[-3000:]
                if text.strip():
                    print(f"--- {log} (tail) ---\n{text}", file=sys.stderr)
            raise
        # Stop signoff gracefully so its audit writer drains, then count what it wrote.
        gateway.terminate()
        gateway.wait(timeout=30)
        counted = count_audit(database)
        audit_ok = True
        parts = []
        for target in targets.values():
            if target.via:
                rows = counted.get(target.via, 0)
                audit_ok &= rows == target.calls
                parts.append(f"{target.name} made {target.calls:,} calls, audit has {rows:,} `allowed` rows")
        audit = "; ".join(parts) + (" — match" if audit_ok else " — MISMATCH")

    text, ok = report(targets, args, audit)
    print()
    print(text)
    args.output.write_text(text)
    print(f"written to {args.output}")
    if not audit_ok:
        return 2
    return 0 if ok or args.keep_going else 1


if __name__ == "__main__":
    sys.exit(main())
