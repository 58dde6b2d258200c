"""The official MCP conformance suite, run directly against our fixture server and through signoff, compared.

`python -m tests.conformance` installs the pinned suite (`@modelcontextprotocol/conformance`, with Node 22 from the
npm package `node@22`) into a cache, then for every spec revision each pinned version covers it runs the suite's
server scenarios three times: against the fixture (`tests/fakes/conformance_server.py`) directly, through signoff
with the fixture as a Streamable HTTP upstream, and through signoff with it as a stdio child (allow-all policy). It
prints a table of scenario x direct / via HTTP / via stdio, writes it to `tests/conformance-results.md`, and exits 1
when a scenario's result through signoff differs from its result direct.

With `--allowed tests/conformance-allowed.toml` a difference listed there (run, scenario, upstream, and the reason)
is accepted, so CI stays green while it is being fixed; a difference not listed, or a listed one that is gone (then
the entry must be removed), still fails: the list only shrinks. `--suite VERSION` runs another version instead of
the pinned ones (`--suite newest`: the newest published, pre-releases included; `--suite latest`: npm's latest).

signoff runs in this process as `signoff serve` runs it (create_app under uvicorn, the same HTTP protocol class), and
every request to it gets the agent's bearer token added on the way in: the suite's client sends no Authorization.
"""

import argparse
import asyncio
import json
import logging
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from integrations.app import create_app
from integrations.serving import http_protocol
from integrations.settings import load_settings
from tests.fakes.conformance_server import conformance_http_app

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "@modelcontextprotocol/conformance"
# The newest stable release, and the newest pre-release, the only one with the 2026-07-28 revision. Bump on purpose:
# reconcile tests/conformance-allowed.toml and the README's table in the same change.
PINNED = ("0.1.16", "0.2.0-alpha.12")
NODE = "node@22"  # the suite needs Node 22 or newer; npm ships it as a package, so only npm need be installed
UPSTREAMS = ("http", "stdio")
TOKEN = "conformance-agent-token"
SUITE_TIMEOUT = 600.0  # one whole suite run; its own per-scenario timeout is 30 s
CACHE = Path.home() / ".cache" / "signoff-conformance"


@dataclass(frozen=True, slots=True)
class Run:
    """One pass of the suite: a version, and the spec revision it is pinned to (None: the version's default)."""

    version: str
    revision: str | None

    @property
    def label(self) -> str:
        return f"{self.version} @ {self.revision}" if self.revision else self.version


@dataclass(frozen=True, slots=True)
class Outcome:
    """A scenario's result against one target: passed, or the checks that failed (id: message)."""

    failures: tuple[str, ...] = ()
    missing: bool = False  # the suite wrote no result for it (it crashed or timed out)

    @property
    def passed(self) -> bool:
        return not self.failures and not self.missing

    def cell(self) -> str:
        if self.missing:
            return "no result"
        return "pass" if self.passed else f"FAIL ({len(self.failures)})"


@dataclass
class RunResult:
    run: Run
    outcomes: dict[str, dict[str, Outcome]] = field(default_factory=dict)  # scenario -> target -> outcome
    seconds: float = 0.0

    def scenarios(self) -> list[str]:
        return list(self.outcomes)


@dataclass(frozen=True, slots=True)
class Allowed:
    run: str
    scenario: str
    upstream: str
    reason: str


# -- the suite: installing it, and running it against a URL ------------------------------------------------------


def _npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("conformance: npm is not on PATH; it installs the suite and Node 22")
    return npm


