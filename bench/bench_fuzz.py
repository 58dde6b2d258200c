"""A long fuzz run against a real signoff: the generator of tests/fuzzing.py, 100,000 requests by default.

Run: python bench/bench_fuzz.py [--count 100000] [--seed 20260728] [--duration 900] [--concurrency 8]
     [--families envelope,unicode,...]

In one process it serves, with uvicorn on 127.0.0.1, the loopback Slack fake, the everything MCP server
(Streamable HTTP), the demo server (stdio) and signoff in front of them (SQLite audit log in a temp dir), then
sends the seeded cases from `C` concurrent clients until `--count` or `--duration` runs out. It prints and writes
to bench/results-fuzz.md: requests tried, statuses, 5xx count, log records with a traceback or at ERROR
(grouped by where they were raised, each with a request that replays it), requests/s, and liveness after the
run (a normal call through a real MCP client, /healthz, the audit chain and the row for that call).

With concurrency above 1 a log record is blamed on a case in flight when it was seen, so the replay shown for a
traceback is a suspect: run that family with the test suite (one case at a time) to pin it exactly.
"""

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run as `python bench/bench_fuzz.py`: the tests package is one up

from approvals.models import utcnow  # noqa: E402
from integrations.app import create_app  # noqa: E402
from integrations.settings import load_settings  # noqa: E402
from tests.conftest import AGENT_TOKEN, Running, write_config  # noqa: E402
from tests.fakes.upstreams import serve_http  # noqa: E402
from tests.fuzzing import FAMILIES, Liveness, Report, cases, check_liveness, run_cases, stage, watching_logs  # noqa: E402

DEFAULT_FAMILIES = list(FAMILIES)  # every family, the oversized bodies too


def starter(directory: Path) -> Callable[..., Any]:
    """What the `signoff` fixture does, outside pytest: a config in `directory`, create_app, uvicorn on loopback."""

    @asynccontextmanager
    async def start(servers: list[dict[str, Any]], **kwargs: Any) -> AsyncIterator[Running]:
        config = write_config(directory, servers, **kwargs)
        settings = load_settings(config, environ={"ALPHA_TOKEN": AGENT_TOKEN})
        app = create_app(settings, clock=time.time, now=utcnow)
        async with serve_http(app) as url:
            yield Running(url=url, app=app)

    return start


def render(args: argparse.Namespace, families: list[str], report: Report, alive: Liveness, url: str) -> str:
    rate = report.sent / report.seconds if report.seconds else 0.0
    statuses = ", ".join(f"{status}: {n}" for status, n in sorted(report.statuses.items()))
    groups = report.distinct()
    tracebacks = sum(report.counts[s] for s, g in groups.items() if g[0].what.startswith("log"))
    lines = [
        "# Fuzz run",
        "",
        f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z} on {platform.node() or 'this machine'}, Python "
        f"{platform.python_version()}; `python bench/bench_fuzz.py --count {args.count} --seed {args.seed} "
        f"--concurrency {args.concurrency}`",
        "",
        f"- families: {', '.join(families)}",
        f"- requests tried: {report.sent} in {report.seconds:.1f} s ({rate:.0f} requests/s)",
        f"- statuses: {statuses}",
        f"- 5xx answers: {report.server_errors}",
        f"- log records with a traceback or at ERROR: {tracebacks}",
        f"- failures: {report.failed} ({len(groups)} distinct)",
        f"- after the run: normal call {'ok' if alive.call_ok else 'FAILED'}, /healthz "
        f"{'ok' if alive.healthz_ok else 'FAILED'}, audit verify {'ok' if alive.chain_ok else 'FAILED'}, "
        f"row for the last call {'ok' if alive.last_call_audited else 'MISSING'}",
    ]
    if alive.detail:
        lines.append(f"- liveness detail: {alive.detail}")
    lines += ["", "## Distinct failures", ""]
    if not groups:
        lines.append("None.")
    for signature, group in groups.items():
        first = group[0]
        lines += [
            f"### {signature} ({report.counts[signature]}x)",
            "",
            first.what,
            "",
            "```python",
            first.case.replay(url, 600),
        ]
        if first.trace:
            lines += ["", *[f"# {line}" for line in first.trace.strip().splitlines()[-4:]]]
        lines += ["```", ""]
    return "\n".join(lines) + "\n"


async def main(args: argparse.Namespace) -> int:
    families = args.families.split(",") if args.families else DEFAULT_FAMILIES
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise SystemExit(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    with tempfile.TemporaryDirectory(prefix="signoff-fuzz-") as directory:
        async with stage(starter(Path(directory)), stdio="stdio_meta" in families or "cancelled" in families) as on:
            async with watching_logs() as watch:
                deadline = time.monotonic() + args.duration
                report = await run_cases(
                    on.running.url,
                    cases(families, args.seed, args.count, on.target),
                    watch,
                    concurrency=args.concurrency,
                    deadline=deadline,
                )
                alive = await check_liveness(on.running, f"fuzz-liveness-{args.seed}")
            text = render(args, families, report, alive, on.running.url)
    print(text)
    (HERE / "results-fuzz.md").write_text(text)
    return 0 if not report.failures and alive.ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="requests to send (default 100000)")
    parser.add_argument("--seed", type=int, default=20260728)
    parser.add_argument("--duration", type=float, default=900.0, help="stop sending after this many seconds")
    parser.add_argument("--concurrency", type=int, default=8, help="clients sending at once")
    parser.add_argument("--families", default="", help=f"comma-separated, of: {', '.join(FAMILIES)}")
    sys.exit(asyncio.run(main(parser.parse_args())))
