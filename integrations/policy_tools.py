"""`signoff policy suggest|test|explain`: the command-line edge of the policy tools.

Reads files, lists a configured upstream's tools through the official MCP client, and prints. Every decision is
made by `policies.suggest`, `policies.cases` and `policies.explain`; nothing here classifies or evaluates.
"""

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import httpx2

from integrations.errors import ConfigError, UpstreamUnavailable
from integrations.settings import ServerSettings, Settings, child_environment, load_config
from policies import Caller, Policy, PolicyInvalid, RateLimiter, ToolCall, format_fault, load_policy
from policies.cases import CasesInvalid, load_cases, run_cases
from policies.explain import explain_call, format_trace
from policies.risk import Hints, ToolInfo
from policies.suggest import report_lines, suggest_policy

if TYPE_CHECKING:
    from mcp import Client
    from mcp_types import Tool

__all__ = ["AgentView", "add_policy_commands", "agent_view", "cases_path", "list_tools", "tool_info"]

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
    settings = load_config(config)
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


# -- as one agent sees a server ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentView:
    """What `--agent NAME` means: who calls (name, groups) and, for a server, the policy file that judges them."""

    caller: Caller
    policy: Path | None = None
    own: bool = False  # the agent's own policy for the server, not the server's


def agent_view(settings: Settings, agent_name: str, server: str | None) -> AgentView:
    """How `agent_name` is seen on `server` (None: no server named): its own policy there, else the server's.

    Raises:
        ConfigError: no such agent or server, or the agent may not reach that server.
    """
    agent = settings.agent(agent_name)
    if agent is None:
        known = ", ".join(a.name for a in settings.agents) or "none"
        raise ConfigError(f"{settings.source}: no agent named {agent_name!r} (configured: {known})")
    caller = Caller(agent.name, agent.groups)
    if server is None:
        return AgentView(caller)
    configured = next((s for s in settings.servers if s.name == server), None)
    if configured is None:
        known = ", ".join(s.name for s in settings.servers) or "none"
        raise ConfigError(f"{settings.source}: no server named {server!r} (configured: {known})")
    if not agent.may_reach(server):
        reach = ", ".join(s.name for s in settings.servers if agent.may_reach(s.name)) or "none"
        raise ConfigError(f"agent {agent.name!r} may not reach server {server!r}; it may reach: {reach}")
    own = agent.policies.get(server)
    return AgentView(caller, Path(own or configured.policy), own is not None)


def _view(args: argparse.Namespace) -> AgentView | None:
    """The `--agent` view of the command's server, or None without `--agent`; says which policy it uses."""
    if not args.agent:
        return None
    settings = load_config(args.config)
    view = agent_view(settings, args.agent, args.server if args.file is None else None)
    if view.policy is not None:
        whose = f"{args.agent}'s own policy" if view.own else f"server {args.server}'s policy"
        sys.stderr.write(f"using {whose} for {args.server}: {view.policy}\n")
    return view


def _policy_file(args: argparse.Namespace, view: AgentView | None) -> Path | None:
    if args.file is not None:
        return Path(args.file)
    if view is not None and view.policy is not None:
        return view.policy
    sys.stderr.write("signoff: name a policy FILE, or --agent NAME with --server NAME to use the configured one\n")
    return None


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
    view = _view(args)
    path = _policy_file(args, view)
    if path is None:
        return EXIT_CANNOT_RUN
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
    results = run_cases(policy, cases, view.caller if view is not None else None)
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
    view = _view(args)
    path = _policy_file(args, view)
    if path is None:
        return EXIT_CANNOT_RUN
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
    caller = view.caller if view is not None else Caller(args.identity or "agent", tuple(args.group or ()))
    call = ToolCall(args.server or "explain", args.tool, arguments, caller.name, caller.groups)
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
    test.add_argument("file", nargs="?", metavar="FILE", help="the policy (default, with --agent: the configured one)")
    test.add_argument("--cases", metavar="CASES", help="the case file (default: FILE's name with .tests.json)")
    _add_agent_options(test)
    test.set_defaults(func=cmd_policy_test)

    explain = policy.add_parser("explain", help="show, step by step, how a policy decides one call")
    explain.add_argument(
        "file", nargs="?", metavar="FILE", help="the policy (default, with --agent: the configured one)"
    )
    explain.add_argument("--tool", required=True, metavar="NAME")
    explain.add_argument("--args", default="{}", metavar="JSON", help="the call's arguments as a JSON object")
    who = explain.add_mutually_exclusive_group()
    who.add_argument("--identity", metavar="NAME", help="the calling agent's name, without a config (default: agent)")
    who.add_argument("--agent", metavar="NAME", help=_AGENT_HELP)
    explain.add_argument("--group", action="append", metavar="GROUP", help="with --identity: a group it is in (repeat)")
    explain.add_argument("--server", metavar="NAME", help="the server (with --agent: a [[servers]] name)")
    _add_config_option(explain)
    explain.set_defaults(func=cmd_policy_explain)


_AGENT_HELP = (
    "call as this [[agents]] entry of the config: its groups, and (with --server and no FILE) its own policy for that"
    " server, else the server's"
)


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=argparse.SUPPRESS,  # so `signoff --config X policy ...` keeps X
        help="the signoff.toml that --agent reads (default: $SIGNOFF_CONFIG or ./signoff.toml)",
    )


def _add_agent_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent", metavar="NAME", help=_AGENT_HELP + "; cases that name no identity call as it")
    parser.add_argument("--server", metavar="NAME", help="with --agent: the [[servers]] name whose policy to test")
    _add_config_option(parser)
