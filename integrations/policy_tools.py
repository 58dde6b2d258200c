"""`signoff policy suggest|test|explain`: the command-line edge of the policy tools.

Reads files, lists a configured upstream's tools through the official MCP client, and prints. Every decision is
made by `policies.suggest`, `policies.cases` and `policies.explain`; nothing here classifies or evaluates.
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import httpx2

from integrations.errors import ConfigError, UpstreamUnavailable
from integrations.settings import ServerSettings, child_environment, load_settings
from policies import Policy, PolicyInvalid, RateLimiter, ToolCall, format_fault, load_policy
from policies.cases import CasesInvalid, load_cases, run_cases
from policies.explain import explain_call, format_trace
from policies.risk import Hints, ToolInfo
from policies.suggest import report_lines, suggest_policy

if TYPE_CHECKING:
    from mcp import Client
    from mcp_types import Tool

__all__ = ["add_policy_commands", "cases_path", "list_tools", "tool_info"]

EXIT_OK, EXIT_FAILED, EXIT_CANNOT_RUN = 0, 1, 2
LIST_TIMEOUT = 60.0  # seconds to start the server and list its tools; npx may fetch a package first
MAX_PAGES = 1000  # a server that keeps returning cursors is broken; stop rather than loop forever


def tool_info(tool: "Tool") -> ToolInfo:
    """Translate the SDK's `Tool` into the classifier's `ToolInfo` (name, description, annotations)."""
    hints = Hints()
    if tool.annotations is not None:
        a = tool.annotations
        hints = Hints(a.read_only_hint, a.destructive_hint, a.idempotent_hint, a.open_world_hint)
    return ToolInfo(tool.name, tool.description or "", hints)


async def _list(client: "Client") -> list[ToolInfo]:
    tools: list[ToolInfo] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools += [tool_info(t) for t in page.tools]
        cursor = page.next_cursor
        if not cursor:
            return tools
    raise ValueError(f"tools/list returned more than {MAX_PAGES} pages")


async def list_tools(server: ServerSettings, *, within: float = LIST_TIMEOUT) -> list[ToolInfo]:
    """Connect to a configured upstream (stdio or Streamable HTTP with its headers) and list all its tools.

    Raises:
        UpstreamUnavailable: The server could not be started or reached, or failed to list its tools in time.
    """
    # Imported here: the SDK takes seconds to import, and no other `signoff` command needs it.
    from mcp import Client, MCPError, StdioServerParameters
    from mcp.client.streamable_http import streamable_http_client

    refused: list[str] = []

    def unavailable(detail: str) -> UpstreamUnavailable:
        return UpstreamUnavailable(server.name, f"{refused[-1]} ({detail})" if refused else detail)

    try:
        with anyio.fail_after(within):
            if server.command is not None:
                env = child_environment({k: v.get_secret_value() for k, v in server.env.items()})
                params = StdioServerParameters(
                    command=server.command[0], args=list(server.command[1:]), env=env, cwd=server.cwd
                )
                async with Client(params) as client:
                    return await _list(client)
            if server.url is None:  # settings guarantee one of them; say so plainly if a hand-built one has neither
                raise ConfigError(f"server {server.name!r} has neither `command` nor `url`")
            headers = {k: v.get_secret_value() for k, v in server.headers.items()}

            async def note_refusal(response: httpx2.Response) -> None:
                # The SDK reports only "an error response"; a wrong token should say 401.
                if response.status_code >= 400:
                    refused.append(f"HTTP {response.status_code} from {response.request.method} {server.url}")

            hooks = {"response": [note_refusal]}
            async with httpx2.AsyncClient(headers=headers, timeout=within, event_hooks=hooks) as http:
                transport = streamable_http_client(server.url, http_client=http)
                async with Client(transport) as client:
                    return await _list(client)
    except TimeoutError as exc:
        raise unavailable(f"no tool list within {within:g}s") from exc
    except (OSError, ValueError, MCPError, httpx2.HTTPError) as exc:
        raise unavailable(f"{type(exc).__name__}: {exc}") from exc
    except ExceptionGroup as group:
        # The SDK's task groups wrap a transport failure; report the first leaf, which says what went wrong.
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
            leaf = leaf.exceptions[0]
        raise unavailable(f"{type(leaf).__name__}: {leaf}") from group


# -- suggest ---------------------------------------------------------------------------------------------------------


def _server(name: str, config: str | None) -> ServerSettings:
    settings = load_settings(config)
    for server in settings.servers:
        if server.name == name:
            return server
    known = ", ".join(s.name for s in settings.servers) or "none"
    raise ConfigError(f"{settings.source}: no server named {name!r} (configured: {known})")


def cmd_policy_suggest(args: argparse.Namespace) -> int:
    server = _server(args.server, args.config)
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not args.force:
        sys.stderr.write(f"signoff: {out} exists; pass --force to replace it\n")
        return EXIT_CANNOT_RUN
    try:
        tools = anyio.run(list_tools, server)
    except UpstreamUnavailable as exc:
        sys.stderr.write(f"signoff: {exc}\n")
        return EXIT_CANNOT_RUN
    suggested = suggest_policy(tools, hide_destructive=args.hide_destructive, approvers=args.approver or ())
    report = "\n".join(report_lines(suggested)) + "\n"
    if out is None:
        # The policy goes to stdout and the report to stderr, so `> policy.json` captures just the policy.
        sys.stderr.write(report)
        sys.stdout.write(suggested.text)
        return EXIT_OK
    out.write_text(suggested.text, encoding="utf-8")
    sys.stdout.write(report)
    sys.stdout.write(f"wrote {out}: review it, then run `signoff policy check {out}`\n")
    return EXIT_OK


# -- test and explain --------------------------------------------------------------------------------------------------


def _read(path: Path, what: str) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        sys.stderr.write(f"{path}: error: cannot read the {what}: {detail}\n")
        return None


def _policy(path: Path) -> Policy | None:
    text = _read(path, "policy")
    if text is None:
        return None
    try:
        return load_policy(text, source=str(path))
    except PolicyInvalid as exc:
        for fault in exc.faults:
            if fault.severity == "error":
                sys.stderr.write(format_fault(fault, str(path)) + "\n")
        return None


def cases_path(policy: Path) -> Path:
    """Where a policy's test cases live by default: `policy.json` -> `policy.tests.json`, beside it."""
    stem = policy.name.removesuffix(".json")
    return policy.with_name(f"{stem}.tests.json")


