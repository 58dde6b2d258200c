"""Hold many `tools/call`s for approval at once in one signoff: memory, and decision-to-response latency.

Run: python bench/bench_approvals.py [--calls 10000] [--sample 500] [--burst 200] [--profile DIR]

It starts bench/fast_upstream.py and a `signoff serve` on free loopback ports (SQLite in a temp dir,
one agent, one approver `alice`, a policy that sends `echo` to alice for approval with a 1 h timeout,
`approval_hold = "30m"`), raises RLIMIT_NOFILE (signoff inherits it), then:

1. warm-up: one held call, approved, must come back with the echoed text (checks that signoff takes
   the stateless 2026-07-28 revision and holds the call);
2. creation: N concurrent `tools/call echo {"text": "call-i"}`, one connection each (a hand-written
   HTTP/1.1 client on asyncio streams, so the bench itself stays cheap), and waits until all N rows are
   pending in the SQLite file and signoff's CPU has gone quiet (every call is then waiting on its bell);
3. memory: signoff's VmRSS (and VmHWM, the peak) from /proc with all N calls held;
4. latency, one at a time: approves a sample spread evenly over the N calls via
   `POST /api/approvals/{id}/approve`, one after another, timing from just before the approve is written
   to the moment the held call's full response has been read (checked: a non-error result echoing its
   text); then a burst: `--burst` approvals sent at once over separate connections;
5. release: approves every remaining call (`--release approve`, checking each response), or rejects them,
   or just stops signoff (`kill`).

Goals: under 300 MB RSS with 10,000 held calls, and under 50 ms p99 from decision to response (the
one-at-a-time sample). The markdown report is printed and written to bench/results-approvals.md.
Only 127.0.0.1 is used; every subprocess is killed in `finally`.
"""

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import signal
import socket
import sqlite3
import statistics
import subprocess
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
    ROOT,
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

VERSION = "2026-07-28"
AGENT_TOKEN = "bench-agent-token-0123456789"  # noqa: S105 - a throwaway loopback token
APPROVER_TOKEN = "bench-alice-approver-token-0123456789"  # noqa: S105 - likewise
SERVER = "fast"
MEMORY_GOAL_MB = 300.0
P99_GOAL_MS = 50.0
POLICY = {
    "version": "1",
    "default": "allow",
    "tools": {"echo": {"action": "require_approval", "approval": {"approvers": ["alice"], "timeout": "1h"}}},
}


# -- a small HTTP/1.1 client on asyncio streams ------------------------------------------------------


