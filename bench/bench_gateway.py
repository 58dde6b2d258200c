"""End-to-end benchmark of the gateway hop: `tools/call` direct to an upstream, through a bare hop, through signoff.

Run: python bench/bench_gateway.py [--quick] [--calls 2000] [--duration 5] [--clients 64] [--workers 1,2]

In one run on one machine it starts two upstreams (bench/fast_upstream.py, the fastest honest Streamable HTTP
server, and bench/sdk_upstream.py, the MCP SDK's own server), bench/floor_proxy.py (the leanest forwarding hop
this stack allows: raw ASGI under uvicorn, signoff's own connection pool, no MCP logic and no audit) in front of
the fast one, and a `signoff serve` in front of both with the audit log on (SQLite in a temp dir, an allow-all
policy). It measures each of direct-fast, floor-fast, via-fast, direct-sdk, via-sdk:

* sequential: one client, N `tools/call echo` one at a time after a warm-up; median/p90/p99 in ms;
* concurrent: C clients (one keep-alive connection and MCP session each) for a fixed duration after a
  warm-up; calls/s and latency.

Then, with `--workers 1,2` (the default; "" or 0 skips it), `signoff serve --workers N` on PostgreSQL (a
database of its own, created if missing and emptied before and after) in front of the fast upstream, C clients:
calls/s, latency, and signoff's CPU per call summed over the master and every worker. Each N has its own
server name, so its audit rows count apart. With --quick these gateways start with the others, at the
beginning, and idle (a few hundredths of a core in all) while the single-process targets are measured;
otherwise each starts when its turn comes.

The load client (bench/load_client.py) is a hand-written HTTP/1.1 client on asyncio streams, so that it
costs little next to the servers: it writes requests by hand, reads every response in full (Content-Length,
chunked or until close), parses JSON and SSE bodies and checks each `tools/call` returned a non-error result
with the echoed text. Each process's CPU time per call (client, the hop in the middle, upstream, from /proc)
is reported too, which shows what the hop costs independent of scheduling.

Goals, against the fast upstream at C = 64 clients unless said: (1) signoff's CPU per allowed call at most
0.35 ms; (2) at least 0.45x the direct rate; (3) a p99 at most 3x the direct p99; (4) at most 0.5 ms added
to a sequential call (median through signoff minus median direct); (5) no regression against the SDK upstream,
taken as via-sdk keeping at least 0.9x direct-sdk's rate; (6) throughput with 1 and 2 workers is reported. The
report says MET or MISSED for goals 1-5 and the exit status is 1 if one is missed (0 with --keep-going). The
floor is no goal: it shows what any gateway on uvicorn + httptools + uvloop could keep.

After each signoff stops, its audit table must hold one `allowed` row per call made through it, which proves the
audit log was on; the exit status is 2 if not. The markdown report is printed and written to
bench/results-gateway.md. Only 127.0.0.1 is used; every subprocess is stopped in `finally`.
"""

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import (
    HERE,
    HOST,
    cpu_seconds,
    descendants,
    empty_database,
    free_port,
    launch_signoff,
    machine_busy,
    percentile,
    print_tail,
    processes,
    py_spy,
    signoff_serve,
    start,
    wait_http,
    wait_serving,
)
from load_client import PROTOCOL_VERSION, McpClient

sys.path.insert(0, str(HERE.parent))  # signoff's packages, from this checkout (to empty and count the database)

TOKEN = "bench-agent-token-0123456789"  # noqa: S105 - a throwaway token for a loopback benchmark
DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/bench_gateway"  # for --workers; created, emptied
CPU_GOAL_MS = 0.35  # goal 1: signoff CPU per allowed call at 64 clients
RATE_GOAL = 0.45  # goal 2: via / direct rate at 64 clients
P99_GOAL = 3.0  # goal 3: via p99 / direct p99 at 64 clients
ADDED_MS_GOAL = 0.5  # goal 4: median sequential via - median direct
SDK_RATE_GOAL = 0.9  # goal 5: via-sdk / direct-sdk rate at 64 clients
ROLES = ("client", "hop", "upstream")  # the processes a call passes through, as the report names them


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


