"""SIGKILL a real `signoff serve` during decision bursts and while approved calls run; count what was lost.

Run: python bench/bench_crash.py [--rounds 10] [--burst 16] [--running 6] [--seed N] [--quick]

The bench process serves, with uvicorn on 127.0.0.1, a real MCP server (the SDK's `MCPServer` over Streamable
HTTP) whose two tools, `apply(key)` and `slow_apply(key, seconds)`, record every execution by its unique `key`:
"executed twice" is counted where the call lands, not from signoff's word. In front of it, each round starts
`python -m integrations.cli --config ... serve` as a child on a fresh SQLite file (one agent, approver `alice`,
both tools `require_approval`), and then:

- decision burst: `--burst` agents' calls (raw Streamable HTTP, revision 2026-07-28) are held for approval; once
  every request is pending, all are approved at once through `POST /api/approvals/{id}/approve`, and the child
  is SIGKILLed after a random number of those approvals have been answered (plus a random 0-50 ms), while the
  held calls run upstream;
- execution: `--running` calls to `slow_apply` (sleeping 0.3-3 s, the last one 3 s) are told "pending",
  approved, and repeated; once the upstream has seen every one start, the child is SIGKILLed at a random moment
  in the next 2.5 s (odd rounds), or 0-30 ms after the upstream answered a random one of them (even rounds: while
  signoff records that outcome and sends the answer), with some finished and some still running.

After each kill signoff restarts on the same database and the bench waits for /healthz 200 (the sweep that fails
calls left `executing` and expires what is overdue runs at startup, before signoff serves, and every 30 s), reads
the rows, then repeats every call as an agent would (same tool and arguments), approves the requests still
pending from before the kill, repeats those again, stops signoff and runs `signoff audit verify`. Counted (goal 0
each): requests lost (a call held or told pending whose row is missing; an approval answered 200, or a result
the agent read, that the row no longer shows), executed twice (the upstream saw a key more than once), left
`executing` after the restart and its sweep, repeats told something wrong (what ran is run again, what did not
run is not run, an unknown result not said as such), and audit chains that do not verify. The report is printed
and written to bench/results-crash.md. Only 127.0.0.1 is used; every child is killed in `finally`.
"""

import argparse
import asyncio
import json
import logging
import platform
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx2
from harness import HERE, HOST, ROOT, free_port
from mcp.server.mcpserver import MCPServer

sys.path.insert(0, str(ROOT))  # run as `python bench/bench_crash.py`: the tests package is one up
from tests.fakes.upstreams import serve_http

VERSION = "2026-07-28"
AGENT_TOKEN = "bench-agent-token-0123456789"  # noqa: S105 - a throwaway loopback token
APPROVER_TOKEN = "bench-alice-approver-token-0123456789"  # noqa: S105 - likewise
SERVER = "crash"
RULE = {"action": "require_approval", "approval": {"approvers": ["alice"], "timeout": "10m"}}
POLICY = {"version": "1", "default": "allow", "tools": {"apply": RULE, "slow_apply": RULE}}
LONGEST = 3.0  # seconds the slowest `slow_apply` of an execution round sleeps
UNKNOWN = "whether it took effect is unknown"
WITHIN = 60.0  # seconds any one wait of the bench may take before it gives up


# -- the upstream: a real MCP server that records every execution --------------------------------------


@dataclass
class Executions:
    """What the upstream ran: how often each key started, and which finished."""

    started: Counter[str] = field(default_factory=Counter)
    finished: set[str] = field(default_factory=set)
    bell: asyncio.Event = field(default_factory=asyncio.Event)  # set at every start; the bench waits on it

    def start(self, key: str) -> None:
        self.started[key] += 1
        self.bell.set()

    async def until(self, done: Callable[[], bool]) -> None:
        while not done():
            self.bell.clear()
            await self.bell.wait()


def upstream_app(seen: Executions) -> Any:
    server = MCPServer("crash-target", version="1.0.0")

    @server.tool(description="Apply a change named by its key.")
    def apply(key: str) -> str:
        seen.start(key)
        seen.finished.add(key)
        return f"applied {key}"

    @server.tool(description="Apply a change named by its key; takes `seconds`.")
    async def slow_apply(key: str, seconds: float) -> str:
        seen.start(key)
        await anyio.sleep(seconds)
        seen.finished.add(key)
        seen.bell.set()
        return f"applied {key}"

    return server.streamable_http_app(streamable_http_path="/mcp")


