"""The `signoff` command: serve the gateway, check policies, read and verify the audit log."""

import argparse
import csv
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import httpx2
import uvicorn
from sqlmodel import Session, col, select

from approvals import service
from approvals.audit import verify_chain
from approvals.models import AuditEvent
from integrations.database import create_database_engine, current_revision, head_revision, upgrade
from integrations.errors import ConfigError
from integrations.operations import add_grant_commands, add_operation_commands
from integrations.policy_tools import add_policy_commands
from integrations.settings import Settings, approver_token, load_settings
from policies import check_policy, format_fault

EXIT_OK, EXIT_FAULTS, EXIT_CONFIG = 0, 1, 2


def _print_demo_banner(settings: Settings, out: TextIO) -> None:
    agent = settings.agents[0]
    url = f"{settings.gateway.base_url}/mcp/demo"
    out.write(
        "\nsignoff is running its demo: no signoff.toml here, so it serves a built-in demo upstream.\n"
        f"  MCP endpoint : {url}\n"
        f"  agent token  : {agent.token.get_secret_value()}   (set SIGNOFF_DEMO_TOKEN to choose it)\n"
        f"  try          : list_connections (allowed), kill_connection pid=87 (denied), destroy_connection (hidden)\n\n"
    )
    out.flush()


def cmd_serve(args: argparse.Namespace) -> int:
    from integrations.app import create_app, freeze_startup
    from integrations.serving import http_protocol

    settings = load_settings(args.config)
    if args.host:
        settings = settings.model_copy(update={"gateway": settings.gateway.model_copy(update={"host": args.host})})
    if args.port is not None:
        settings = settings.model_copy(update={"gateway": settings.gateway.model_copy(update={"port": args.port})})
    app = create_app(settings)
    freeze_startup()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.demo:
        _print_demo_banner(settings, sys.stdout)
    config = uvicorn.Config(
        app,
        host=settings.gateway.host,
        port=settings.gateway.port,
        log_level=args.log_level,
        access_log=False,
        lifespan="on",
        ws="none",
        http=http_protocol(),  # each response in one write (integrations/serving.py)
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()
    return EXIT_OK


def cmd_policy_check(args: argparse.Namespace) -> int:
    errors = warnings = 0
    for name in args.files:
        path = Path(name)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            sys.stdout.write(f"{path}: error: cannot read the file: {exc.strerror}\n")
            errors += 1
            continue
        faults = check_policy(text, source=str(path))
        for fault in faults:
            sys.stdout.write(format_fault(fault, str(path)) + "\n")
        file_errors = sum(1 for f in faults if f.severity == "error")
        errors += file_errors
        warnings += len(faults) - file_errors
        if not faults:
            sys.stdout.write(f"{path}: ok\n")
    if errors or warnings:
        sys.stdout.write(f"{errors} error(s), {warnings} warning(s) in {len(args.files)} file(s)\n")
    return EXIT_FAULTS if errors or (args.strict and warnings) else EXIT_OK


def _audit_rows(args: argparse.Namespace, session: Session) -> Sequence[AuditEvent]:
    query = select(AuditEvent)
    for field in ("server", "tool", "identity", "kind", "outcome"):
        value = getattr(args, field, None)
        if value:
            query = query.where(col(getattr(AuditEvent, field)) == value)
    return session.exec(query.order_by(col(AuditEvent.id).desc()).limit(args.limit)).all()


_AUDIT_COLUMNS = ("id", "at", "kind", "server", "tool", "identity", "actor", "rule", "outcome", "latency_ms", "detail")


def cmd_audit(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    engine = create_database_engine(settings.gateway.database_url)
    with Session(engine) as session:
        rows = _audit_rows(args, session)
    out = sys.stdout
    if args.format == "jsonl":
        for row in rows:
            out.write(row.model_dump_json() + "\n")
    elif args.format == "csv":
        writer = csv.writer(out)
        writer.writerow(_AUDIT_COLUMNS)
        for row in rows:
            writer.writerow([getattr(row, c) for c in _AUDIT_COLUMNS])
    else:
        for row in rows:
            latency = f"{row.latency_ms:.1f}ms" if row.latency_ms is not None else ""
            out.write(
                f"{row.id:>6} {row.at:%Y-%m-%d %H:%M:%S} {row.kind:<18} {row.server:<12} {row.tool:<28} "
                f"{row.identity:<16} {row.outcome:<12} {latency:>9} {row.rule}\n"
            )
    engine.dispose()
    return EXIT_OK


def cmd_audit_verify(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    engine = create_database_engine(settings.gateway.database_url)
    with Session(engine) as session:
        report = verify_chain(session)
    engine.dispose()
    if report.ok:
        sys.stdout.write(f"audit chain ok: {report.checked} rows verified\n")
        return EXIT_OK
    sys.stdout.write(
        f"audit chain BROKEN at row {report.first_bad_id}: {report.problem} ({report.checked} rows ok before it)\n"
    )
    return EXIT_FAULTS


def cmd_approvals_list(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
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
    for view in views:
        sys.stdout.write(
            f"{view['id']}  {view['status']:<9} {view['server']}/{view['tool']}  by {view['agent']}  "
            f"deadline {view['deadline']}  {view['reason']}\n"
        )
    return EXIT_OK


def _decide(args: argparse.Namespace, verdict: str) -> int:
    settings = load_settings(args.config)
    token = approver_token(args.token)
    if not token:
        sys.stderr.write("signoff: give your approver token with --token or $SIGNOFF_APPROVER_TOKEN\n")
        return EXIT_CONFIG
    url = f"{(args.url or settings.gateway.base_url).rstrip('/')}/api/approvals/{args.id}/{verdict}"
    try:
        with httpx2.Client(timeout=30) as http:
            sent = {"reason": args.reason or ""}
            if getattr(args, "grant", None):
                sent["grant"] = args.grant
            response = http.post(url, json=sent, headers={"Authorization": f"Bearer {token}"})
    except httpx2.TransportError as exc:
        sys.stderr.write(f"signoff: cannot reach the gateway at {url}: {exc}\n")
        return EXIT_CONFIG
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code != 200:
        sys.stderr.write(f"signoff: {verdict} refused ({response.status_code}): {body.get('error', response.text)}\n")
        return EXIT_FAULTS
    if body.get("settled"):
        sys.stdout.write(f"{args.id} is now {body['status']}\n")
        grant = body.get("grant")
        if grant:
            sys.stdout.write(
                f"grant {grant['id']}: {grant['agent']} may call {grant['server']}/{grant['tool']} without approval "
                f"until {grant['expires_at']}\n"
            )
    else:
        sys.stdout.write(f"{args.id}: your approval is recorded ({body['approvals']} of {body['quorum']})\n")
    return EXIT_OK


def cmd_approve(args: argparse.Namespace) -> int:
    return _decide(args, "approve")


def cmd_reject(args: argparse.Namespace) -> int:
    return _decide(args, "reject")


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    upgrade(settings.gateway.database_url)
    sys.stdout.write(f"database upgraded to {head_revision()} (head)\n")
    return EXIT_OK


def cmd_db_current(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
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

    return check_slack(load_settings(args.config), args.channel, sys.stdout)


def _add_slack_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    slack = commands.add_parser("slack", help="the Slack app").add_subparsers(dest="slack_command", required=True)
    test = slack.add_parser("test", help="check the [slack] settings and post a test message; say what is wrong")
    test.add_argument("--channel", help="post the test message here (default: [slack] channel)")
    test.set_defaults(func=cmd_slack_test)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="signoff", description="An MCP gateway with human sign-off.")
    parser.add_argument("--config", help="path to signoff.toml (default: $SIGNOFF_CONFIG or ./signoff.toml)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=cmd_serve)

    policy = commands.add_parser("policy", help="work with policy files").add_subparsers(
        dest="policy_command", required=True
    )
    check = policy.add_parser("check", help="validate policy files and print every fault")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.add_argument("--strict", action="store_true", help="treat warnings as faults")
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
    for name, func, needs_reason in (("approve", cmd_approve, False), ("reject", cmd_reject, True)):
        decide = commands.add_parser(name, help=f"{name} an approval request through the running gateway")
        decide.add_argument("id")
        decide.add_argument("--reason", required=needs_reason)
        decide.add_argument("--token", help="your approver token (default: $SIGNOFF_APPROVER_TOKEN)")
        decide.add_argument("--url", help="the gateway's base URL (default: [gateway] public_url)")
        if name == "approve":
            decide.add_argument(
                "--grant", metavar="DURATION", help="also let this agent call this tool for DURATION (e.g. 15m)"
            )
        decide.set_defaults(func=func)
    add_grant_commands(commands)

    audit = commands.add_parser("audit", help="print or export the audit log, newest first")
    audit.add_argument("--format", choices=["table", "jsonl", "csv"], default="table")
    audit.add_argument("--limit", type=int, default=100)
    for field in ("server", "tool", "identity", "kind", "outcome"):
        audit.add_argument(f"--{field}")
    audit.set_defaults(func=cmd_audit)
    audit_commands = audit.add_subparsers(dest="audit_command")
    verify = audit_commands.add_parser("verify", help="check the hash chain and name the first bad row")
    verify.set_defaults(func=cmd_audit_verify)
    _add_db_commands(commands)
    _add_slack_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        sys.stderr.write(f"signoff: {exc}\n")
        return EXIT_CONFIG
    return code


if __name__ == "__main__":
    sys.exit(main())
