"""Instructions signoff executes per allowed `tools/call`, counted by valgrind's callgrind: a repeatable A/B.

Run: python bench/bench_instructions.py [--clients 1,16] [--calls 320] [--tree DIR ...] [--output FILE]

Times and CPU seconds on a shared 2-vCPU machine vary by ±10% between runs of the same code (bench_gateway
shows it), which hides the change a single commit makes. Instructions do not vary: callgrind counts those
signoff's process executes in user space (the interpreter, the C extensions, SQLite), the same for the same code
and inputs whatever else the machine runs; what the kernel does for its syscalls is not counted. So to see what a
change bought, measure the code before it and after it in one run: `git worktree add /tmp/before COMMIT`, then
`--tree /tmp/before --tree .`.

For each tree, `signoff serve` (that tree's code, audit log on in SQLite, an allow-all policy) runs under
callgrind with instrumentation off; after a warm-up of 100 calls it is switched on for `--calls` calls of the
fast upstream's `echo` from C concurrent clients, then off, and the count is read. Slow (signoff runs ~50x slower
under valgrind: about 40 s per measurement), and needs valgrind (`apt-get install valgrind`). What runs on a timer
during the measured calls (the write-ahead log checkpoint each second, the approvals poll) is counted too, spread
over the calls; with the default `--calls` that is a few percent, the same for every tree.
"""

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_gateway import TOKEN, write_config
from harness import HERE, ROOT, BenchError, free_port, processes, start, wait_http
from load_client import McpClient

WARM_UP = 100


async def calls(port: int, clients: int, count: int) -> None:
    agents = [McpClient(port, "/mcp/fast", TOKEN) for _ in range(clients)]
    await asyncio.gather(*(a.start() for a in agents))

    async def each(agent: McpClient) -> None:
        for _ in range(count // clients):
            await agent.call()

    try:
        await asyncio.gather(*(each(a) for a in agents))
    finally:
        await asyncio.gather(*(a.close() for a in agents), return_exceptions=True)


def callgrind(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


def instructions(tree: Path, clients: int, count: int) -> float:
    """Instructions signoff (the code in `tree`) executed per call, `count` calls from `clients` clients."""
    with tempfile.TemporaryDirectory(prefix="signoff-instr-") as tmp_name, processes() as procs:
        tmp = Path(tmp_name)
        fast_port, gateway_port = free_port(), free_port()
        fast = start(procs, [sys.executable, str(HERE / "fast_upstream.py"), str(fast_port)], tmp / "fast.log")
        (tmp / "gateway").mkdir()
        config = write_config(
            tmp / "gateway" / "signoff.toml", gateway_port, {"fast": fast_port}, f"sqlite:///{tmp / 'signoff.db'}"
        )
        out = tmp / "callgrind.out"
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
        command += [
            sys.executable,
            "-m",
            "integrations.cli",
            "--config",
            str(config),
            "serve",
            "--log-level",
            "warning",
        ]
        gateway = start(procs, command, tmp / "signoff.log", tree=tree)
        wait_http(fast_port, "/mcp", fast)
        wait_http(gateway_port, "/healthz", gateway, timeout=600)  # imports alone take a minute under valgrind
        asyncio.run(calls(gateway_port, clients, WARM_UP))
        callgrind("--instr=on", str(gateway.pid))
        asyncio.run(calls(gateway_port, clients, count))
        callgrind("--instr=off", str(gateway.pid))
        callgrind("--dump", str(gateway.pid))
        time.sleep(1)
        totals = [
            int(line.split()[1])
            for dump in tmp.glob("callgrind.out*")
            for line in dump.read_text(errors="replace").splitlines()
            if line.startswith(("summary:", "totals:"))
        ]
        if not totals:
            raise BenchError(f"callgrind wrote no counts; signoff's log:\n{(tmp / 'signoff.log').read_text()[-2000:]}")
        return max(totals) / (count // clients * clients)


def label(tree: Path) -> str:
    """The tree's commit, short hash and subject, or its path when it is not a git checkout."""
    found = subprocess.run(["git", "-C", str(tree), "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    subject = found.stdout.strip()
    return (subject[:90] + "…" if len(subject) > 90 else subject) if found.returncode == 0 and subject else str(tree)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", default="1,16", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--calls", type=int, default=320)
    parser.add_argument("--tree", type=Path, action="append", help="a checkout whose code to measure (repeatable)")
    parser.add_argument("--output", type=Path, help="also write the markdown table here")
    args = parser.parse_args()
    trees = [t.resolve() for t in (args.tree or [ROOT])]
    counts = [int(c) for c in args.clients.split(",")]
    rows = ["| code | " + " | ".join(f"{c} client{'s' if c > 1 else ''}" for c in counts) + " |"]
    rows.append("| --- |" + " ---: |" * len(counts))
    for tree in trees:
        measured = [instructions(tree, c, args.calls) for c in counts]
        rows.append(f"| {label(tree)} | " + " | ".join(f"{m / 1000:,.0f} k" for m in measured) + " |")
        print(rows[-1], flush=True)
    text = "\n".join(["Instructions signoff executes per allowed `tools/call` (callgrind, user space):", "", *rows, ""])
    print(text)
    if args.output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
