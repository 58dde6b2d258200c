"""The `signoff` command: serve the gateway, check policies, read and verify the audit log."""

import argparse
import importlib.metadata
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import httpx2
import uvicorn
from sqlmodel import Session

from approvals import service
from integrations.auditcli import add_audit_commands
from integrations.database import create_database_engine, current_revision, head_revision, upgrade
from integrations.detail import add_show_command
from integrations.errors import ConfigError
from integrations.listing import approval_table
from integrations.logs import configure_logging, logging_config
from integrations.operations import add_grant_commands, add_operation_commands
from integrations.policy_tools import add_policy_commands, agent_view
from integrations.preflight import load_policy_set
from integrations.settings import (
    AgentSettings,
    ApproverSettings,
    Settings,
    approver_token,
    config_file,
    forget_workers,
    is_loopback,
    listening_on,
    load_config,
    load_settings,
    named_config,
    tell_workers,
)
from integrations.starter import add_init_command
from integrations.startup import startup_lines
from policies import check_policy, format_fault, load_policy
from policies.clauses import configured_listing
from policies.pitfalls import unknown_callers

EXIT_OK, EXIT_FAULTS, EXIT_CONFIG = 0, 1, 2


DEMO_AGENT, DEMO_APPROVER = "demo-agent", "demo-approver"  # the demo's own entries (integrations/settings.py)


def _demo_token(entries: Sequence[AgentSettings] | Sequence[ApproverSettings], name: str) -> str | None:
    """The demo's own token; None when a config file gave the entries, whose tokens are never printed."""
    for entry in entries:
        if entry.name == name and entry.token is not None:
            return entry.token.get_secret_value()
    return None


def _print_demo_banner(settings: Settings, out: TextIO) -> None:
    base = settings.gateway.base_url
    agent = _demo_token(settings.agents, DEMO_AGENT) or "(as in the config file)"
    approver = _demo_token(settings.approvers, DEMO_APPROVER)
    hold = settings.gateway.approval_hold
    out.write(
        "\nsignoff is running its demo: no signoff.toml here, so it serves a built-in demo upstream.\n"
        f"  MCP endpoint   : {base}/mcp/demo\n"
        f"  agent token    : {agent}   (set SIGNOFF_DEMO_TOKEN to choose it)\n"
        f"  approvals page : {base}/approvals   (sign in with the approver token)\n"
        f"  approver token : {approver or '(as in the config file)'}   (set SIGNOFF_DEMO_APPROVER_TOKEN to choose it)\n"
        f"  approve        : signoff approve ID --token {approver or 'TOKEN'} --url {base}"
        "   (ID: on the approvals page; its first 8 characters will do)\n"
        "  try            : list_connections (allowed), kill_connection pid=87 (denied),"
        " destroy_connection (hidden)\n"
        f'  needs approval : execute_sql sql="DROP TABLE sessions_archive" waits up to {hold:g}s for you to approve'
        f" it on the approvals page, then runs (a client for it: examples/demo_client.py)\n\n"
    )
    out.flush()


def reach_lines(settings: Settings) -> list[str]:
    """Who may reach what, for the start of `signoff serve`: each agent's servers (marking its own policies), groups."""
    if not settings.agents:
        return ["no [[agents]] configured: no agent can reach any server"]
    width = max(len(a.name) for a in settings.agents)
    lines = ["agents and the servers each may reach:"]
    for agent in settings.agents:
        reach = [
            s.name + (" (its own policy)" if s.name in agent.policies else "")
            for s in settings.servers
            if agent.may_reach(s.name)
        ]
        groups = f"   groups: {', '.join(agent.groups)}" if agent.groups else ""
        lines.append(f"  {agent.name:<{width}} : {', '.join(reach) or 'none'}{groups}")
    return lines