def cmd_policy_test(args: argparse.Namespace) -> int:
    path = Path(args.file)
    policy = _policy(path)
    cases_file = Path(args.cases) if args.cases else cases_path(path)
    text = _read(cases_file, "test cases")
    if policy is None or text is None:
        return EXIT_CANNOT_RUN
    try:
        cases = load_cases(text, source=str(cases_file))
    except CasesInvalid as exc:
        for fault in exc.faults:
            sys.stderr.write(format_fault(fault, str(cases_file)) + "\n")
        return EXIT_CANNOT_RUN
    results = run_cases(policy, cases)
    out = sys.stdout
    for result in results:
        if result.passed:
            out.write(f"PASS  {result.case.name}\n")
        else:
            out.write(f"FAIL  {result.case.name}: {result.problem}\n      the policy said: {result.describe()}\n")
    failed = sum(1 for r in results if not r.passed)
    out.write(f"{len(results) - failed} passed, {failed} failed ({cases_file} against {path})\n")
    return EXIT_FAILED if failed else EXIT_OK


def cmd_policy_explain(args: argparse.Namespace) -> int:
    path = Path(args.file)
    policy = _policy(path)
    if policy is None:
        return EXIT_CANNOT_RUN
    try:
        arguments = json.loads(args.args)
    except json.JSONDecodeError as exc:
        sys.stderr.write(f"signoff: --args is not JSON: {exc.msg} at column {exc.colno}\n")
        return EXIT_CANNOT_RUN
    if not isinstance(arguments, dict):
        sys.stderr.write("signoff: --args must be a JSON object, e.g. '{\"pid\": 87}'\n")
        return EXIT_CANNOT_RUN
    call = ToolCall(args.server, args.tool, arguments, args.identity)
    # Fresh counters: the trace shows this one call as the first of its window.
    trace = explain_call(policy, call, RateLimiter(), time.time())
    sys.stdout.write("\n".join(format_trace(trace)) + "\n")
    return EXIT_OK


def add_policy_commands(policy: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add `suggest`, `test` and `explain` to the `signoff policy` command group."""
    suggest = policy.add_parser(
        "suggest", help="list a configured server's tools, classify each by risk, and write a policy to start from"
    )
    suggest.add_argument("server", metavar="SERVER", help="a [[servers]] name from the config")
    suggest.add_argument("--out", metavar="FILE", help="write the policy here (default: stdout; the report on stderr)")
    suggest.add_argument("--force", action="store_true", help="replace FILE if it exists")
    suggest.add_argument(
        "--hide-destructive", action="store_true", help="hide destructive tools instead of requiring approval"
    )
    suggest.add_argument(
        "--approver", action="append", metavar="NAME", help="who may approve destructive tools (repeat; group:NAME)"
    )
    suggest.set_defaults(func=cmd_policy_suggest)

    test = policy.add_parser("test", help="run the test cases kept beside a policy; exit 1 if any fails")
    test.add_argument("file", metavar="FILE", help="the policy")
    test.add_argument("--cases", metavar="CASES", help="the case file (default: FILE's name with .tests.json)")
    test.set_defaults(func=cmd_policy_test)

    explain = policy.add_parser("explain", help="show, step by step, how a policy decides one call")
    explain.add_argument("file", metavar="FILE", help="the policy")
    explain.add_argument("--tool", required=True, metavar="NAME")
    explain.add_argument("--args", default="{}", metavar="JSON", help="the call's arguments as a JSON object")
    explain.add_argument("--identity", default="agent", metavar="NAME", help="the calling agent's name")
    explain.add_argument("--server", default="explain", metavar="NAME", help="the server name counters are kept under")
    explain.set_defaults(func=cmd_policy_explain)