# -- signoff as a child process ---------------------------------------------------------------------------------


def write_config(directory: Path, port: int, upstream: str, hold: str) -> Path:
    policy = directory / "policy.json"
    policy.write_text(json.dumps(POLICY))
    lines = [
        "[gateway]",
        f'database_url = "sqlite:///{directory / "signoff.db"}"',
        f'approval_hold = "{hold}"',
        "",
        "[[agents]]",
        'name = "agent"',
        f'token = "{AGENT_TOKEN}"',
        "",
        "[[approvers]]",
        'name = "alice"',
        f'token = "{APPROVER_TOKEN}"',
        "",
        "[[servers]]",
        f'name = "{SERVER}"',
        f'url = "{upstream}/mcp"',
        f"policy = {json.dumps(str(policy))}",
        "",
    ]
    config = directory / "signoff.toml"
    config.write_text("\n".join(lines))
    return config


@contextmanager
def signoff(config: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    argv = [sys.executable, "-m", "integrations.cli", "--config", str(config), "serve"]
    argv += ["--host", HOST, "--port", str(port), "--log-level", "warning"]
    with log.open("ab") as out:
        process = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


async def until_healthy(base: str, process: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    async with httpx2.AsyncClient(timeout=2) as http:
        with anyio.fail_after(WITHIN):
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"signoff exited with {process.returncode} before it was healthy")
                try:
                    if (await http.get(f"{base}/healthz")).status_code == 200:
                        return time.monotonic() - started
                except httpx2.TransportError:
                    pass
                await anyio.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


async def audit_verify(config: Path) -> tuple[bool, str]:
    argv = [sys.executable, "-m", "integrations.cli", "--config", str(config), "audit", "verify"]
    done = await anyio.run_process(argv, cwd=ROOT, check=False)
    text = (done.stdout + done.stderr).decode(errors="replace").strip()
    return done.returncode == 0 and "audit chain ok" in text, text


# -- an agent and an approver over HTTP -------------------------------------------------------------------------


@dataclass
class Answer:
    """What one `tools/call` told the agent: `kind` is "ran", a signoff outcome, "broken" or "http NNN"."""

    kind: str
    approval_id: str | None = None
    text: str = ""


def call_body(number: int, tool: str, arguments: dict[str, Any]) -> bytes:
    message = {
        "jsonrpc": "2.0",
        "id": number,
        "method": "tools/call",
        "params": {
            "name": tool,
            "arguments": arguments,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": VERSION,
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }
    return json.dumps(message).encode()


async def call(http: httpx2.AsyncClient, base: str, tool: str, arguments: dict[str, Any]) -> Answer:
    headers = {
        "Authorization": f"Bearer {AGENT_TOKEN}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": VERSION,
        "Mcp-Method": "tools/call",
        "Mcp-Name": tool,
    }
    try:
        response = await http.post(f"{base}/mcp/{SERVER}", content=call_body(1, tool, arguments), headers=headers)
    except httpx2.HTTPError as exc:
        return Answer("broken", text=f"{type(exc).__name__}: {exc}")
    if response.status_code != 200:
        return Answer(f"http {response.status_code}", text=response.text[:300])
    result = response.json().get("result") or {}
    text = " ".join(c.get("text", "") for c in result.get("content") or [])
    if not result.get("isError"):
        return Answer("ran", text=text)
    decision = (result.get("_meta") or {}).get("signoff/decision") or {}
    return Answer(decision.get("outcome", "error"), decision.get("approval_id"), text)


async def approve(http: httpx2.AsyncClient, base: str, approval_id: str) -> int | str:
    try:
        response = await http.post(
            f"{base}/api/approvals/{approval_id}/approve",
            json={"reason": "bench"},
            headers={"Authorization": f"Bearer {APPROVER_TOKEN}"},
        )
    except httpx2.HTTPError as exc:
        return type(exc).__name__
    return response.status_code


async def pending_ids(http: httpx2.AsyncClient, base: str, keys: set[str]) -> dict[str, str]:
    """key -> approval id, once every key has a pending request."""
    found: dict[str, str] = {}
    with anyio.fail_after(WITHIN):
        while True:
            response = await http.get(
                f"{base}/api/approvals",
                params={"status": "pending", "limit": "1000"},
                headers={"Authorization": f"Bearer {APPROVER_TOKEN}"},
            )
            for item in response.json()["approvals"]:
                key = item["arguments"].get("key")
                if key in keys:
                    found[key] = item["id"]
            if len(found) == len(keys):
                return found
            await anyio.sleep(0.05)


# -- the rows ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    id: str
    status: str
    outcome: str | None
    approved: bool  # an approve decision is recorded


def read_rows(database: Path) -> dict[str, list[Row]]:
    """key -> its requests, oldest first, read straight from the SQLite file."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        approved = {str(uuid.UUID(r[0])) for r in db.execute("SELECT request_id FROM approval_decisions")}
        rows: dict[str, list[Row]] = {}
        query = "SELECT id, status, outcome, arguments FROM approval_requests ORDER BY requested_at"
        for request_id, status, outcome, arguments in db.execute(query):
            rid = str(uuid.UUID(request_id))
            rows.setdefault(json.loads(arguments)["key"], []).append(Row(rid, status, outcome, rid in approved))
    return rows


# -- one round ---------------------------------------------------------------------------------------------------


@dataclass
class Round:
    kind: str
    number: int  # the round's keys are b{number}-i (burst) or x{number}-i (execution)
    calls: int = 0
    approvals_ok: int = 0
    killed_after: str = ""
    at_restart: Counter[str] = field(default_factory=Counter)  # status of each call's request after the restart
    lost: list[str] = field(default_factory=list)
    twice: list[str] = field(default_factory=list)
    left_executing: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    unknown_said: int = 0
    answer_lost: int = 0  # ran upstream and recorded, but the kill came before the agent read its answer
    unknown_ran: int = 0  # failed `gateway_stopped` (result unknown) and the upstream had in fact started it
    verify_ok: bool = False
    verify_text: str = ""
    restart_s: float = 0.0
    log_errors: int = 0


def expect_repeat(key: str, row: Row, answer: Answer, ran_before: int, ran_after: int, read: bool) -> str | None:
    """What is wrong with the answer to a repeat of `key`'s call, given where its request stood; None if nothing.

    `read`: the agent read the call's result before the kill. A repeat of a call that ran is a new call (asked
    anew, not run); one whose agent never read the result must be told the call already ran (the earlier
    request is named), not just "Nothing has run", or a second approval would run it twice.
    """
    if row.status == "pending":
        ok = answer.kind == "approval_pending" and answer.approval_id == row.id and ran_after == ran_before
    elif row.status == "approved":
        ok = answer.kind == "ran" and answer.text == f"applied {key}" and ran_after == ran_before + 1
    elif row.status == "failed" and row.outcome == "gateway_stopped":
        ok = answer.kind == "gateway_stopped" and UNKNOWN in answer.text and ran_after == ran_before
    elif row.status in ("executed", "failed"):
        ok = answer.kind == "approval_pending" and answer.approval_id != row.id and ran_after == ran_before
        ok = ok and (read or row.id in answer.text)
    else:
        ok = ran_after == ran_before
    return None if ok else f"{key}: request {row.status}/{row.outcome}, repeat told {answer.kind} ({answer.text[:160]})"


async def after_restart(
    rnd: Round,
    base: str,
    database: Path,
    seen: Executions,
    calls: dict[str, tuple[str, dict[str, Any]]],
    held: dict[str, str],
    approved_ok: set[str],
    told: dict[str, Answer],
) -> None:
    """Count, then repeat every call, then decide what is still pending from before and repeat those."""
    rows = read_rows(database)
    for key in calls:
        if key not in rows:
            if key in held:
                rnd.lost.append(f"{key}: held as {held[key]}, no row after the restart")
            continue
        first = rows[key][0]
        rnd.at_restart[f"{first.status}/{first.outcome}" if first.outcome == "gateway_stopped" else first.status] += 1
        if first.status == "executing":
            rnd.left_executing.append(f"{key}: {first.id}")
        if key in held and first.id != held[key]:
            rnd.lost.append(f"{key}: held as {held[key]}, the row is {first.id}")
        if key in approved_ok and (first.status in ("pending", "rejected", "expired") or not first.approved):
            rnd.lost.append(
                f"{key}: approval answered 200, the row is {first.status} (decision recorded: {first.approved})"
            )
        if key in told and told[key].kind == "ran" and first.status != "executed":
            rnd.lost.append(f"{key}: the agent read its result, the row is {first.status}/{first.outcome}")
        if first.status == "executed" and not (key in told and told[key].kind == "ran"):
            rnd.answer_lost += 1
        if first.outcome == "gateway_stopped":
            rnd.unknown_ran += seen.started[key] > 0
    async with httpx2.AsyncClient(timeout=60, limits=httpx2.Limits(max_connections=200)) as http:
        before = {key: seen.started[key] for key in calls}
        answers = await gather(*(call(http, base, tool, args) for tool, args in calls.values()))
        for (key, answer), ran_before in zip(zip(calls, answers, strict=True), before.values(), strict=True):
            if key not in rows:
                continue
            read = key in told and told[key].kind == "ran"
            wrong = expect_repeat(key, rows[key][0], answer, ran_before, seen.started[key], read)
            if wrong:
                rnd.wrong.append(wrong)
            elif answer.kind == "gateway_stopped":
                rnd.unknown_said += 1
        # What was pending before the kill can still be decided, and then its repeat runs it, once.
        still = {key: row[0].id for key, row in rows.items() if key in calls and row[0].status == "pending"}
        statuses = await gather(*(approve(http, base, rid) for rid in still.values()))
        before = {key: seen.started[key] for key in still}
        answers = await gather(*(call(http, base, *calls[key]) for key in still))
        for key, status, answer in zip(still, statuses, answers, strict=True):
            if status != 200 or answer.kind != "ran" or seen.started[key] != before[key] + 1:
                rnd.wrong.append(f"{key}: pending at the restart, approved ({status}), its repeat told {answer.kind}")
    rnd.twice = [f"{key}: ran {seen.started[key]} times" for key in calls if seen.started[key] > 1]


async def restarted(
    rnd: Round,
    config: Path,
    port: int,
    seen: Executions,
    calls: dict[str, tuple[str, dict[str, Any]]],
    held: dict[str, str],
    approved_ok: set[str],
    told: dict[str, Answer],
) -> Round:
    """After a kill: start signoff again on the same database, check what it says (`after_restart`), stop it,
    count the errors it logged and verify the audit chain."""
    rnd.approvals_ok = len(approved_ok)
    told = {key: answer for key, answer in told.items() if answer.kind != "broken"}
    log = config.parent / "signoff.log"
    mark = log.stat().st_size
    with signoff(config, port, log) as process:
        rnd.restart_s = await until_healthy(f"http://{HOST}:{port}", process)
        await after_restart(
            rnd, f"http://{HOST}:{port}", config.parent / "signoff.db", seen, calls, held, approved_ok, told
        )
        stop(process)
    rnd.log_errors = count_errors(log, mark)
    rnd.verify_ok, rnd.verify_text = await audit_verify(config)
    return rnd


async def gather(*awaitables: Any) -> list[Any]:
    return list(await asyncio.gather(*awaitables))


async def burst_round(number: int, directory: Path, upstream: str, seen: Executions, size: int) -> Round:
    rnd = Round("decision burst", number, calls=size)
    port = free_port()
    base = f"http://{HOST}:{port}"
    log = directory / "signoff.log"
    calls = {f"b{number}-{i}": ("apply", {"key": f"b{number}-{i}"}) for i in range(size)}
    told: dict[str, Answer] = {}
    approved_ok: set[str] = set()
    config = write_config(directory, port, upstream, hold="5m")
    with signoff(config, port, log) as process:
        await until_healthy(base, process)
        limits = httpx2.Limits(max_connections=4 * size)
        async with httpx2.AsyncClient(timeout=120, limits=limits) as http:

            async def agent(key: str) -> None:
                told[key] = await call(http, base, *calls[key])

            tasks = [asyncio.create_task(agent(key)) for key in calls]
            held = await pending_ids(http, base, set(calls))
            # The kill comes after a random one of the burst's 2K events (an approval answered, a call starting
            # upstream), a little later still, so it falls anywhere from the first decision to the last execution.
            kill_after = random.randint(0, 2 * size - 1)
            answered = 0

            async def decide(key: str) -> None:
                nonlocal answered
                status = await approve(http, base, held[key])
                if status == 200:
                    approved_ok.add(key)
                answered += 1
                seen.bell.set()

            def events() -> int:
                return answered + sum(seen.started[key] for key in calls)

            deciding = [asyncio.create_task(decide(key)) for key in held]
            with anyio.fail_after(WITHIN):
                await seen.until(lambda: events() >= kill_after)
            await asyncio.sleep(random.uniform(0, 0.02))
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            ran = sum(seen.started[key] for key in calls)
            rnd.killed_after = f"{answered} of {size} approvals answered, {ran} calls started upstream"
            await asyncio.gather(*deciding, *tasks)
    config = write_config(directory, port, upstream, hold="1s")
    return await restarted(rnd, config, port, seen, calls, held, approved_ok, told)


async def execution_round(number: int, directory: Path, upstream: str, seen: Executions, size: int) -> Round:
    rnd = Round("execution", number, calls=size)
    port = free_port()
    base = f"http://{HOST}:{port}"
    log = directory / "signoff.log"
    sleeps = [round(random.uniform(0.3, LONGEST), 2) for _ in range(size - 1)] + [LONGEST]
    calls = {
        f"x{number}-{i}": ("slow_apply", {"key": f"x{number}-{i}", "seconds": seconds})
        for i, seconds in enumerate(sleeps)
    }
    told: dict[str, Answer] = {}
    approved_ok: set[str] = set()
    config = write_config(directory, port, upstream, hold="0.5s")
    with signoff(config, port, log) as process:
        await until_healthy(base, process)
        async with httpx2.AsyncClient(timeout=120, limits=httpx2.Limits(max_connections=4 * size)) as http:
            first = await gather(*(call(http, base, *calls[key]) for key in calls))
            held = {key: a.approval_id or "" for key, a in zip(calls, first, strict=True) if a.approval_id}
            if len(held) != size or any(a.kind != "approval_pending" for a in first):
                raise RuntimeError(f"expected {size} pending answers, got {[a.kind for a in first]}")
            statuses = await gather(*(approve(http, base, rid) for rid in held.values()))
            approved_ok = {key for key, status in zip(held, statuses, strict=True) if status == 200}

            async def agent(key: str) -> None:
                told[key] = await call(http, base, *calls[key])

            tasks = [asyncio.create_task(agent(key)) for key in calls]
            with anyio.fail_after(WITHIN):
                await seen.until(lambda: all(seen.started[key] for key in calls))
            began = time.monotonic()
            if number % 2:  # anywhere in the runs
                await asyncio.sleep(random.uniform(0, LONGEST - 0.5))
                when = "at random"
            else:  # just after the upstream answered one of them: the outcome is being recorded, the answer sent
                target = random.choice(list(calls)[:-1])
                with anyio.fail_after(WITHIN):
                    await seen.until(lambda: target in seen.finished)
                await asyncio.sleep(random.uniform(0, 0.03))
                when = f"just after {target} finished upstream"
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            done = sum(k in seen.finished for k in calls)
            rnd.killed_after = f"{when}, {time.monotonic() - began:.2f} s into the runs, {done} of {size} done"
            await asyncio.gather(*tasks)
    return await restarted(rnd, config, port, seen, calls, held, approved_ok, told)


def count_errors(log: Path, since: int) -> int:
    """Log lines at ERROR or with a traceback that signoff wrote after the restart."""
    with log.open("rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    return sum(1 for line in text.splitlines() if "Traceback" in line or " ERROR " in line or line.startswith("ERROR"))


# -- the report -----------------------------------------------------------------------------------------------------


def render(args: argparse.Namespace, rounds: list[Round], seconds: float, argv: list[str]) -> str:
    lines = [
        "# Crash rounds: SIGKILL during decision bursts and during execution",
        "",
        f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z} on {platform.node() or 'this machine'}, Python "
        f"{platform.python_version()}, {platform.machine()}; `python bench/bench_crash.py {' '.join(argv)}`"
        f" (seed {args.seed}); {seconds:.0f} s in all",
        "",
        "| kind | rounds | calls | approvals answered 200 | requests lost | executed twice | left `executing` "
        "| repeats told something wrong | unknown result said | audit verify |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for kind in ("decision burst", "execution"):
        these = [r for r in rounds if r.kind == kind]
        if not these:
            continue
        lines.append(
            f"| {kind} | {len(these)} | {sum(r.calls for r in these)} | {sum(r.approvals_ok for r in these)} "
            f"| {sum(len(r.lost) for r in these)} | {sum(len(r.twice) for r in these)} "
            f"| {sum(len(r.left_executing) for r in these)} | {sum(len(r.wrong) for r in these)} "
            f"| {sum(r.unknown_said for r in these)} | {sum(r.verify_ok for r in these)} of {len(these)} ok |"
        )
    states: Counter[str] = Counter()
    for r in rounds:
        states.update(r.at_restart)
    restarts = sorted(r.restart_s for r in rounds)
    lines += [
        "",
        "Goal 0 for each count. Where the calls' requests stood after the restart and its sweep: "
        + ", ".join(f"{state} {n}" for state, n in sorted(states.items()))
        + f". Of the {states['failed/gateway_stopped']} failed `gateway_stopped` (result unknown), the upstream had "
        f"started {sum(r.unknown_ran for r in rounds)}. Ran upstream and recorded `executed` but "
        f"killed before the agent read the answer: {sum(r.answer_lost for r in rounds)} (a repeat is a new call, asked "
        "anew; it must name the run it repeats). Restart to /healthz 200: "
        f"median {restarts[len(restarts) // 2]:.2f} s, longest {restarts[-1]:.2f} s. Log lines at ERROR or with a "
        f"traceback after the restarts: {sum(r.log_errors for r in rounds)}.",
        "",
        "## Rounds",
        "",
        "| # | kind | killed | at the restart | lost | twice | executing | wrong | verify |",
        "| ---: | --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rounds:
        at = ", ".join(f"{s} {n}" for s, n in sorted(r.at_restart.items()))
        lines.append(
            f"| {r.number} | {r.kind} | {r.killed_after} | {at} | {len(r.lost)} | {len(r.twice)} "
            f"| {len(r.left_executing)} | {len(r.wrong)} | {'ok' if r.verify_ok else 'FAILED'} |"
        )
    problems = [
        (f"{r.kind} round {r.number}", what, item)
        for r in rounds
        for what, items in (
            ("lost", r.lost),
            ("twice", r.twice),
            ("executing", r.left_executing),
            ("wrong", r.wrong),
            ("verify", [] if r.verify_ok else [r.verify_text]),
        )
        for item in items
    ]
    lines += ["", "## Problems", ""]
    lines += [f"- {where}, {what}: {item}" for where, what, item in problems] or ["None."]
    return "\n".join(lines) + "\n"


async def main(args: argparse.Namespace, argv: list[str]) -> int:
    random.seed(args.seed)
    seen = Executions()
    rounds: list[Round] = []
    started = time.monotonic()
    app = upstream_app(seen)
    logging.getLogger().setLevel(logging.WARNING)  # MCPServer sets up INFO logging: every HTTP request, otherwise
    async with serve_http(app) as upstream:
        for number in range(1, args.rounds + 1):
            for kind in ("burst", "execution"):
                with tempfile.TemporaryDirectory(prefix=f"signoff-crash-{kind}-") as directory:
                    if kind == "burst":
                        rnd = await burst_round(number, Path(directory), upstream, seen, args.burst)
                    else:
                        rnd = await execution_round(number, Path(directory), upstream, seen, args.running)
                rounds.append(rnd)
                bad = len(rnd.lost) + len(rnd.twice) + len(rnd.left_executing) + len(rnd.wrong) + (not rnd.verify_ok)
                print(f"round {number} {rnd.kind}: killed {rnd.killed_after}; {dict(rnd.at_restart)}; problems {bad}")
    text = render(args, rounds, time.monotonic() - started, argv)
    print(text)
    (HERE / "results-crash.md").write_text(text)
    failed = any(r.lost or r.twice or r.left_executing or r.wrong or not r.verify_ok for r in rounds)
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds of each kind (default 10)")
    parser.add_argument("--burst", type=int, default=20, help="calls held and approved at once per burst round")
    parser.add_argument("--running", type=int, default=6, help="approved calls running upstream per execution round")
    parser.add_argument("--seed", type=int, default=None, help="for the kill moments and sleeps (default: random)")
    parser.add_argument("--quick", action="store_true", help="2 rounds of each kind, 8 and 4 calls")
    parsed = parser.parse_args()
    if parsed.quick:
        parsed.rounds, parsed.burst, parsed.running = 2, 8, 4
    if parsed.seed is None:
        parsed.seed = random.randrange(1_000_000)
    sys.exit(asyncio.run(main(parsed, sys.argv[1:])))
