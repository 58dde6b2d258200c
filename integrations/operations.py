"""`signoff grants list|revoke`, `signoff policy accept-drift|reload|replay`: the command-line edge of part 2.

Changes go through the running gateway's API (with an approver token), so its in-memory state follows at once;
reading commands read the database the config names. Replay decides nothing itself: `policies.replay` does.
"""

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx2
from sqlmodel import Session, col, select

from approvals import grants
from approvals.models import AuditEvent, AuditKind, GrantStatus, utcnow
from approvals.service import as_utc
from integrations.database import create_database_engine
from integrations.errors import ConfigError
from integrations.settings import approver_token, load_config, load_settings
from policies import PolicyInvalid, format_fault, load_policy, parse_duration
from policies.explain import DecisionKind
from policies.replay import RecordedCall, format_replay, replay

__all__ = ["add_grant_commands", "add_operation_commands", "api_post", "recorded_calls"]

EXIT_OK, EXIT_FAULTS, EXIT_CONFIG = 0, 1, 2

# The audit kinds that record a call's decision, and the decision each one is.
DECISION_KINDS = {
    AuditKind.ALLOWED: DecisionKind.ALLOW,
    AuditKind.DENIED: DecisionKind.DENY,
    AuditKind.HIDDEN: DecisionKind.HIDDEN,
    AuditKind.RATE_LIMITED: DecisionKind.RATE_LIMITED,
    AuditKind.APPROVAL_REQUIRED: DecisionKind.REQUIRE_APPROVAL,
    AuditKind.GRANT_USED: DecisionKind.REQUIRE_APPROVAL,  # the policy asked for approval; a grant gave it
}