def resolve(version: str) -> str:
    """`newest` (the last published version, pre-releases included) and `latest` (npm's tag) as version numbers."""
    if version not in ("newest", "latest"):
        return version
    what = "versions" if version == "newest" else "dist-tags.latest"
    out = subprocess.run(
        [_npm(), "view", PACKAGE, what, "--json"], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    value = json.loads(out)
    return str(value[-1] if isinstance(value, list) else value)


def install(version: str, cache: Path) -> Path:
    """The suite `version` and Node 22 in `cache/version` (installed once); returns that folder."""
    prefix = cache / version
    manifest = prefix / "node_modules" / PACKAGE / "package.json"
    node = prefix / "node_modules" / ".bin" / "node"
    if manifest.exists() and node.exists() and json.loads(manifest.read_text())["version"] == version:
        return prefix
    prefix.mkdir(parents=True, exist_ok=True)
    command = [_npm(), "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--loglevel=error"]
    subprocess.run([*command, NODE, f"{PACKAGE}@{version}"], check=True, timeout=600)
    return prefix


def _suite_command(prefix: Path) -> list[str]:
    # Its own Node, not the one on PATH: the script's `#!/usr/bin/env node` would find Node 20 on this machine.
    entry = prefix / "node_modules" / PACKAGE / "dist" / "index.js"
    return [str(prefix / "node_modules" / ".bin" / "node"), str(entry)]


def revisions(prefix: Path) -> list[str | None]:
    """The spec revisions this version of the suite can pin a run to; [None] when it has no such sets (0.1.x)."""
    help_text = subprocess.run(
        [*_suite_command(prefix), "list", "--help"], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    found = re.search(r"Requirement sets available:\s*([\d\-,\s]+)", " ".join(help_text.split()))
    if not found:
        return [None]
    return [revision.strip() for revision in found.group(1).split(",") if revision.strip()]


async def run_suite(prefix: Path, run: Run, url: str, out: Path) -> dict[str, Outcome]:
    """Every server scenario of `run` against `url`; the outcome of each, read from the suite's checks.json files."""
    command = [*_suite_command(prefix), "server", "--url", url, "--suite", "all", "--output-dir", str(out)]
    if run.revision:
        command += ["--spec-version", run.revision]
    with anyio.fail_after(SUITE_TIMEOUT):
        # check=False: the suite exits 1 whenever a scenario fails, which is a result here, not an error.
        result = await anyio.run_process(command, check=False, stderr=subprocess.STDOUT)
    return read_outcomes(out, result.stdout)


def read_outcomes(out: Path, log: bytes) -> dict[str, Outcome]:
    """Each scenario's outcome, from the suite's `server-<scenario>-<time>/checks.json` files and its log."""
    (out / "suite.log").write_bytes(log)
    outcomes: dict[str, Outcome] = {}
    for folder in sorted(out.iterdir()):
        # server-<scenario>-<ISO timestamp with dashes>Z
        named = re.fullmatch(r"server-(.+)-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d+Z", folder.name)
        if not named or not (folder / "checks.json").exists():
            continue
        checks = json.loads((folder / "checks.json").read_text())
        failures = tuple(
            f"{check.get('id')}: {check.get('errorMessage') or check.get('description', '')}"
            for check in checks
            if check.get("status") == "FAILURE"
        )
        outcomes[named.group(1)] = Outcome(failures=failures)
    for line in log.decode(errors="replace").splitlines():
        # A scenario the suite started but wrote nothing for still counts, as "no result".
        started = re.match(r"=== Running scenario: (\S+) ===", line)
        if started and started.group(1) not in outcomes:
            outcomes[started.group(1)] = Outcome(missing=True)
    return outcomes


# -- the targets: the fixture direct, and signoff in front of it -------------------------------------------------


def with_token(app: ASGIApp, token: str) -> ASGIApp:
    """`app`, with `Authorization: Bearer <token>` added to every HTTP request that carries none."""
    header = (b"authorization", f"Bearer {token}".encode())

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not any(name == b"authorization" for name, _ in scope["headers"]):
            scope = {**scope, "headers": [*scope["headers"], header]}
        await app(scope, receive, send)

    return wrapped


@asynccontextmanager
async def serve(app: ASGIApp, http: type[asyncio.Protocol] | str = "h11") -> AsyncIterator[str]:
    """Serve `app` with uvicorn on a free loopback port, lifespan on; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="on", log_level="warning", ws="none", access_log=False, http=http, timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    with sock:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                with anyio.fail_after(30):
                    while not server.started:  # noqa: ASYNC110 - uvicorn exposes `started` as a flag, not an event
                        await anyio.sleep(0.02)
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True


def write_signoff_config(folder: Path, upstream_url: str) -> Path:
    """A signoff.toml: one agent, the fixture as `http` (Streamable HTTP) and as `stdio` (a child), allow-all."""
    policy = folder / "allow-all.json"
    policy.write_text(json.dumps({"version": "1", "default": "allow"}))
    stdio = [sys.executable, "-m", "tests.fakes.conformance_server", "--stdio"]
    config = folder / "signoff.toml"
    config.write_text(
        "\n".join(
            [
                "[gateway]",
                f"database_url = {json.dumps('sqlite:///' + str(folder / 'signoff.db'))}",
                "upstream_timeout = 30",  # a call the child never answers fails in 30 s, within the suite's timeout
                "",
                "[[agents]]",
                'name = "conformance"',
                f'token = "{TOKEN}"',
                "",
                "[[servers]]",
                'name = "http"',
                f"url = {json.dumps(upstream_url + '/mcp')}",
                f"policy = {json.dumps(str(policy))}",
                "",
                "[[servers]]",
                'name = "stdio"',
                f"command = {json.dumps(stdio)}",
                f"cwd = {json.dumps(str(ROOT))}",
                f"policy = {json.dumps(str(policy))}",
                "",
            ]
        )
    )
    return config


async def run_one(prefix: Path, run: Run, work: Path) -> RunResult:
    """The suite `run` against the fixture direct and through signoff (HTTP and stdio upstream)."""
    started = time.monotonic()
    result = RunResult(run)
    async with AsyncExitStack() as stack:
        direct = await stack.enter_async_context(serve(conformance_http_app()))
        upstream = await stack.enter_async_context(serve(conformance_http_app()))
        settings = load_settings(write_signoff_config(work, upstream), environ={})
        gateway = await stack.enter_async_context(serve(with_token(create_app(settings), TOKEN), http_protocol()))
        targets = {
            "direct": f"{direct}/mcp",
            "http": f"{gateway}/mcp/http",
            "stdio": f"{gateway}/mcp/stdio",
        }
        by_target = {name: await run_suite(prefix, run, url, work / name) for name, url in targets.items()}
    for target, outcomes in by_target.items():
        for scenario, outcome in outcomes.items():
            result.outcomes.setdefault(scenario, {})[target] = outcome
    result.seconds = time.monotonic() - started
    return result


# -- comparing, the allowlist, and the report ---------------------------------------------------------------------


def load_allowed(path: Path | None) -> list[Allowed]:
    if path is None:
        return []
    entries = tomllib.loads(path.read_text()).get("allowed", [])
    allowed = []
    for entry in entries:
        if not {"run", "scenario", "upstream", "reason"} <= entry.keys() or entry["upstream"] not in UPSTREAMS:
            raise SystemExit(
                f"conformance: {path}: every [[allowed]] needs run, scenario, upstream (http|stdio), reason"
            )
        allowed.append(Allowed(entry["run"], entry["scenario"], entry["upstream"], entry["reason"]))
    return allowed


def differences(result: RunResult) -> list[tuple[str, str]]:
    """(scenario, upstream) wherever the result through signoff is not the result direct."""
    found = []
    for scenario, outcomes in result.outcomes.items():
        direct = outcomes.get("direct", Outcome(missing=True))
        for upstream in UPSTREAMS:
            if outcomes.get(upstream, Outcome(missing=True)).passed != direct.passed:
                found.append((scenario, upstream))
    return found


def verdict(results: list[RunResult], allowed: list[Allowed]) -> list[str]:
    """What makes the run fail: a difference not allowed, and an allowed one that is gone."""
    errors = []
    ran = {result.run.label for result in results}
    expected = {(a.run, a.scenario, a.upstream) for a in allowed if a.run in ran}
    seen = set()
    for result in results:
        for scenario, upstream in differences(result):
            key = (result.run.label, scenario, upstream)
            seen.add(key)
            if key not in expected:
                outcome = result.outcomes[scenario][upstream]
                direct = result.outcomes[scenario].get("direct", Outcome(missing=True))
                errors.append(
                    f"NEW difference: {result.run.label}: {scenario} via {upstream} is {outcome.cell()},"
                    f" direct {direct.cell()}"
                )
    for run, scenario, upstream in sorted(expected - seen):
        errors.append(
            f"FIXED, remove it from the allowlist: {run}: {scenario} via {upstream} now gives the same result as direct"
        )
    return errors


def _reason(allowed: list[Allowed], run: str, scenario: str, upstream: str) -> str | None:
    return next((a.reason for a in allowed if (a.run, a.scenario, a.upstream) == (run, scenario, upstream)), None)


def report(results: list[RunResult], allowed: list[Allowed], errors: list[str]) -> str:
    """The results as markdown: a summary, a table per run, and the failed checks."""
    lines = [
        "# Conformance: the official MCP suite direct and through signoff",
        "",
        "`python -m tests.conformance` (tests/conformance.py): the suite's server scenarios against the fixture",
        "(tests/fakes/conformance_server.py) directly, and through signoff with it as a Streamable HTTP upstream and",
        "as a stdio child, allow-all policy. A scenario passes when none of its checks fails.",
        "",
        "| run | scenarios | direct | via HTTP | via stdio | seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        counts = [
            sum(1 for o in result.outcomes.values() if o.get(target, Outcome(missing=True)).passed)
            for target in ("direct", *UPSTREAMS)
        ]
        lines.append(
            f"| {result.run.label} | {len(result.outcomes)} | {' | '.join(map(str, counts))} | {result.seconds:.0f} |"
        )
    found = sum(len(differences(result)) for result in results)
    verdict_line = f"{found} difference(s) from direct, {len(allowed)} allowed; " + (
        "no new difference, none fixed" if not errors else f"{len(errors)} error(s):"
    )
    lines += ["", "Verdict: " + verdict_line]
    lines += [f"- {error}" for error in errors]
    for result in results:
        lines += ["", f"## {result.run.label}", "", "| scenario | direct | via HTTP | via stdio | allowed because |"]
        lines.append("| --- | --- | --- | --- | --- |")
        for scenario, outcomes in result.outcomes.items():
            cells = [outcomes.get(t, Outcome(missing=True)).cell() for t in ("direct", *UPSTREAMS)]
            reasons = [
                f"{upstream}: {reason}"
                for upstream in UPSTREAMS
                if (reason := _reason(allowed, result.run.label, scenario, upstream))
            ]
            lines.append(f"| {scenario} | {' | '.join(cells)} | {'; '.join(reasons)} |")
        failed = [
            (scenario, target, outcome)
            for scenario, outcomes in result.outcomes.items()
            for target, outcome in outcomes.items()
            if not outcome.passed
        ]
        if failed:
            lines += ["", "Failed checks:", ""]
            for scenario, target, outcome in failed:
                details = "; ".join(_one_line(f) for f in outcome.failures) or "the suite wrote no result"
                lines.append(f"- {scenario} ({target}): {details}")
    return "\n".join(lines) + "\n"


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- the command line ------------------------------------------------------------------------------------------


def parse(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.conformance", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--suite",
        action="append",
        metavar="VERSION",
        help=f"a version of {PACKAGE}, or newest or latest; repeatable (default: the pinned {', '.join(PINNED)})",
    )
    parser.add_argument("--revision", action="append", help="only runs pinned to this spec revision; repeatable")
    parser.add_argument("--allowed", type=Path, help="a TOML allowlist of known differences (see the module doc)")
    parser.add_argument(
        "--list-allowed", action="store_true", help="print the allowlist given with --allowed and exit, running nothing"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=ROOT / "tests" / "conformance-results.md",
        help="write the markdown table here (default tests/conformance-results.md)",
    )
    parser.add_argument("--cache", type=Path, default=CACHE, help=f"where the suite is installed (default {CACHE})")
    parser.add_argument("--keep", type=Path, help="keep the suite's own per-scenario results and logs here")
    return parser.parse_args(list(argv) if argv is not None else None)


async def amain(args: argparse.Namespace) -> int:
    allowed = load_allowed(args.allowed)
    if args.list_allowed:
        for entry in allowed:
            sys.stdout.write(f"{entry.run}: {entry.scenario} via {entry.upstream}: {entry.reason}\n")
        sys.stdout.write(f"{len(allowed)} known difference(s) allowed\n")
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="signoff-conformance-") as scratch:
        work_root = args.keep or Path(scratch)
        work_root.mkdir(parents=True, exist_ok=True)
        # signoff's and the in-process fixture's logs (the SDK sets up a console handler) go to a file, not the table.
        logging.basicConfig(filename=work_root / "python.log", level=logging.INFO, force=True)
        logging.captureWarnings(True)
        for version in [resolve(v) for v in args.suite or PINNED]:
            prefix = install(version, args.cache)
            for revision in revisions(prefix):
                if args.revision and revision not in args.revision:
                    continue
                run = Run(version, revision)
                work = work_root / run.label.replace(" @ ", "_")
                work.mkdir(parents=True, exist_ok=True)
                sys.stdout.write(f"conformance: {run.label}: direct, via HTTP, via stdio ...\n")
                sys.stdout.flush()
                results.append(await run_one(prefix, run, work))
    errors = verdict(results, allowed)
    text = report(results, allowed, errors)
    args.results.write_text(text)
    sys.stdout.write(text)
    sys.stdout.write(f"conformance: results written to {args.results}\n")
    return 1 if errors else 0


def main(argv: Iterable[str] | None = None) -> int:
    return anyio.run(amain, parse(argv))


if __name__ == "__main__":
    raise SystemExit(main())