def write_config(path: Path, port: int, upstreams: dict[str, int], database_url: str) -> Path:
    policy = path.parent / "allow.json"
    policy.write_text(json.dumps({"version": "1", "default": "allow"}))
    lines = [
        "[gateway]",
        f'host = "{HOST}"',
        f"port = {port}",
        f'database_url = "{database_url}"',
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
    path.write_text("\n".join(lines))
    return path


# -- measurements ---------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    port: int
    path: str
    token: str | None
    server_pids: dict[str, list[int]]  # the processes serving this target by role ("hop", "upstream")
    via: str | None = None  # the signoff server name, when through signoff
    calls: int = 0  # every tools/call made, warm-ups included
    seq_ms: list[float] = field(default_factory=list)
    seq_cpu_us: dict[str, float] = field(default_factory=dict)
    seq_other: float = 0.0  # cores used by processes outside the benchmark while it measured
    conc_other: float = 0.0
    rate: float = 0.0
    conc_ms: list[float] = field(default_factory=list)
    conc_cpu_us: dict[str, float] = field(default_factory=dict)


def cpu_snapshot(target: Target) -> dict[str, float]:
    snap = {"client": self_cpu(), "machine": machine_busy(), "wall": time.perf_counter()}
    for role, pids in target.server_pids.items():
        snap[role] = sum(map(cpu_seconds, pids))
    return snap


def cpu_per_call(before: dict[str, float], after: dict[str, float], calls: int) -> dict[str, float]:
    return {k: (after[k] - before[k]) / max(calls, 1) * 1e6 for k in before if k in ROLES}


def other_cores(before: dict[str, float], after: dict[str, float]) -> float:
    """Cores used by everything but the benchmark's own processes between two snapshots."""
    ours = sum(after[k] - before[k] for k in before if k in ROLES)
    wall = after["wall"] - before["wall"]
    return max(0.0, (after["machine"] - before["machine"] - ours) / wall) if wall > 0 else 0.0


async def sequential(target: Target, calls: int, warmup: int) -> None:
    client = McpClient(target.port, target.path, target.token)
    await client.start()
    try:
        for _ in range(warmup):
            await client.call()
            target.calls += 1
        samples = []
        before = cpu_snapshot(target)
        perf = time.perf_counter
        for _ in range(calls):
            t0 = perf()
            await client.call()
            samples.append((perf() - t0) * 1000)
            target.calls += 1
        after = cpu_snapshot(target)
        target.seq_cpu_us = cpu_per_call(before, after, calls)
        target.seq_other = other_cores(before, after)
        target.seq_ms = samples
    finally:
        await client.close()


async def concurrent(target: Target, clients: int, duration: float, warmup: float) -> None:
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
        before = cpu_snapshot(target)
        state["measuring"] = True
        t0 = perf()
        await asyncio.sleep(duration)
        state["measuring"] = False
        elapsed = perf() - t0
        counted = state["count"]
        after = cpu_snapshot(target)
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
        if args.wait_quiet > 0:
            wait_quiet(args.wait_quiet)
        print(f"  {target.name}: sequential {args.calls} calls ...", flush=True)
        await sequential(target, args.calls, args.warmup_calls)
        print(f"  {target.name}: {args.clients} clients for {args.duration:g}s ...", flush=True)
        await concurrent(target, args.clients, args.duration, args.warmup_seconds)
        if args.profile is not None and target.name == "via-fast":
            await profile(target, args)


async def profile(target: Target, args: argparse.Namespace) -> None:
    """Sample signoff with py-spy during a pass of its own over `target`, made after its figures were taken: the
    sampler takes most of a core, which would cut them. The pass's calls still count for the audit check."""
    scratch = Target(target.name, target.port, target.path, target.token, target.server_pids, target.via)
    print(f"  {target.name}: the same again under py-spy (figures not kept) ...", flush=True)
    with py_spy(target.server_pids["hop"][0], args.profile, target.name) as summary:
        await sequential(scratch, args.calls, args.warmup_calls)
        await concurrent(scratch, args.clients, args.duration, args.warmup_seconds)
    target.calls += scratch.calls
    if summary.exists():
        print(summary.read_text())


@dataclass
class WorkersRun:
    """One `signoff serve --workers N` on the shared database, its own server name so its audit rows count apart."""

    workers: int
    port: int
    config: Path
    gateway: subprocess.Popen[bytes] | None = None

    @property
    def server(self) -> str:
        return f"fast-w{self.workers}"


def measure_running(
    gateway: subprocess.Popen[bytes],
    port: int,
    server: str,
    workers: int,
    upstream: list[int],
    clients: int,
    duration: float,
    warmup: float,
) -> Target:
    """`clients` clients for `duration` s through a serving signoff; its CPU is the master's and every worker's."""
    pids = {"hop": [gateway.pid, *descendants(gateway.pid)], "upstream": upstream}
    target = Target(f"{workers} worker{'s' if workers != 1 else ''}", port, f"/mcp/{server}", TOKEN, pids, server)
    asyncio.run(concurrent(target, clients, duration, warmup))
    return target


def workers_rate(
    config: Path, port: int, workers: int, upstream: list[int], clients: int, duration: float, warmup: float
) -> Target:
    """`signoff serve --workers N` with `config` (on `port`, its server `fast`), measured by `measure_running`."""
    with signoff_serve(config, port, config.with_suffix(".log"), workers) as gateway:
        return measure_running(gateway, port, "fast", workers, upstream, clients, duration, warmup)


def count_audit(database_url: str) -> dict[str, int]:
    """`allowed` audit rows of `echo` by server."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as db:
            rows = db.execute(
                text(
                    "SELECT server, COUNT(*) FROM audit_events WHERE kind = 'allowed' AND tool = 'echo' GROUP BY server"
                )
            ).all()
    finally:
        engine.dispose()
    return {str(server): int(count) for server, count in rows}


def audit_check(target: Target, counted: dict[str, int]) -> tuple[str, bool]:
    rows = counted.get(target.via or "", 0)
    match = rows == target.calls
    return f"{target.name} made {target.calls:,} calls, audit has {rows:,} `allowed` rows", match


def measure_workers(
    runs: list[WorkersRun], procs: list[subprocess.Popen[bytes]], upstream_pid: int, args: argparse.Namespace
) -> tuple[list[Target], list[tuple[str, bool]]]:
    """Each run in turn (started now unless it already was), stopped after; the targets and each one's audit check."""
    rates, audits = [], []
    for run in runs:
        if run.gateway is None:
            run.gateway = launch_signoff(procs, run.config, run.config.with_suffix(".log"), run.workers)
            wait_serving(run.gateway, run.port, run.workers)
        if args.wait_quiet > 0:
            wait_quiet(args.wait_quiet)
        print(f"  signoff serve --workers {run.workers}: {args.clients} clients for {args.duration:g}s ...", flush=True)
        target = measure_running(
            run.gateway,
            run.port,
            run.server,
            run.workers,
            [upstream_pid],
            args.clients,
            args.duration,
            args.warmup_seconds,
        )
        stop_gracefully(run.gateway)
        rates.append(target)
        audits.append(audit_check(target, count_audit(args.database_url)))
    return rates, audits


def stop_gracefully(gateway: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and wait: signoff's audit writer drains before it exits, so its rows can be counted."""
    gateway.terminate()
    gateway.wait(timeout=30)


# -- report ---------------------------------------------------------------------------------------


def cpu_text(cpu: dict[str, float]) -> str:
    return " / ".join(f"{cpu[k]:.0f}" if k in cpu else "-" for k in ROLES)


def verdict(met: bool) -> str:
    return "**MET**" if met else "**MISSED**"


def goals(targets: dict[str, Target], workers: list[Target], clients: int) -> tuple[list[str], bool]:
    direct, floor, via = targets["direct-fast"], targets["floor-fast"], targets["via-fast"]
    direct_sdk, via_sdk = targets["direct-sdk"], targets["via-sdk"]
    cpu_ms = via.conc_cpu_us.get("hop", 0.0) / 1000
    ratio = via.rate / direct.rate if direct.rate else 0.0
    direct_p99, via_p99 = percentile(direct.conc_ms, 99), percentile(via.conc_ms, 99)
    p99_ratio = via_p99 / direct_p99 if direct_p99 else 0.0
    added = statistics.median(via.seq_ms) - statistics.median(direct.seq_ms)
    sdk_ratio = via_sdk.rate / direct_sdk.rate if direct_sdk.rate else 0.0
    met = [
        cpu_ms <= CPU_GOAL_MS,
        ratio >= RATE_GOAL,
        p99_ratio <= P99_GOAL,
        added <= ADDED_MS_GOAL,
        sdk_ratio >= SDK_RATE_GOAL,
    ]
    lines = [
        f"- **Goal 1**, signoff's CPU per allowed call at {clients} clients: **{cpu_ms:.3f} ms** "
        f"(goal ≤ {CPU_GOAL_MS} ms): {verdict(met[0])}",
        f"- **Goal 2**, the rate through signoff at {clients} clients: **{ratio:.3f}x** the direct rate "
        f"({via.rate:,.0f} against {direct.rate:,.0f} calls/s; goal ≥ {RATE_GOAL}x): {verdict(met[1])}",
        f"- **Goal 3**, p99 at {clients} clients: **{via_p99:.1f} ms**, **{p99_ratio:.2f}x** the direct p99 of "
        f"{direct_p99:.1f} ms (goal ≤ {P99_GOAL:g}x): {verdict(met[2])}",
        f"- **Goal 4**, added to a sequential call (median through signoff minus median direct): **{added:.3f} ms** "
        f"(goal ≤ {ADDED_MS_GOAL} ms): {verdict(met[3])}",
        f"- **Goal 5**, no regression against the SDK upstream, taken as via-sdk keeping ≥ {SDK_RATE_GOAL}x "
        f"direct-sdk's rate at {clients} clients: **{sdk_ratio:.3f}x** ({via_sdk.rate:,.0f} against "
        f"{direct_sdk.rate:,.0f} calls/s): {verdict(met[4])}",
    ]
    if workers:
        scaling = ", ".join(f"{t.name}: {t.rate:,.0f} calls/s ({t.rate / workers[0].rate:.2f}x)" for t in workers)
        lines.append(f"- **Goal 6**, throughput with several workers is reported: {scaling}; the table below")
    else:
        lines.append("- **Goal 6**, throughput with several workers: not measured in this run (`--workers ''`)")
    floor_ratio = floor.rate / direct.rate if direct.rate else 0.0
    floor_cpu = floor.conc_cpu_us.get("hop", 0.0)
    floor_added = statistics.median(floor.seq_ms) - statistics.median(direct.seq_ms)
    floor_p99 = percentile(floor.conc_ms, 99) / direct_p99 if direct_p99 else 0.0
    lines.append(
        f"- Floor (no goal): a bare forwarding hop on this stack keeps **{floor_ratio:.3f}x** the direct rate at "
        f"{clients} clients, with a p99 {floor_p99:.2f}x direct's, adds {floor_added:.3f} ms to a sequential call "
        f"and costs its process {floor_cpu:.0f} µs of CPU per call (signoff: {cpu_ms * 1000:.0f} µs)"
    )
    return lines, all(met)


def report(
    targets: dict[str, Target], workers: list[Target], audits: list[tuple[str, bool]], args: argparse.Namespace
) -> tuple[str, bool]:
    rows = [
        "| target | seq median ms | seq p90 ms | seq p99 ms | conc calls/s | vs direct | conc median ms | conc p99 ms "
        "| seq CPU µs/call client / hop / upstream | conc CPU µs/call client / hop / upstream "
        "| other load, cores (seq / conc) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for t in targets.values():
        direct = targets["direct-" + t.name.split("-", 1)[1]]
        versus = f"{t.rate / direct.rate:.3f}x" if t is not direct and direct.rate else ""
        rows.append(
            f"| {t.name} | {statistics.median(t.seq_ms):.3f} | {percentile(t.seq_ms, 90):.3f} "
            f"| {percentile(t.seq_ms, 99):.3f} | {t.rate:,.0f} | {versus} | {statistics.median(t.conc_ms):.2f} "
            f"| {percentile(t.conc_ms, 99):.2f} | {cpu_text(t.seq_cpu_us)} | {cpu_text(t.conc_cpu_us)} "
            f"| {t.seq_other:.2f} / {t.conc_other:.2f} |"
        )
    verdicts, ok = goals(targets, workers, args.clients)
    machine = (
        f"{platform.python_implementation()} {platform.python_version()} on {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs; load average before the run {args.loadavg}"
    )
    settings = (
        f"sequential: {args.calls} calls after {args.warmup_calls} warm-up; concurrent: {args.clients} clients, "
        f"{args.duration:g} s after {args.warmup_seconds:g} s warm-up; one keep-alive connection and MCP session "
        f'per client; `tools/call echo {{"text":"hi"}}`, protocol {PROTOCOL_VERSION}'
    )
    lines = [
        "# Gateway benchmark: `tools/call` direct, through a bare forwarding hop, and through signoff",
        "",
        f"Generated by `python bench/bench_gateway.py{' --quick' if args.quick else ''}` on "
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}.",
        "",
        f"- Machine: {machine}",
        f"- {settings}",
        "- Client, hop and upstream all run on this machine. The hop is the process between client and upstream: "
        "signoff for via-*, bench/floor_proxy.py for floor-fast (raw ASGI under uvicorn with signoff's HTTP "
        "settings, forwarding body and session header over signoff's connection pool; no MCP logic, no audit). "
        "CPU µs/call is each process's user+system time over the measured calls (from /proc, 10 ms ticks), `-` "
        "where the process is not in the path; `vs direct` is the concurrent rate against the same upstream's.",
        "- Audit log on: SQLite (WAL) in a temp dir, allow-all policy.",
        "- Other load: CPU used by processes outside the benchmark while it measured (machine busy time from "
        "/proc/stat minus the three processes); above ~0.1 cores the rates and latencies are disturbed, "
        "the CPU µs/call much less so.",
        "",
        *rows,
        "",
        f"## Goals (the fast upstream, {args.clients} clients unless said)",
        "",
        *verdicts,
        "",
    ]
    if workers:
        database = args.database_url.rsplit("@", 1)[-1]
        lines += [
            f"## `signoff serve --workers N` ({args.clients} clients, fast upstream, PostgreSQL {database})",
            "",
            "CPU µs/call of signoff is summed over the master and every worker process. Each N serves the fast "
            "upstream under its own server name, so its audit rows count apart.",
            "",
            f"| workers | conc calls/s | vs {workers[0].name} | vs direct | conc median ms | conc p99 ms "
            "| conc CPU µs/call client / signoff / upstream | other load, cores |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
        ]
        direct = targets["direct-fast"]
        for t in workers:
            lines.append(
                f"| {t.name.split()[0]} | {t.rate:,.0f} | {t.rate / workers[0].rate:.2f}x "
                f"| {t.rate / direct.rate:.3f}x | {statistics.median(t.conc_ms):.2f} | {percentile(t.conc_ms, 99):.2f} "
                f"| {cpu_text(t.conc_cpu_us)} | {t.conc_other:.2f} |"
            )
        lines.append("")
    audit_lines = [f"- {text}: {'match' if match else '**MISMATCH**'}" for text, match in audits]
    lines += ["## Audit (one `allowed` row per call made through signoff, warm-ups included)", "", *audit_lines, ""]
    return "\n".join(lines), ok


def worker_counts(text: str) -> list[int]:
    counts = [int(n) for n in text.replace(" ", "").split(",") if n]
    return [] if counts == [0] else counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a short run: 300 calls, 2 s concurrent")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup-calls", type=int, default=200)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup-seconds", type=float, default=1.0)
    parser.add_argument(
        "--wait-quiet", type=float, help="wait up to N s for a quiet machine per target (60; none with --quick)"
    )
    parser.add_argument("--workers", default="1,2", help="`signoff serve --workers N` for each N ('' or 0: none)")
    parser.add_argument("--database-url", default=DATABASE, help="PostgreSQL for --workers (created, emptied)")
    parser.add_argument("--output", type=Path, default=HERE / "results-gateway.md")
    parser.add_argument("--profile", type=Path, help="sample signoff with py-spy in a pass after via-fast, into DIR")
    parser.add_argument("--keep-going", action="store_true", help="exit 0 even if a goal is missed")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.warmup_calls, args.duration, args.warmup_seconds = 300, 50, 2.0, 0.5
    if args.wait_quiet is None:
        args.wait_quiet = 0.0 if args.quick else 60.0
    counts = worker_counts(args.workers)
    args.loadavg = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"

    with tempfile.TemporaryDirectory(prefix="signoff-bench-") as tmp_name, processes() as procs:
        tmp = Path(tmp_name)
        fast_port, sdk_port, floor_port, gateway_port = free_port(), free_port(), free_port(), free_port()
        fast = start(procs, [sys.executable, str(HERE / "fast_upstream.py"), str(fast_port)], tmp / "fast.log")
        sdk = start(procs, [sys.executable, str(HERE / "sdk_upstream.py"), str(sdk_port)], tmp / "sdk.log")
        floor_command = [
            sys.executable,
            str(HERE / "floor_proxy.py"),
            str(floor_port),
            f"http://{HOST}:{fast_port}/mcp",
        ]
        floor = start(procs, floor_command, tmp / "floor.log")
        database = f"sqlite:///{tmp / 'signoff.db'}"
        config = write_config(tmp / "signoff.toml", gateway_port, {"fast": fast_port, "sdk": sdk_port}, database)
        gateway = launch_signoff(procs, config, tmp / "signoff.log")
        runs = []
        for n in counts:
            port = free_port()
            run_config = write_config(tmp / f"workers-{n}.toml", port, {f"fast-w{n}": fast_port}, args.database_url)
            runs.append(WorkersRun(n, port, run_config))
        try:
            if runs:
                empty_database(args.database_url)
            if args.quick:  # start the workers' gateways now, beside the others, rather than in turn later
                for run in runs:
                    run.gateway = launch_signoff(procs, run.config, run.config.with_suffix(".log"), run.workers)
            wait_http(fast_port, "/mcp", fast)
            wait_http(sdk_port, "/mcp", sdk)
            wait_http(floor_port, "/mcp", floor)
            wait_serving(gateway, gateway_port)
            for run in runs:
                if run.gateway is not None:
                    wait_serving(run.gateway, run.port, run.workers)
            up, hop = {"upstream": [fast.pid]}, {"hop": [gateway.pid]}
            targets = {
                "direct-fast": Target("direct-fast", fast_port, "/mcp", None, up),
                "floor-fast": Target("floor-fast", floor_port, "/mcp", None, {**up, "hop": [floor.pid]}),
                "via-fast": Target("via-fast", gateway_port, "/mcp/fast", TOKEN, {**up, **hop}, "fast"),
                "direct-sdk": Target("direct-sdk", sdk_port, "/mcp", None, {"upstream": [sdk.pid]}),
                "via-sdk": Target("via-sdk", gateway_port, "/mcp/sdk", TOKEN, {"upstream": [sdk.pid], **hop}, "sdk"),
            }
            print(f"measuring (signoff pid {gateway.pid}, floor pid {floor.pid}, fast pid {fast.pid}) ...", flush=True)
            asyncio.run(measure(list(targets.values()), args))
            stop_gracefully(gateway)
            counted = count_audit(database)
            audits = [audit_check(t, counted) for t in targets.values() if t.via]
            workers, worker_audits = measure_workers(runs, procs, fast.pid, args)
            if runs:
                empty_database(args.database_url)
        except BaseException:
            for log in sorted(tmp.glob("*.log")):
                print_tail(log)
            raise

    text, ok = report(targets, workers, audits + worker_audits, args)
    print()
    print(text)
    args.output.write_text(text)
    print(f"written to {args.output}")
    if not all(match for _, match in audits + worker_audits):
        return 2
    return 0 if ok or args.keep_going else 1


if __name__ == "__main__":
    sys.exit(main())