def api_post(args: argparse.Namespace, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """POST to the running gateway as an approver; None (with the reason on stderr) when it cannot be reached."""
    # With --url the gateway is named: a demo's, or one whose config is elsewhere. Without, the config says where.
    settings = load_settings(args.config) if args.url else load_config(args.config)
    token = approver_token(args.token, settings)
    if not token:
        sys.stderr.write(
            "signoff: give your approver token with --token, $SIGNOFF_APPROVER_TOKEN, or SIGNOFF_APPROVER_TOKEN in the"
            " .env beside the config\n"
        )
        return None
    url = f"{(args.url or settings.gateway.base_url).rstrip('/')}{path}"
    try:
        with httpx2.Client(timeout=30) as http:
            response = http.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
    except httpx2.TransportError as exc:
        sys.stderr.write(f"signoff: cannot reach the gateway at {url}: {exc}\n")
        return None
    json_body = response.headers.get("content-type", "").startswith("application/json")
    payload = response.json() if json_body else {"error": response.text}
    return response.status_code, payload


def _add_api_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token", help="your approver token (default: $SIGNOFF_APPROVER_TOKEN)")
    parser.add_argument("--url", help="the gateway's base URL (default: [gateway] public_url)")


# -- grants -------------------------------------------------------------------------------------------------------


def cmd_grants_list(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    engine = create_database_engine(settings.gateway.database_url)
    now = utcnow()
    with Session(engine) as session:
        if args.status == GrantStatus.ACTIVE:
            rows = [g for g in grants.active_grants(session, now) if args.server in (None, g.server)]
        else:
            status = None if args.status == "all" else args.status
            rows = list(grants.list_grants(session, status=status, server=args.server, limit=args.limit))
        views = [grants.grant_view(g, now) for g in rows]
    engine.dispose()
    if args.format == "json":
        sys.stdout.write(json.dumps(views, indent=2) + "\n")
        return EXIT_OK
    if not views:
        sys.stdout.write(f"no {'' if args.status == 'all' else args.status + ' '}grants\n")
    for view in views:
        left = f"{grants.format_duration(view['remaining_seconds'])} left" if view["status"] == "active" else ""
        sys.stdout.write(
            f"{view['id']}  {view['status']:<8} {view['server']}/{view['tool']}  for {view['agent']}  "
            f"by {view['granted_by']}  until {view['expires_at']}  {left}\n"
        )
    return EXIT_OK


def cmd_grants_revoke(args: argparse.Namespace) -> int:
    answer = api_post(args, f"/api/grants/{args.id}/revoke", {"reason": args.reason or ""})
    if answer is None:
        return EXIT_CONFIG
    status, body = answer
    if status != 200:
        sys.stderr.write(f"signoff: revoke refused ({status}): {body.get('error')}\n")
        return EXIT_FAULTS
    sys.stdout.write(
        f"grant {body.get('id', args.id)} revoked: {body['server']}/{body['tool']} for {body['agent']}"
        " needs approval again\n"
    )
    return EXIT_OK


def add_grant_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add `signoff grants list|revoke`."""
    group = commands.add_parser("grants", help="time-boxed grants given with approvals").add_subparsers(
        dest="grants_command", required=True
    )
    listing = group.add_parser("list", help="grants, newest first (active ones by default)")
    listing.add_argument("--status", default="active", choices=["active", "expired", "revoked", "all"])
    listing.add_argument("--server")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--format", choices=["table", "json"], default="table")
    listing.set_defaults(func=cmd_grants_list)
    revoke = group.add_parser("revoke", help="end a grant now, through the running gateway")
    revoke.add_argument("id")
    revoke.add_argument("--reason")
    _add_api_options(revoke)
    revoke.set_defaults(func=cmd_grants_revoke)


# -- drift and reload ---------------------------------------------------------------------------------------------


def cmd_accept_drift(args: argparse.Namespace) -> int:
    path = f"/api/drift/{args.server}/{args.tool}/accept" if args.tool else f"/api/drift/{args.server}/accept"
    answer = api_post(args, path, {})
    if answer is None:
        return EXIT_CONFIG
    status, body = answer
    if status != 200:
        sys.stderr.write(f"signoff: accept-drift refused ({status}): {body.get('error')}\n")
        return EXIT_FAULTS
    accepted = body["accepted"]
    if not accepted:
        sys.stdout.write(f"{args.server}: no drifted tool{' named ' + args.tool if args.tool else ''} to accept\n")
    for tool in accepted:
        sys.stdout.write(f"{args.server}/{tool}: the definition seen now is pinned; on_drift no longer applies\n")
    return EXIT_OK


def cmd_policy_reload(args: argparse.Namespace) -> int:
    answer = api_post(args, "/api/policies/reload", {})
    if answer is None:
        return EXIT_CONFIG
    status, body = answer
    if "servers" not in body:
        sys.stderr.write(f"signoff: reload refused ({status}): {body.get('error')}\n")
        return EXIT_FAULTS
    for name, result in body["servers"].items():
        line = f"{name}: {result['result']}, policy {result['version']}"
        if result["error"]:
            line += f" (the previous policy keeps serving: {result['error']})"
        sys.stdout.write(line + "\n")
    return EXIT_OK if status == 200 else EXIT_FAULTS


# -- replay -------------------------------------------------------------------------------------------------------


def _has_redacted(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_redacted(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_redacted(v) for v in value)
    return isinstance(value, str) and value == "[redacted]"


def recorded_calls(rows: Sequence[AuditEvent]) -> tuple[list[RecordedCall], int]:
    """The calls audit rows record, oldest first, and how many rows had no stored arguments (left out)."""
    calls, missing = [], 0
    for row in rows:
        decision = DECISION_KINDS.get(AuditKind(row.kind))
        if decision is None:
            continue
        try:
            arguments = json.loads(row.arguments) if row.arguments is not None else None
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            missing += 1
            continue
        at = as_utc(row.at)
        calls.append(
            RecordedCall(
                at=at.timestamp(),
                server=row.server,
                tool=row.tool,
                identity=row.identity,
                arguments=arguments,
                decision=decision,
                rule=row.rule,
                redacted=_has_redacted(arguments),
                label=f"#{row.id} {at:%Y-%m-%d %H:%M:%S}",
            )
        )
    return calls, missing


def cmd_policy_replay(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        policy = load_policy(path.read_bytes(), source=str(path))
    except OSError as exc:
        sys.stderr.write(f"{path}: error: cannot read the policy: {exc.strerror}\n")
        return EXIT_CONFIG
    except PolicyInvalid as exc:
        for fault in exc.faults:
            if fault.severity == "error":
                sys.stderr.write(format_fault(fault, str(path)) + "\n")
        return EXIT_CONFIG
    since = parse_duration(args.since)
    if since is None:
        raise ConfigError(f"--since {args.since!r} is not a duration such as 7d, 12h or 30m")
    settings = load_config(args.config)
    engine = create_database_engine(settings.gateway.database_url)
    start = utcnow() - timedelta(seconds=since)
    with Session(engine) as session:
        query = (
            select(AuditEvent)
            .where(
                col(AuditEvent.server) == args.server,
                col(AuditEvent.at) >= start,
                col(AuditEvent.kind).in_([k.value for k in DECISION_KINDS]),
            )
            .order_by(col(AuditEvent.id))
        )
        rows = session.exec(query).all()
    engine.dispose()
    calls, missing = recorded_calls(rows)
    report = replay(policy, calls)
    out = sys.stdout
    out.write(f"server {args.server}, calls since {start.isoformat(timespec='seconds')}, candidate {path}\n")
    out.write("\n".join(format_replay(report, all_tools=args.all)) + "\n")
    if missing:
        out.write(f"note: {missing} recorded call(s) had no stored arguments and were not replayed\n")
    return EXIT_FAULTS if args.fail_on_change and report.changed else EXIT_OK


def add_operation_commands(policy: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add `accept-drift`, `reload` and `replay` to the `signoff policy` command group."""
    accept = policy.add_parser(
        "accept-drift", help="accept a tool's changed definition (or every drifted tool of SERVER) as re-checked"
    )
    accept.add_argument("server", metavar="SERVER")
    accept.add_argument("tool", metavar="TOOL", nargs="?")
    _add_api_options(accept)
    accept.set_defaults(func=cmd_accept_drift)

    reload = policy.add_parser("reload", help="make the running gateway re-read its policy files now")
    _add_api_options(reload)
    reload.set_defaults(func=cmd_policy_reload)

    again = policy.add_parser("replay", help="replay audited calls against a candidate policy; print what would change")
    again.add_argument("file", metavar="FILE", help="the candidate policy")
    again.add_argument("--server", required=True, metavar="NAME", help="whose recorded calls to replay")
    again.add_argument("--since", default="7d", help="how far back (default 7d)")
    again.add_argument("--all", action="store_true", help="list tools whose decisions do not change too")
    again.add_argument("--fail-on-change", action="store_true", help="exit 1 if any decision would change (for CI)")
    again.set_defaults(func=cmd_policy_replay)