def request_bytes(method: str, path: str, port: int, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def open_connection(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(HOST, port)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


async def close(writer: asyncio.StreamWriter | None) -> None:
    if writer is None:
        return
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def call_body(index: int, text: str) -> bytes:
    message = {
        "jsonrpc": "2.0",
        "id": index,
        "method": "tools/call",
        "params": {
            "name": "echo",
            "arguments": {"text": text},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": VERSION,
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }
    return json.dumps(message, separators=(",", ":")).encode()


CALL_HEADERS = {
    "Authorization": f"Bearer {AGENT_TOKEN}",
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": VERSION,
    "Mcp-Method": "tools/call",
    "Mcp-Name": "echo",
}


class HeldCall:
    """One `tools/call` on its own connection; `done` resolves when its response has been read in full."""

    __slots__ = ("done", "done_at", "error", "index", "result", "task", "text", "writer")

    def __init__(self, index: int) -> None:
        self.index = index
        self.text = f"call-{index}"
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None
        self.done_at = 0.0
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def send(self, port: int) -> asyncio.StreamReader:
        reader, self.writer = await open_connection(port)
        self.writer.write(request_bytes("POST", f"/mcp/{SERVER}", port, CALL_HEADERS, call_body(self.index, self.text)))
        await self.writer.drain()
        return reader

    async def receive(self, reader: asyncio.StreamReader) -> None:
        try:
            status, headers, body = await read_response(reader)
            self.done_at = time.perf_counter()
            self.result = check_echo(status, headers, body, self.index, self.text)
        except Exception as exc:  # recorded and reported; the bench fails on any
            self.done_at = time.perf_counter()
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            await close(self.writer)
            self.writer = None
            if not self.done.done():
                self.done.set_result(None)


def check_echo(status: int, headers: dict[str, str], body: bytes, request_id: int, text: str) -> dict[str, Any]:
    if status != 200:
        raise BenchError(f"HTTP {status}: {body[:300]!r}")
    content_type = headers.get("content-type", "").split(";", 1)[0].strip()
    if content_type != "application/json":
        raise BenchError(f"unexpected content-type {content_type!r}: {body[:300]!r}")
    message = json.loads(body)
    result = message.get("result") if message.get("id") == request_id else None
    if not isinstance(result, dict) or result.get("isError"):
        raise BenchError(f"not a successful result: {body[:300]!r}")
    content = result.get("content") or [{}]
    if content[0].get("text") != text:
        raise BenchError(f"expected the text {text!r} back: {body[:300]!r}")
    return result


class Approver:
    """A keep-alive connection that approves (or rejects) requests as alice."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> "Approver":
        self.reader, self.writer = await open_connection(self.port)
        return self

    async def decide(self, request_id: str, verdict: str = "approve") -> float:
        """Send the decision; returns when its own answer was read (perf_counter)."""
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        body = json.dumps({"reason": "bench"}).encode()
        headers = {"Authorization": f"Bearer {APPROVER_TOKEN}", "Content-Type": "application/json"}
        self.writer.write(request_bytes("POST", f"/api/approvals/{request_id}/{verdict}", self.port, headers, body))
        status, response_headers, data = await read_response(self.reader)
        answered = time.perf_counter()
        if response_headers.get("connection", "").lower() == "close":
            await self.close()
        if status != 200:
            raise BenchError(f"{verdict} {request_id}: HTTP {status} {data[:300]!r}")
        return answered

    async def close(self) -> None:
        await close(self.writer)
        self.reader = self.writer = None


async def http_get(port: int, path: str) -> tuple[int, Any]:
    reader, writer = await open_connection(port)
    try:
        headers = {"Connection": "close", "Authorization": f"Bearer {APPROVER_TOKEN}"}
        writer.write(request_bytes("GET", path, port, headers, b""))
        status, _, body = await read_response(reader)
        return status, json.loads(body) if body else None
    finally:
        await close(writer)


# -- processes and /proc ------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def memory_mb(pid: int) -> dict[str, float]:
    status = proc_status(pid)
    return {key: int(status[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM", "RssAnon") if key in status}


def threads(pid: int) -> int:
    return int(proc_status(pid).get("Threads", "0"))


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def raise_nofile(needed: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        raise SystemExit(f"RLIMIT_NOFILE is {soft} (hard {hard}); {needed} descriptors are needed for these --calls")
    return soft, hard


def write_config(tmp: Path, port: int, upstream_port: int) -> tuple[Path, Path]:
    policy = tmp / "policy.json"
    policy.write_text(json.dumps(POLICY))
    database = tmp / "signoff.db"
    lines = [
        "[gateway]",
        f'host = "{HOST}"',
        f"port = {port}",
        f'database_url = "sqlite:///{database}"',
        'approval_hold = "30m"',
        "",
        "[[agents]]",
        'name = "agent"',
        f'token = "{AGENT_TOKEN}"',
        "",
        "[[approvers]]",
        'name = "alice"',
        f'token = "{APPROVER_TOKEN}"',
        "groups = []",
        "",
        "[[servers]]",
        f'name = "{SERVER}"',
        f'url = "http://{HOST}:{upstream_port}/mcp"',
        f"policy = {json.dumps(str(policy))}",
        "",
    ]
    config = tmp / "signoff.toml"
    config.write_text("\n".join(lines))
    return config, database


class Rows:
    """Reads signoff's SQLite file directly (WAL: readers never block its writer)."""

    def __init__(self, database: Path) -> None:
        self.db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)

    def count(self, status: str) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM approval_requests WHERE status = ?", (status,)).fetchone()[0])

    def statuses(self) -> dict[str, int]:
        rows = self.db.execute("SELECT status, COUNT(*) FROM approval_requests GROUP BY status").fetchall()
        return dict(rows)

    def pending_ids(self) -> dict[str, str]:
        """text argument -> request id (as the API takes it) for every pending request."""
        rows = self.db.execute("SELECT id, arguments FROM approval_requests WHERE status = 'pending'").fetchall()
        return {json.loads(arguments)["text"]: str(request_id) for request_id, arguments in rows}

    def close(self) -> None:
        self.db.close()


# -- the phases ---------------------------------------------------------------------------------------


@dataclass
class Results:
    calls: int
    baseline_mb: dict[str, float] = field(default_factory=dict)
    held_mb: dict[str, float] = field(default_factory=dict)
    end_mb: dict[str, float] = field(default_factory=dict)
    held_fds: int = 0
    held_threads: int = 0
    client_mb: float = 0.0
    sent_s: float = 0.0  # all N requests written
    pending_s: float = 0.0  # all N rows pending in the database
    quiet_s: float = 0.0  # and signoff's CPU quiet
    create_cpu_s: float = 0.0  # signoff CPU seconds spent taking the N calls
    create_failed: int = 0  # calls answered (with an error) before any decision
    warmup_ms: float = 0.0
    single_ms: list[float] = field(default_factory=list)
    single_approve_ms: list[float] = field(default_factory=list)
    single_at: list[float] = field(default_factory=list)  # when each sampled decision was sent (perf_counter)
    burst_ms: list[float] = field(default_factory=list)
    burst_wall_ms: float = 0.0
    release: str = ""
    release_s: float = 0.0
    released: int = 0
    errors: list[str] = field(default_factory=list)
    final_statuses: dict[str, int] = field(default_factory=dict)
    api_pending_listed: int = 0
    idle_cpu_cores: float = 0.0  # signoff's CPU use with every call held and nothing happening
    decide_other_cores: float = 0.0  # CPU used by other processes on the machine during the sample
    notes: list[str] = field(default_factory=list)
    signoff_errors: dict[str, int] = field(default_factory=dict)
    unanswered: int = 0  # held calls with no answer when the release stopped
    released_ok: int = 0  # held calls that got the right answer after the release decided them


async def wait_pending(rows: Rows, calls: list[HeldCall], base: int, deadline: float) -> list[HeldCall]:
    """Until every call is either pending in the database or already answered (an error); returns the latter."""
    while True:
        failed = [c for c in calls if c.done.done()]
        pending = rows.count("pending") - base
        if pending + len(failed) >= len(calls):
            return failed
        if time.monotonic() > deadline:
            raise BenchError(f"only {pending} of {len(calls)} requests pending before the deadline")
        await asyncio.sleep(0.1)


async def wait_quiet(pid: int, window: float = 1.0, limit: float = 0.05, give_up: float = 120.0) -> float:
    """Until signoff uses under `limit` of a core over `window` seconds; returns that reading."""
    deadline = time.monotonic() + give_up
    while True:
        before = cpu_seconds(pid)
        await asyncio.sleep(window)
        used = (cpu_seconds(pid) - before) / window
        if used < limit or time.monotonic() > deadline:
            return used


async def warm_up(port: int, rows: Rows, results: Results) -> None:
    call = HeldCall(-1)
    call.text = "warm-up"
    reader = await call.send(port)
    call.task = asyncio.create_task(call.receive(reader))
    deadline = time.monotonic() + 30
    while not (ids := rows.pending_ids()).get("warm-up"):
        if call.done.done():
            raise BenchError(f"the warm-up call was answered without being held: {call.error or call.result}")
        if time.monotonic() > deadline:
            raise BenchError("the warm-up call never became a pending request")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    status, listing = await http_get(port, "/api/approvals?status=pending")
    if status != 200 or [a["id"] for a in listing["approvals"]] != [_uuid(ids["warm-up"])]:
        raise BenchError(f"GET /api/approvals?status=pending does not show the warm-up request: {listing}")
    approver = await Approver(port).open()
    try:
        t0 = time.perf_counter()
        await approver.decide(ids["warm-up"])
        await asyncio.wait_for(call.done, 30)
    finally:
        await approver.close()
    if call.error:
        raise BenchError(f"warm-up call: {call.error}")
    results.warmup_ms = (call.done_at - t0) * 1000


def _uuid(hex_id: str) -> str:
    h = hex_id.replace("-", "")
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


async def create_calls(
    port: int, n: int, connect_concurrency: int, window: int, rows: Rows
) -> tuple[list[HeldCall], float]:
    """Send N calls; with `window`, at most that many are sent but not yet recorded as pending at any time."""
    calls = [HeldCall(i) for i in range(n)]
    gate = asyncio.Semaphore(connect_concurrency)
    recorded = [rows.count("pending")]
    base = recorded[0]
    sent = 0
    t0 = time.perf_counter()

    async def watch() -> None:
        while True:
            await asyncio.sleep(0.02)
            recorded[0] = rows.count("pending")

    async def one(call: HeldCall) -> None:
        call.done.add_done_callback(lambda _: finished.__setitem__(0, finished[0] + 1))
        try:
            async with gate:
                reader = await call.send(port)
        except OSError as exc:  # counted as a call answered before any decision
            call.error = f"connect/send: {exc}"
            call.done_at = time.perf_counter()
            call.done.set_result(None)
            return
        call.task = asyncio.create_task(call.receive(reader))

    finished = [0]  # calls already answered (errors): they will never be pending
    watcher = asyncio.create_task(watch()) if window else None
    senders = []
    try:
        for call in calls:
            while window and sent - (recorded[0] - base) - finished[0] >= window:  # noqa: ASYNC110 - counted in the db
                await asyncio.sleep(0.005)
            senders.append(asyncio.create_task(one(call)))
            sent += 1
            if sent % 64 == 0:
                await asyncio.sleep(0)
        await asyncio.gather(*senders)
    finally:
        if watcher is not None:
            watcher.cancel()
    return calls, time.perf_counter() - t0


async def decide_one_at_a_time(
    port: int, sample: list[HeldCall], ids: dict[str, str], results: Results, within: float
) -> None:
    approver = await Approver(port).open()
    try:
        for call in sample:
            t0 = time.perf_counter()
            try:
                answered = await approver.decide(ids[call.text])
                await asyncio.wait_for(asyncio.shield(call.done), within)
                if call.error:
                    raise BenchError(call.error)
            except Exception as exc:  # counted against the sample, reported
                results.errors.append(f"one at a time, call-{call.index}: {type(exc).__name__}: {exc}"[:300])
                await approver.close()
                if len(results.errors) > 20:
                    raise
                continue
            results.single_ms.append((call.done_at - t0) * 1000)
            results.single_approve_ms.append((answered - t0) * 1000)
            results.single_at.append(t0)
    finally:
        await approver.close()


async def decide_burst(port: int, burst: list[HeldCall], ids: dict[str, str], results: Results, within: float) -> None:
    approvers = await asyncio.gather(*(Approver(port).open() for _ in burst))
    await asyncio.sleep(0.5)  # the connections are idle before the burst
    try:
        starts: dict[int, float] = {}

        async def one(approver: Approver, call: HeldCall) -> None:
            starts[call.index] = time.perf_counter()
            await approver.decide(ids[call.text])

        t0 = time.perf_counter()
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(one(a, c) for a, c in zip(approvers, burst, strict=True)), return_exceptions=True),
            within,
        )
        decided = []
        for call, outcome in zip(burst, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                results.errors.append(f"burst, call-{call.index}: {type(outcome).__name__}: {outcome}"[:300])
            else:
                decided.append(call)
        await asyncio.wait_for(asyncio.gather(*(asyncio.shield(c.done) for c in decided)), within)
        results.burst_wall_ms = (max(c.done_at for c in decided) - t0) * 1000 if decided else 0.0
        for call in decided:
            if call.error:
                results.errors.append(f"burst, call-{call.index} after approval: {call.error}"[:300])
            else:
                results.burst_ms.append((call.done_at - starts[call.index]) * 1000)
    finally:
        await asyncio.gather(*(a.close() for a in approvers))


async def release_rest(
    port: int, rest: list[HeldCall], ids: dict[str, str], verdict: str, concurrency: int, stall: float
) -> tuple[float, list[str], int, int]:
    """Decide every call in `rest` over `concurrency` connections; gives up when nothing moves for `stall` s.

    Returns the time taken, the errors, how many held calls never got an answer, and how many got the right one.
    """
    queue = list(rest)
    errors: list[str] = []
    progress = [time.monotonic()]

    retry: list[HeldCall] = []

    async def worker() -> None:
        approver = await Approver(port).open()
        try:
            while queue or retry:
                call, again = (queue.pop(), False) if queue else (retry.pop(), True)
                try:
                    await approver.decide(ids[call.text], verdict)
                    progress[0] = time.monotonic()
                except Exception as exc:  # counted and reported; retried once, as a person would
                    errors.append(normalized(f"{verdict}{' (retry)' if again else ''}: {exc}", 300))
                    await approver.close()
                    if not again and "HTTP 409" not in str(exc):
                        retry.append(call)
        finally:
            await approver.close()

    t0 = time.perf_counter()
    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    answered = 0
    while True:
        now_answered = sum(1 for c in rest if c.done.done())
        if now_answered > answered:
            answered, progress[0] = now_answered, time.monotonic()
        if answered == len(rest) and all(w.done() for w in workers):
            break
        if time.monotonic() - progress[0] > stall:
            errors.append(f"release stalled: nothing decided or answered for {stall:.0f} s")
            break
        await asyncio.sleep(0.1)
    elapsed = time.perf_counter() - t0
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    grouped: dict[str, int] = {}
    for error in errors:
        grouped[error] = grouped.get(error, 0) + 1
    errors = [f"{count}x {error}" if count > 1 else error for error, count in grouped.items()]
    unanswered = len(rest) - answered
    if unanswered:
        errors.append(f"{unanswered} of {len(rest)} held calls got no answer after their {verdict}")
    if verdict == "approve":
        failed = [c for c in rest if c.error]
    else:  # a rejected call answers with signoff's refusal, which check_echo counts as an error
        failed = [c for c in rest if c.error and "not a successful result" not in c.error]
    kinds: dict[str, int] = {}
    for call in failed:
        error = normalized(call.error or "", 220)
        kinds[error] = kinds.get(error, 0) + 1
    errors += [f"{count}x after {verdict}: {error}" for error, count in kinds.items()]
    return elapsed, errors, unanswered, len(rest) - unanswered - len(failed)


@contextmanager
def profiled(pid: int, directory: Path | None, name: str, results: Results) -> Iterator[None]:
    """With --profile DIR, sample signoff with py-spy during one phase; a summary lands beside the raw stacks."""
    if directory is None:
        yield
        return
    with py_spy(pid, directory, name, rate=200) as summary:
        yield
    if summary.exists():
        results.notes.append(f"py-spy profile of the {name} phase: {summary}")


def mtime(path: Path | None) -> float | None:
    return path.stat().st_mtime if path is not None and path.exists() else None


async def traced_snapshot(pid: int, out: Path | None) -> None:
    """Ask bench/traced_signoff.py for a snapshot (the first is its baseline) and wait for the report."""
    before = mtime(out)
    os.kill(pid, signal.SIGUSR1)
    if out is None:
        await asyncio.sleep(5.0)
        return
    deadline = time.monotonic() + 600
    while mtime(out) in (None, before):
        if time.monotonic() > deadline:
            raise BenchError("traced signoff wrote no tracemalloc report")
        await asyncio.sleep(1.0)
    await asyncio.sleep(1.0)


def spread(calls: list[HeldCall], count: int) -> list[HeldCall]:
    """`count` calls spaced evenly over `calls` (first, last and between)."""
    if count >= len(calls):
        return list(calls)
    step = len(calls) / count
    return [calls[int(i * step)] for i in range(count)]


async def run(
    port: int, pid: int, upstream_pid: int, database: Path, args: argparse.Namespace, results: Results
) -> None:
    rows = Rows(database)

    def ours_cpu() -> float:
        return cpu_seconds(pid) + cpu_seconds(upstream_pid) + time.process_time()

    try:
        print("warm-up: one held call, approved ...", flush=True)
        await warm_up(port, rows, results)
        await wait_quiet(pid)
        results.baseline_mb = memory_mb(pid)
        if args.tracemalloc:
            await traced_snapshot(pid, None)
        print(f"  ok in {results.warmup_ms:.1f} ms; signoff RSS {results.baseline_mb['VmRSS']:.1f} MB", flush=True)

        print(f"creating {args.calls:,} held calls ...", flush=True)
        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        base = rows.count("pending")
        with profiled(pid, args.profile, "create", results):
            calls, results.sent_s = await create_calls(port, args.calls, args.connect_concurrency, args.window, rows)
            print(f"  all written in {results.sent_s:.2f} s; waiting for all to be pending ...", flush=True)
            failed = await wait_pending(rows, calls, base, time.monotonic() + args.timeout)
            results.pending_s = time.perf_counter() - t0
        print(f"  all pending after {results.pending_s:.2f} s; waiting for signoff to go quiet ...", flush=True)
        await wait_quiet(pid)
        results.quiet_s = time.perf_counter() - t0
        results.create_cpu_s = cpu_seconds(pid) - cpu0
        failed = [c for c in calls if c.done.done()]
        if failed:
            results.create_failed = len(failed)
            kinds: dict[str, int] = {}
            for call in failed:
                error = call.error or "answered before a decision"
                kinds[error] = kinds.get(error, 0) + 1
            results.errors.append(
                f"{len(failed)} of {len(calls)} calls were answered before any decision: "
                + "; ".join(f"{count}x {error[:200]}" for error, count in kinds.items())
            )
            print(f"  !! {results.errors[-1]}", flush=True)
            calls = [c for c in calls if not c.done.done()]
        ids = rows.pending_ids()
        missing = [c.text for c in calls if c.text not in ids]
        if missing:
            raise BenchError(f"{len(missing)} calls have no pending request, e.g. {missing[:3]}")

        results.held_mb = memory_mb(pid)
        results.held_fds = open_fds(pid)
        results.held_threads = threads(pid)
        results.client_mb = memory_mb(os.getpid())["VmRSS"]
        before = cpu_seconds(pid)
        await asyncio.sleep(4.0)
        results.idle_cpu_cores = (cpu_seconds(pid) - before) / 4.0
        status, listing = await http_get(port, "/api/approvals?status=pending&limit=1000")
        results.api_pending_listed = len(listing["approvals"]) if status == 200 else -1
        if args.tracemalloc:
            await traced_snapshot(pid, args.tracemalloc)
            results.notes.append(f"tracemalloc growth from idle to {len(calls):,} held: {args.tracemalloc}")
        print(
            f"  held: signoff VmRSS {results.held_mb['VmRSS']:.1f} MB, VmHWM {results.held_mb['VmHWM']:.1f} MB, "
            f"{results.held_fds} fds, {results.held_threads} threads, idle CPU {results.idle_cpu_cores:.2f} cores",
            flush=True,
        )

        sample = spread(calls, min(args.sample, len(calls)))
        chosen = {c.index for c in sample}
        others = [c for c in calls if c.index not in chosen]
        burst = spread(others, min(args.burst, len(others))) if args.burst else []
        chosen |= {c.index for c in burst}
        rest = [c for c in calls if c.index not in chosen]

        print(f"deciding {len(sample)} calls one at a time ...", flush=True)
        with profiled(pid, args.profile, "decide", results):
            busy0, mine0, wall0 = machine_busy(), ours_cpu(), time.perf_counter()
            await decide_one_at_a_time(port, sample, ids, results, args.decision_timeout)
            wall = time.perf_counter() - wall0
            ours = ours_cpu() - mine0
            results.decide_other_cores = max(0.0, (machine_busy() - busy0 - ours) / wall)
        print(
            f"  median {statistics.median(results.single_ms):.2f} ms, p99 {percentile(results.single_ms, 99):.2f} ms",
            flush=True,
        )
        if burst:
            print(f"deciding a burst of {len(burst)} at once ...", flush=True)
            await decide_burst(port, burst, ids, results, args.decision_timeout * 10)
            print(f"  all answered in {results.burst_wall_ms:.1f} ms", flush=True)

        results.release = args.release
        if args.release != "kill" and rest:
            print(f"releasing the other {len(rest):,} ({args.release}) ...", flush=True)
            results.release_s, errors, results.unanswered, results.released_ok = await release_rest(
                port, rest, ids, args.release, args.release_concurrency, args.stall
            )
            results.released = len(rest)
            results.errors += errors
            print(
                f"  done in {results.release_s:.1f} s ({len(rest) / results.release_s:,.0f}/s); "
                f"{results.unanswered} unanswered",
                flush=True,
            )
            for error in errors[:10]:
                print(f"  !! {error}", flush=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and ({"approved", "executing"} & set(rows.statuses())):  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # the outcome of the last executions is written in the background
        results.end_mb = memory_mb(pid)
        results.final_statuses = rows.statuses()
    finally:
        rows.close()
        if "calls" in locals():
            for call in calls:
                if call.task is not None and not call.task.done():
                    call.task.cancel()
                await close(call.writer)


# -- report ---------------------------------------------------------------------------------------


def logged_errors(log: str) -> dict[str, int]:
    """The exceptions that end signoff's logged tracebacks, counted (SQL, parameters and ids cut off)."""
    found: dict[str, int] = {}
    in_traceback = False
    for line in log.splitlines():
        if line.lstrip(" |").startswith("Traceback"):
            in_traceback = True
        elif in_traceback and line and not line.startswith((" ", "|")):
            if line.startswith(("The above", "During handling")):
                continue
            key = normalized(line.split("[SQL:", 1)[0].strip())
            found[key] = found.get(key, 0) + 1
            in_traceback = False
    groups = log.count("unhandled errors in a TaskGroup")
    if groups:
        found["a task group failed: ExceptionGroup: unhandled errors in a TaskGroup"] = groups
    return found


def normalized(error: str, limit: int = 200) -> str:
    """An error message with ids and numbers blanked, so that errors of one kind count together."""
    error = re.sub(r"\b[0-9a-f]{32}\b|[0-9a-f-]{36}", "<id>", error)
    return re.sub(r"\d{2,}", "N", error)[:limit]


def latency_row(name: str, values: list[float]) -> str:
    if not values:
        return f"| {name} | 0 | - | - | - | - | - |"
    return (
        f"| {name} | {len(values)} | {statistics.median(values):.2f} | {percentile(values, 90):.2f} "
        f"| {percentile(values, 99):.2f} | {max(values):.2f} | {min(values):.2f} |"
    )


def report(results: Results, args: argparse.Namespace, nofile: tuple[int, int]) -> tuple[str, bool]:
    n = results.calls
    kept = n - results.create_failed  # the calls actually held
    held = results.held_mb
    base = results.baseline_mb
    per_call_kb = (held["VmRSS"] - base["VmRSS"]) * 1024 / kept if kept else 0.0
    p99 = percentile(results.single_ms, 99) if results.single_ms else float("inf")
    memory_ok = held["VmHWM"] < MEMORY_GOAL_MB
    latency_ok = p99 < P99_GOAL_MS
    full = n >= 10_000
    pacing = (
        f"sent with at most {args.window} calls not yet recorded as pending at a time"
        if args.window
        else "sent all at once"
    ) + f" (at most {args.connect_concurrency} connections being opened at once)"
    machine = (
        f"{platform.python_implementation()} {platform.python_version()} on {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs; load average before the run {args.loadavg}; "
        f"RLIMIT_NOFILE {nofile[0]} (hard {nofile[1]})"
    )
    memory_rows = [
        "| signoff memory | VmRSS MB | VmHWM (peak) MB |",
        "| --- | ---: | ---: |",
        f"| idle, after one warm-up approval | {base['VmRSS']:.1f} | {base['VmHWM']:.1f} |",
        f"| **{kept:,} calls held** | **{held['VmRSS']:.1f}** | **{held['VmHWM']:.1f}** |",
    ]
    if results.end_mb:
        memory_rows.append(
            f"| at the end (after release: {results.release}) | {results.end_mb['VmRSS']:.1f} "
            f"| {results.end_mb['VmHWM']:.1f} |"
        )
    latency_rows = [
        "| decision → held call's response | n | median ms | p90 ms | p99 ms | max ms | min ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        latency_row("**one at a time** (goal)", results.single_ms),
        latency_row("  the approve request's own answer", results.single_approve_ms),
        latency_row(f"burst of {len(results.burst_ms)} approves at once", results.burst_ms),
    ]
    created = n / results.pending_s if results.pending_s else 0.0
    lines = [
        f"# Approvals benchmark: {n:,} held calls in one signoff",
        "",
        f"Generated by `python bench/bench_approvals.py {args.argv}` on {time.strftime('%Y-%m-%d %H:%M:%S %Z')} "
        f"(signoff at commit {args.commit}).",
        "",
        f"- Machine: {machine}",
        f"- Setup: bench/fast_upstream.py; `signoff db upgrade`, then `signoff serve` (uvicorn, SQLite WAL in a temp "
        "dir); policy `echo` → "
        'require_approval by alice, timeout 1h; `approval_hold = "30m"`; one agent; stateless 2026-07-28 '
        '`tools/call echo {"text": "call-i"}`, one connection per call, no progress token (JSON answer); '
        f"{n:,} calls {pacing}.",
        f"- Latency: from just before `POST /api/approvals/{{id}}/approve` is written to the held call's full "
        f"response read and checked (non-error, echoes its text); the one-at-a-time sample is {len(results.single_ms)} "
        f"calls spread evenly over the {kept:,}, decided one after another on one keep-alive connection; the burst "
        "sends its approves at once over one connection each. Other processes on the machine used "
        f"{results.decide_other_cores:.2f} cores while the sample ran (from /proc/stat; above ~0.2 the latencies "
        "are disturbed).",
        "",
        *memory_rows,
        "",
        f"- ≈ {per_call_kb:.1f} KB of RSS per held call; {results.held_fds:,} open fds and {results.held_threads} "
        f"threads in signoff while holding; with every call held and nothing happening signoff used "
        f"{results.idle_cpu_cores:.2f} cores (the 2 s poll of new decisions, the 30 s expiry sweep).",
        f"- The bench client's own RSS while holding: {results.client_mb:.0f} MB.",
        "",
        *latency_rows,
        "",
        f"- Creating: all {n:,} requests written in {results.sent_s:.2f} s; all pending in the database after "
        f"{results.pending_s:.2f} s ({created:,.0f} calls/s); signoff quiet after {results.quiet_s:.2f} s; signoff "
        f"spent {results.create_cpu_s:.1f} CPU s ({results.create_cpu_s / max(n, 1) * 1e3:.2f} ms per call).",
        f"- Warm-up call (one held, approved on an idle signoff): {results.warmup_ms:.1f} ms.",
        f"- `GET /api/approvals?status=pending&limit=1000` listed {results.api_pending_listed} while holding.",
    ]
    if results.burst_ms:
        lines.append(
            f"- Burst: all {len(results.burst_ms)} held calls answered {results.burst_wall_ms:.1f} ms after "
            "the first approve was written."
        )
    if results.released:
        answered = results.released - results.unanswered
        right = "the echoed result" if results.release == "approve" else "signoff's refusal"
        lines.append(
            f"- Release ({results.release}): the other {results.released:,} decided over "
            f"{args.release_concurrency} connections; {answered:,} held calls answered in "
            f"{results.release_s:.1f} s ({answered / results.release_s:,.0f}/s), "
            + (
                f"all with {right}"
                if results.released_ok == results.released
                else f"**only {results.released_ok:,} with {right}**"
            )
            + (
                "."
                if not results.unanswered
                else f"; **{results.unanswered:,} never answered** (gave up after {args.stall:.0f} s without progress)."
            )
        )
    lines.append(f"- Requests by status at the end: {json.dumps(results.final_statuses, sort_keys=True)}.")
    if results.errors:
        lines.append(f"- **Errors ({len(results.errors)} kinds):**")
        lines += [f"  - {error[:300]}" for error in results.errors[:12]]
    for error, count in results.signoff_errors.items():
        lines.append(f"- signoff's log: {count}x `{error}`")
    if args.tracemalloc:
        lines.append(
            "- **Run under tracemalloc** (bench/traced_signoff.py): memory and latency are inflated by "
            "tracing; use a run without `--tracemalloc` for the goals."
        )
    lines += [f"- {note}" for note in results.notes]
    lines += [
        "",
        f"- **Memory goal** (< {MEMORY_GOAL_MB:.0f} MB with 10,000 held): peak {held['VmHWM']:.1f} MB, "
        f"RSS {held['VmRSS']:.1f} MB with {kept:,} held: **{'MET' if memory_ok else 'MISSED'}**"
        + ("" if full else " (not a full 10,000-call run)"),
        f"- **Latency goal** (p99 < {P99_GOAL_MS:.0f} ms): p99 {p99:.2f} ms, median "
        f"{statistics.median(results.single_ms):.2f} ms: **{'MET' if latency_ok else 'MISSED'}**"
        + ("" if full else " (not a full 10,000-call run)"),
        "",
    ]
    return "\n".join(lines), memory_ok and latency_ok and not results.errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=10_000, help="concurrent held calls (default 10000)")
    parser.add_argument("--sample", type=int, default=500, help="calls approved one at a time and timed")
    parser.add_argument("--burst", type=int, default=200, help="calls approved at once after the sample (0: none)")
    parser.add_argument(
        "--release",
        choices=["approve", "reject", "kill"],
        default="approve",
        help="what happens to the calls not sampled (default: approve, and check each answer)",
    )
    parser.add_argument("--release-concurrency", type=int, default=32)
    parser.add_argument("--connect-concurrency", type=int, default=256, help="connections being opened at once")
    parser.add_argument(
        "--window",
        type=int,
        default=500,
        help="at most this many calls sent but not yet pending in the database (0: send all at once)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="bound on creating the calls")
    parser.add_argument(
        "--stall",
        type=float,
        default=30.0,
        help="the release gives up when no call was decided or answered for this long",
    )
    parser.add_argument("--decision-timeout", type=float, default=10.0, help="bound on one decision's answer")
    parser.add_argument("--output", type=Path, default=HERE / "results-approvals.md")
    parser.add_argument("--profile", type=Path, help="sample signoff with py-spy while creating and deciding")
    parser.add_argument("--raw", type=Path, help="also write every latency sample and error to this JSON file")
    parser.add_argument(
        "--tracemalloc",
        type=Path,
        help="run signoff under tracemalloc and write where held calls' memory goes to this file",
    )
    parser.add_argument("--keep-going", action="store_true", help="exit 0 even if a goal is missed")
    args = parser.parse_args()
    args.loadavg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    args.argv = " ".join(sys.argv[1:]) or "(defaults)"
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    )
    args.commit = (git.stdout.strip() or "unknown") + (" + uncommitted changes" if dirty.stdout.strip() else "")
    nofile = raise_nofile(args.calls + max(args.burst, args.release_concurrency) + 200)
    results = Results(calls=args.calls)

    with tempfile.TemporaryDirectory(prefix="signoff-bench-approvals-") as tmp_name, processes() as procs:
        tmp = Path(tmp_name)
        upstream_port, gateway_port = free_port(), free_port()
        upstream = start(procs, [sys.executable, str(HERE / "fast_upstream.py"), str(upstream_port)], tmp / "fast.log")
        config, database = write_config(tmp, gateway_port, upstream_port)
        entry = ["-m", "integrations.cli"]
        # As deployed (the Procfile's `release:` step): the schema is migrated first, so the server starts at head.
        subprocess.run(
            [sys.executable, *entry, "--config", str(config), "db", "upgrade"], check=True, capture_output=True
        )
        if args.tracemalloc:
            entry = [str(HERE / "traced_signoff.py"), str(args.tracemalloc.resolve())]
            args.tracemalloc.unlink(missing_ok=True)
        gateway = start(
            procs,
            [sys.executable, *entry, "--config", str(config), "serve", "--log-level", "warning"],
            tmp / "signoff.log",
        )
        try:
            wait_http(upstream_port, "/mcp", upstream)
            wait_http(gateway_port, "/healthz", gateway, timeout=600.0 if args.tracemalloc else 60.0)
            print(f"signoff pid {gateway.pid} on port {gateway_port}, upstream pid {upstream.pid}", flush=True)
            asyncio.run(run(gateway_port, gateway.pid, upstream.pid, database, args, results))
        except BaseException:
            for log in ("fast.log", "signoff.log"):
                text = (tmp / log).read_text(errors="replace")[-4000:]
                if text.strip():
                    print(f"--- {log} (tail) ---\n{text}", file=sys.stderr)
            raise
        results.signoff_errors = logged_errors((tmp / "signoff.log").read_text(errors="replace"))
        if results.signoff_errors:
            results.errors.append(f"signoff logged {sum(results.signoff_errors.values())} errors")

    text, ok = report(results, args, nofile)
    if args.raw is not None:
        args.raw.write_text(
            json.dumps(
                {
                    "single_ms": results.single_ms,
                    "single_approve_ms": results.single_approve_ms,
                    "single_at": [t - results.single_at[0] for t in results.single_at] if results.single_at else [],
                    "burst_ms": results.burst_ms,
                    "errors": results.errors,
                    "signoff_errors": results.signoff_errors,
                }
            )
        )
    print()
    print(text)
    args.output.write_text(text)
    print(f"written to {args.output}")
    return 0 if ok or args.keep_going else 1


if __name__ == "__main__":
    sys.exit(main())