def _positive(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def cmd_serve(args: argparse.Namespace) -> int:
    from uvicorn.supervisors import Multiprocess

    from integrations.app import create_app, freeze_startup
    from integrations.serving import http_protocol

    settings = listening_on(load_settings(args.config), args.host, args.port)
    host = settings.gateway.host
    # The demo prints its tokens and runs a policy made for trying things out: it stays on this machine unless
    # asked twice. A non-loopback host with no config is most likely a deployment that lost its config.
    if settings.demo and not is_loopback(host) and not args.public_demo:
        sys.stderr.write(
            f"signoff: refusing to serve the demo on {host}: with no servers configured signoff serves its demo,"
            " which prints its tokens and listens on loopback only. Give --config (or $SIGNOFF_CONFIG, or"
            f" ./signoff.toml) to serve your gateway, or add --public-demo to serve the demo on {host} anyway"
            " (e.g. in a container)\n"
        )
        return EXIT_CONFIG
    if args.workers > 1 and settings.demo:
        sys.stderr.write("signoff: --workers needs a config: the demo's tokens and database are one process's\n")
        return EXIT_CONFIG
    if args.workers > 1 and settings.gateway.database_url.startswith("sqlite") and settings.gateway.redis_url is None:
        # Workers tell each other of decisions, grants and ended sessions over PostgreSQL or Redis; SQLite has no
        # such channel, so a worker would learn of another's only at its next poll, or (a session) never.
        sys.stderr.write(
            "signoff: --workers needs PostgreSQL ([gateway] database_url) or Redis ([gateway] redis_url) for the"
            " workers to share: on SQLite alone signoff serves one process\n"
        )
        return EXIT_CONFIG
    load_policy_set(settings)  # a refused config is said on stderr as it is, before logging is set up
    configure_logging(args.log_level, args.log_format)  # before create_app, whose warnings are log lines too
    app = create_app(settings)  # with workers too: a bad policy is refused here, once, not by every worker
    if settings.demo:
        _print_demo_banner(settings, sys.stdout)
        if not is_loopback(host):
            sys.stderr.write(
                f"signoff: WARNING: --public-demo serves the demo on {host}, beyond loopback: anyone who can reach"
                " this port and knows the tokens above can call its tools and approve the calls\n"
            )
    if not settings.demo:
        sys.stdout.write("".join(f"{line}\n" for line in startup_lines(settings)))
    sys.stdout.write("".join(f"{line}\n" for line in reach_lines(settings)))
    if args.workers > 1:
        sys.stdout.write(f"{args.workers} worker processes share {host}:{settings.gateway.port}\n")
    sys.stdout.flush()
    options: dict[str, Any] = {
        "host": host,
        "port": settings.gateway.port,
        "log_level": args.log_level,
        "log_config": logging_config(args.log_level, args.log_format),  # applied again in each worker
        "access_log": False,
        "lifespan": "on",
        "ws": "none",
        "http": http_protocol(),  # each response in one write (integrations/serving.py)
        "timeout_graceful_shutdown": 10,
    }
    if args.workers == 1:
        freeze_startup()
        uvicorn.Server(uvicorn.Config(app, **options)).run()
        return EXIT_OK
    # Each worker imports the app and builds its own parts from the same config; they share the database (and
    # Redis), which holds everything that must agree (README: Running several replicas).
    create_database_engine(settings.gateway.database_url).dispose()  # migrated once, before the workers start
    tell_workers(settings)
    try:
        config = uvicorn.Config("integrations.app:app", workers=args.workers, **options)
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    finally:
        forget_workers()
    return EXIT_OK


def cmd_policy_check(args: argparse.Namespace) -> int:
    errors = warnings = 0
    # With a config named, the approvers a policy names are checked too: each must be a configured name or group.
    config = named_config(args.config)
    approvers: frozenset[str] | None = None
    settings: Settings | None = None
    files = list(args.files)
    if config is not None or args.agent:
        settings = load_config(config)
        approvers = settings.approver_names
        sys.stdout.write(f"approvers checked against {settings.source}: {configured_listing(approvers)}\n")
        if args.agent:
            files += _agent_policy_files(settings, args.agent)
    if not files:
        sys.stderr.write(
            "signoff: name the policy files to check, or --agent NAME for the ones an agent is judged by\n"
        )
        return EXIT_CONFIG
    for name in dict.fromkeys(files):
        path = Path(name)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            sys.stdout.write(f"{path}: error: cannot read the file: {exc.strerror}\n")
            errors += 1
            continue
        faults = check_policy(text, source=str(path), approvers=approvers)
        if settings is not None and not any(f.severity == "error" for f in faults):  # and caller names
            groups = {g for a in settings.agents for g in a.groups}
            faults += unknown_callers(load_policy(text, source=str(path)), [a.name for a in settings.agents], groups)
        for fault in faults:
            sys.stdout.write(format_fault(fault, str(path)) + "\n")
        file_errors = sum(1 for f in faults if f.severity == "error")
        errors += file_errors
        warnings += len(faults) - file_errors
        if not faults:
            sys.stdout.write(f"{path}: ok\n")
    if errors or warnings:
        sys.stdout.write(f"{errors} error(s), {warnings} warning(s) in {len(dict.fromkeys(files))} file(s)\n")
    return EXIT_FAULTS if errors or (args.strict and warnings) else EXIT_OK


def _agent_policy_files(settings: Settings, agent: str) -> list[str]:
    """The policy file each server `agent` may reach judges it by (its own, or the server's), said on stdout."""
    entry = agent_view(settings, agent, None)  # no such agent: a ConfigError naming the configured ones
    files = []
    for server in settings.servers:
        try:
            view = agent_view(settings, entry.caller.name, server.name)
        except ConfigError:  # a server it may not reach judges it by nothing
            continue
        whose = "its own policy" if view.own else "the server's policy"
        sys.stdout.write(f"agent {agent} on {server.name}: {whose} {view.policy}\n")
        files.append(str(view.policy))
    return files


def cmd_approvals_list(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    engine = create_database_engine(settings.gateway.database_url)
    with Session(engine) as session:
        rows = service.list_requests(
            session, status=args.status or None, server=args.server, tool=args.tool, limit=args.limit
        )
        views = [service.public_view(row) for row in rows]
    engine.dispose()
    if args.format == "json":
        sys.stdout.write(json.dumps(views, indent=2) + "\n")
        return EXIT_OK
    if not views:
        sys.stdout.write(f"no {args.status or ''} approval requests\n".replace("  ", " "))
    sys.stdout.write(approval_table(views, datetime.now(UTC)))
    return EXIT_OK


def _decide(args: argparse.Namespace, verdict: str) -> int:
    # With --url the gateway is named: a demo's, or one whose config is elsewhere. Without, the config says where.
    settings = load_settings(args.config) if args.url else load_config(args.config)
    token = approver_token(args.token, settings)
    if not token:
        sys.stderr.write(
            "signoff: give your approver token with --token, $SIGNOFF_APPROVER_TOKEN, or SIGNOFF_APPROVER_TOKEN in the"
            " .env beside the config\n"
        )
        return EXIT_CONFIG
    url = f"{(args.url or settings.gateway.base_url).rstrip('/')}/api/approvals/{args.id}/{verdict}"
    if getattr(args, "arguments", None) is not None:
        try:
            args.arguments = json.loads(args.arguments)
        except ValueError as exc:
            sys.stderr.write(f"signoff: --arguments is not valid JSON ({exc}); nothing was decided\n")
            return EXIT_CONFIG
    try:
        with httpx2.Client(timeout=30) as http:
            sent: dict[str, Any] = {"reason": args.reason or ""}
            if getattr(args, "grant", None):
                sent["grant"] = args.grant
            if getattr(args, "arguments", None) is not None:
                sent["arguments"] = args.arguments
            response = http.post(url, json=sent, headers={"Authorization": f"Bearer {token}"})
    except httpx2.TransportError as exc:
        sys.stderr.write(f"signoff: cannot reach the gateway at {url}: {exc}\n")
        return EXIT_CONFIG
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code != 200:
        sys.stderr.write(f"signoff: {verdict} refused ({response.status_code}): {body.get('error', response.text)}\n")
        return EXIT_FAULTS
    if body.get("settled"):
        sys.stdout.write(f"{body.get('id', args.id)} is now {body['status']}\n")
        grant = body.get("grant")
        if grant:
            sys.stdout.write(
                f"grant {grant['id']}: {grant['agent']} may call {grant['server']}/{grant['tool']} without approval "
                f"until {grant['expires_at']}\n"
            )
    else:
        sys.stdout.write(
            f"{body.get('id', args.id)}: your approval is recorded ({body['approvals']} of {body['quorum']})\n"
        )
    return EXIT_OK


def cmd_approve(args: argparse.Namespace) -> int:
    return _decide(args, "approve")


def cmd_reject(args: argparse.Namespace) -> int:
    return _decide(args, "reject")


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    upgrade(settings.gateway.database_url)
    sys.stdout.write(f"database upgraded to {head_revision()} (head)\n")
    return EXIT_OK


def cmd_db_current(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    engine = create_database_engine(settings.gateway.database_url, migrate=False)
    current = current_revision(engine)
    engine.dispose()
    head = head_revision()
    sys.stdout.write(f"current: {current or '(none)'}\nhead:    {head}\n")
    return EXIT_OK if current == head else EXIT_FAULTS


def _add_db_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    db = commands.add_parser("db", help="the database schema").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply every pending migration (the Procfile's release step)").set_defaults(
        func=cmd_db_upgrade
    )
    db.add_parser("current", help="print the database's migration and the newest; exit 1 when behind").set_defaults(
        func=cmd_db_current
    )


def cmd_slack_test(args: argparse.Namespace) -> int:
    from integrations.slack.check import check_slack

    return check_slack(load_config(args.config), args.channel, sys.stdout)


def cmd_slack_manifest(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    from integrations.slack.manifest import manifest_text

    public_url = args.public_url
    if public_url is None and not args.socket_mode:
        try:  # a config at hand says where signoff is reached
            public_url = load_settings(config_file(args.config)).gateway.public_url
        except ConfigError:
            public_url = None
        if public_url is None:
            sys.stderr.write(
                "signoff: give --public-url URL (the https:// address Slack reaches signoff at), or --socket-mode"
                " for an app that needs no public URL\n"
            )
            return EXIT_CONFIG
    try:
        text = manifest_text(public_url, socket_mode=args.socket_mode)
    except ValueError as exc:
        sys.stderr.write(f"signoff: {exc}\n")
        return EXIT_CONFIG
    sys.stdout.write(text)
    host = urlsplit(public_url or "").hostname or ""
    if not args.socket_mode and (is_loopback(host) or not str(public_url).startswith("https://")):
        sys.stderr.write(
            f"signoff: warning: Slack must reach {public_url} over HTTPS from the internet; a loopback or plain"
            " http:// URL will not verify. Use a tunnel's https:// address, or --socket-mode\n"
        )
    return EXIT_OK


def _add_slack_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    slack = commands.add_parser("slack", help="the Slack app").add_subparsers(dest="slack_command", required=True)
    manifest = slack.add_parser("manifest", help="print the Slack app manifest, ready to paste at api.slack.com/apps")
    manifest.add_argument("--public-url", help="where Slack reaches signoff (default: [gateway] public_url)")
    manifest.add_argument(
        "--socket-mode", action="store_true", help="an app that connects out over Socket Mode: no request URLs"
    )
    manifest.set_defaults(func=cmd_slack_manifest)
    test = slack.add_parser("test", help="check the [slack] settings and post a test message; say what is wrong")
    test.add_argument("--channel", help="post the test message here (default: [slack] channel)")
    test.set_defaults(func=cmd_slack_test)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="signoff", description="An MCP gateway with human sign-off.")
    parser.add_argument(
        "--config",
        help="path to signoff.toml (default: $SIGNOFF_CONFIG or ./signoff.toml); before or after the command",
    )
    parser.add_argument("--version", action="version", version=f"signoff {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="worker processes on this machine, sharing the port and the database (default 1; needs a config)",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="json: one JSON object a line (time, level, logger, message, extra fields), for a log collector",
    )
    serve.add_argument(
        "--public-demo",
        action="store_true",
        help="with no config, serve the demo on --host even beyond loopback (it listens on loopback only otherwise)",
    )
    serve.set_defaults(func=cmd_serve)
    add_init_command(commands)

    policy = commands.add_parser("policy", help="work with policy files").add_subparsers(
        dest="policy_command", required=True
    )
    check = policy.add_parser("check", help="validate policy files and print every fault")
    check.add_argument("files", nargs="*", metavar="FILE")
    check.add_argument(
        "--agent", metavar="NAME", help="also check the policy each server this [[agents]] entry may reach judges it by"
    )
    check.add_argument("--strict", action="store_true", help="treat warnings as faults")
    check.add_argument(
        "--config",
        default=argparse.SUPPRESS,  # so `signoff --config X policy check` keeps X
        help="also check that every approver a policy names is configured in this signoff.toml",
    )
    check.set_defaults(func=cmd_policy_check)
    add_policy_commands(policy)
    add_operation_commands(policy)

    approvals = commands.add_parser("approvals", help="approval requests").add_subparsers(
        dest="approvals_command", required=True
    )
    listing = approvals.add_parser("list", help="approval requests, newest first")
    listing.add_argument("--status", default="pending", help="pending (default), approved, rejected, ... or '' for all")
    listing.add_argument("--server")
    listing.add_argument("--tool")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--format", choices=["table", "json"], default="table")
    listing.set_defaults(func=cmd_approvals_list)
    add_show_command(approvals)
    for name, func, needs_reason in (("approve", cmd_approve, False), ("reject", cmd_reject, True)):
        decide = commands.add_parser(name, help=f"{name} an approval request through the running gateway")
        decide.add_argument("id", help="the request's id, or a unique prefix of it (at least 8 characters)")
        decide.add_argument("--reason", required=needs_reason)
        decide.add_argument("--token", help="your approver token (default: $SIGNOFF_APPROVER_TOKEN)")
        decide.add_argument("--url", help="the gateway's base URL (default: [gateway] public_url)")
        if name == "approve":
            decide.add_argument(
                "--grant", metavar="DURATION", help="also let this agent call this tool for DURATION (e.g. 15m)"
            )
            decide.add_argument(
                "--arguments",
                metavar="JSON",
                help="approve with the call's arguments edited to this JSON object (the rule must allow edits)",
            )
        decide.set_defaults(func=func)
    add_grant_commands(commands)

    add_audit_commands(commands)
    _add_db_commands(commands)
    _add_slack_commands(commands)
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("signoff")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _config_first(argv: Sequence[str]) -> list[str]:
    """`argv` with every `--config PATH` (or `--config=PATH`) moved to the front, where the parser takes it: so
    `signoff serve --config x` means what `signoff --config x serve` does. ValueError for a `--config` last."""
    moved: list[str] = []
    rest: list[str] = []
    words = iter(argv)
    for word in words:
        if word == "--":
            rest += [word, *words]
            break
        if word == "--config":
            value = next(words, None)
            if value is None:
                raise ValueError("argument --config: expected one argument")
            moved += [word, value]
        elif word.startswith("--config="):
            moved.append(word)
        else:
            rest.append(word)
    return moved + rest


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    given = list(sys.argv[1:] if argv is None else argv)
    if not given:  # `signoff` alone: what it can do, rather than an error about a missing command
        parser.print_help(sys.stdout)
        return EXIT_OK
    try:
        ordered = _config_first(given)
    except ValueError as exc:
        parser.error(str(exc))  # exits 2, as argparse does for its own errors
    args = parser.parse_args(ordered)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        sys.stderr.write(f"signoff: {exc}\n")
        return EXIT_CONFIG
    return code


if __name__ == "__main__":
    sys.exit(main())
