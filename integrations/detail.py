"""`signoff approvals show ID`: one approval request, every field and its audit trail, read from the database.

Reads only; a decision goes through the running gateway (`signoff approve`). The id may be a unique prefix.
"""

import argparse
import json
import sys
from typing import Any

from sqlmodel import Session

from approvals import prefixes, service
from approvals.audit import request_trail
from approvals.errors import ApprovalError
from integrations.database import create_database_engine
from integrations.settings import load_config

__all__ = ["add_show_command"]

EXIT_OK, EXIT_FAULTS = 0, 1
_ONE_LINE = 100  # a list or object this short is shown on its key's line, longer ones as indented JSON below


def _scalar(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _lines(view: dict[str, Any], trail: list[dict[str, Any]]) -> list[str]:
    nested = {k: v for k, v in view.items() if isinstance(v, dict | list) and k != "decisions"}
    flat = {k: v for k, v in view.items() if k not in nested and k != "decisions"}
    width = max(len(k) for k in flat)
    lines = [f"{key:<{width}} : {_scalar(value)}" for key, value in flat.items()]
    for key, value in nested.items():
        short = json.dumps(value, ensure_ascii=False)
        if len(short) <= _ONE_LINE:
            lines.append(f"{key:<{width}} : {short}")
        else:
            lines += [
                f"{key}:",
                *(f"  {line}" for line in json.dumps(value, indent=2, ensure_ascii=False).splitlines()),
            ]
    lines.append("decisions:" if view["decisions"] else "decisions: none yet")
    for d in view["decisions"]:
        note = f"  {d['comment']}" if d["comment"] else ""
        lines.append(f"  {d['at']}  {d['verdict']:<7} {d['approver']} via {d['channel']}{note}")
    lines.append("audit trail:")
    for row in trail:
        actor = f" by {row['actor']}" if row["actor"] else ""
        via = f" via {row['channel']}" if row["channel"] else ""
        outcome = f" -> {row['outcome']}" if row["outcome"] else ""
        detail = str(row["detail"]).removeprefix(f"approval {view['id']}").removeprefix(": ")
        lines.append(f"  #{row['id']} {row['at']}  {row['kind']}{actor}{via}{outcome}  {detail}".rstrip())
    return lines


def cmd_approvals_show(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    engine = create_database_engine(settings.gateway.database_url)
    try:
        with Session(engine) as session:
            request_id = prefixes.request_id(session, args.id)
            row = service.get_request(session, request_id)
            view = service.public_view(row, service.decisions_for(session, request_id))
            trail = [json.loads(event.model_dump_json()) for event in request_trail(session, request_id)]
    except ApprovalError as exc:
        sys.stderr.write(f"signoff: {exc}\n")
        return EXIT_FAULTS
    finally:
        engine.dispose()
    view["url"] = f"{settings.gateway.base_url}/approvals/{request_id}"
    if args.format == "json":
        sys.stdout.write(json.dumps({**view, "audit": trail}, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write("".join(f"{line}\n" for line in _lines(view, trail)))
    return EXIT_OK


def add_show_command(approvals: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add `signoff approvals show ID`."""
    show = approvals.add_parser("show", help="one approval request: every field, its decisions and audit trail")
    show.add_argument("id", help="the request's id, or a unique prefix of it (at least 8 characters)")
    show.add_argument("--format", choices=["table", "json"], default="table")
    show.set_defaults(func=cmd_approvals_show)
