"""Two checkouts of signoff timed side by side, in alternating short rounds: an A/B of latency, rate and CPU.

Run: python bench/bench_ab.py --tree /tmp/before --tree . [--rounds 8] [--calls 300] [--clients 64] [--seconds 2]
     [--upstream fast|sdk] [--output FILE]

This machine's speed drifts by half within minutes (shared cores), so two `bench_gateway` runs minutes apart
compare the machine as much as the code. Here one upstream (the fast one, whose answers are JSON, or the SDK's,
whose answers are event streams) serves the direct target and one `signoff serve`
per tree (each its own code, audit log on in SQLite, an allow-all policy), and each round measures every target
in turn, in an order that alternates (ABBA), so a drift hits them alike: `--calls` sequential calls, then
`--clients` concurrent clients for `--seconds`. The figures are the medians over the rounds; `bench_instructions`
is the A/B that does not depend on timing at all, but it cannot see a change in waiting (a loop turn, a wake-up).
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench_gateway import TOKEN, write_config
from bench_instructions import label
from harness import HERE, cpu_seconds, free_port, percentile, processes, start, wait_http
from load_client import McpClient


@dataclass
class Side:
    name: str
    port: int
    path: str
    token: str | None
    pid: int | None  # the hop's process, whose CPU is read; None for direct
    seq_ms: list[float] = field(default_factory=list)  # the median of each round
    seq_cpu: list[float] = field(default_factory=list)  # µs per call, each round
    rate: list[float] = field(default_factory=list)
    conc_cpu: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)


async def sequential(side: Side, calls: int) -> None:
    agent = McpClient(side.port, side.path, side.token)
    await agent.start()
    try:
        for _ in range(20):  # the connection and the session warm
            await agent.call()
        cpu = cpu_seconds(side.pid) if side.pid else 0.0
        took = []
        for _ in range(calls):
            started = time.perf_counter()
            await agent.call()
            took.append((time.perf_counter() - started) * 1000)
        if side.pid:
            side.seq_cpu.append((cpu_seconds(side.pid) - cpu) / calls * 1e6)
        side.seq_ms.append(statistics.median(took))
    finally:
        await agent.close()


async def concurrent(side: Side, clients: int, seconds: float) -> None:
    agents = [McpClient(side.port, side.path, side.token) for _ in range(clients)]
    await asyncio.gather(*(a.start() for a in agents))
    latencies: list[float] = []
    measuring = False
    stop = time.perf_counter() + 0.3 + seconds

    async def each(agent: McpClient) -> None:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            await agent.call()
            if measuring:
                latencies.append((time.perf_counter() - started) * 1000)

    try:
        runs = [asyncio.ensure_future(each(a)) for a in agents]
        await asyncio.sleep(0.3)  # warm-up
        measuring, began = True, time.perf_counter()
        cpu = cpu_seconds(side.pid) if side.pid else 0.0
        await asyncio.gather(*runs)
        calls = len(latencies)
        side.rate.append(calls / (time.perf_counter() - began))
        if side.pid:
            side.conc_cpu.append((cpu_seconds(side.pid) - cpu) / calls * 1e6)
        side.p99_ms.append(percentile(latencies, 99))
    finally:
        await asyncio.gather(*(a.close() for a in agents), return_exceptions=True)


def median(values: list[float]) -> str:
    return f"{statistics.median(values):,.3f}" if values else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tree", type=Path, action="append", required=True, help="a checkout (repeat: A, B)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--upstream", choices=("fast", "sdk"), default="fast")
    parser.add_argument("--output", type=Path, help="also write the table here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="signoff-ab-") as tmp_name, processes() as procs:
        tmp = Path(tmp_name)
        up_port, name = free_port(), args.upstream
        upstream = start(procs, [sys.executable, str(HERE / f"{name}_upstream.py"), str(up_port)], tmp / "up.log")
        wait_http(up_port, "/mcp", upstream)
        sides = [Side("direct", up_port, "/mcp", None, None)]
        for n, tree in enumerate(t.resolve() for t in args.tree):
            port, home = free_port(), tmp / f"tree{n}"
            home.mkdir()
            config = write_config(home / "signoff.toml", port, {name: up_port}, f"sqlite:///{home / 'db'}")
            command = [sys.executable, "-m", "integrations.cli", "--config", str(config), "serve"]
            gateway = start(procs, [*command, "--log-level", "warning"], home / "signoff.log", tree=tree)
            wait_http(port, "/healthz", gateway)
            sides.append(Side(f"{chr(65 + n)}: {label(tree)}", port, f"/mcp/{name}", TOKEN, gateway.pid))
        for round_ in range(args.rounds):
            order = sides if round_ % 2 == 0 else sides[:1] + sides[:0:-1]
            for side in order:
                asyncio.run(sequential(side, args.calls))
                asyncio.run(concurrent(side, args.clients, args.seconds))
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    direct = statistics.median(sides[0].seq_ms)
    direct_rate = statistics.median(sides[0].rate)
    lines = [
        f"The {args.upstream} upstream; medians over {args.rounds} alternating rounds ({args.calls} sequential calls,",
        f"{args.clients} clients for {args.seconds:g} s each round); CPU is the hop's own, µs per call.",
        "",
        "| target | seq median ms | added ms | seq CPU µs | calls/s | vs direct | p99 ms | conc CPU µs |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for side in sides:
        added = f"{statistics.median(side.seq_ms) - direct:.3f}" if side.pid else ""
        ratio = f"{statistics.median(side.rate) / direct_rate:.3f}x" if side.pid else ""
        cells = [side.name, median(side.seq_ms), added, median(side.seq_cpu), f"{statistics.median(side.rate):,.0f}"]
        cells += [ratio, median(side.p99_ms), median(side.conc_cpu)]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.output:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        invoked = " ".join(["python bench/bench_ab.py", *sys.argv[1:]])
        args.output.write_text(f"Generated by `{invoked}` on {when}.\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
