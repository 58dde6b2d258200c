"""`signoff audit ...`: export the log, verify it (the database, an export, against a checkpoint file), the signing
key, checkpoints on demand, and archiving old rows. Adapters only: the proofs are `approvals.verification`'s."""

import argparse
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from approvals.audit import of_kind
from approvals.checkpoints import Checkpoint, key_id, make_checkpoint, private_key_text, public_key_text
from approvals.models import AuditCheckpoint, AuditEvent
from approvals.verification import Proof, Scope, prove
from integrations.archiving import CATCH_UP, ArchiveRefused, archive
from integrations.audit_files import Export, ExportUnreadable, csv_rows, each_row, jsonl_rows, read_export
from integrations.auditkeys import public_keys, signing_key
from integrations.checkpointing import append_checkpoint
from integrations.database import create_database_engine
from integrations.errors import ConfigError
from integrations.settings import Settings, duration, load_config

EXIT_OK, EXIT_FAULTS, EXIT_CONFIG = 0, 1, 2
FILTERS = ("server", "tool", "identity", "kind", "outcome")
NO_KEY = (
    "no signing key configured ([audit] signing_key): no checkpoints are made, so this proves the rows' order and"
    " content, not that none were cut from the end or that the tail was not rewritten"
)


def _engine(settings: Settings) -> Engine:
    return create_database_engine(settings.gateway.database_url)


def _where(args: argparse.Namespace) -> tuple[Callable[[Any], Any], dict[str, str]]:
    filters = {name: getattr(args, name, None) or "" for name in FILTERS}

    def where(query: Any) -> Any:
        for name, value in filters.items():
            if value:
                query = (
                    of_kind(query, value) if name == "kind" else query.where(col(getattr(AuditEvent, name)) == value)
                )
        return query

    return where, filters


def cmd_audit(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    engine = _engine(settings)
    where, filters = _where(args)
    export = Export(where=where, filters=filters, limit=args.limit)
    sessions = partial(Session, engine)
    out = sys.stdout
    try:
        if args.format == "jsonl":
            out.writelines(jsonl_rows(sessions, export, datetime.now(UTC)))
        elif args.format == "csv":
            out.writelines(csv_rows(sessions, export))
        else:
            out.writelines(_table(each_row(sessions, export)))
    finally:
        engine.dispose()
    return EXIT_OK


def _table(rows: Iterator[AuditEvent]) -> Iterator[str]:
    for row in rows:
        latency = f"{row.latency_ms:.1f}ms" if row.latency_ms is not None else ""
        yield (
            f"{row.id:>6} {row.at:%Y-%m-%d %H:%M:%S} {row.kind:<18} {row.server:<12} {row.tool:<28} "
            f"{row.identity:<16} {row.outcome:<12} {latency:>9} {row.rule}\n"
        )


def _database_rows(engine: Engine) -> Iterator[dict[str, Any]]:
    after = 0
    while True:
        with Session(engine) as session:
            query = select(AuditEvent).where(col(AuditEvent.id) > after).order_by(col(AuditEvent.id)).limit(1000)
            batch = [row.model_dump() for row in session.exec(query)]
        if not batch:
            return
        yield from batch
        after = batch[-1]["id"]


def _report(proof: Proof, what: str, out: TextIO, *, keys: int, checkpoints: int) -> int:
    if proof.ok:
        out.write(f"{what} ok: {proof.rows} rows verified, {proof.start}\n")
    else:
        out.write(f"{what} NOT verified: {len(proof.faults)} problem(s) in {proof.rows} rows\n")
        out.writelines(f"  BROKEN: {fault}\n" for fault in proof.faults)
    if keys:
        out.write(f"checkpoints: {proof.anchors} signed checkpoint(s) verified; the chain passes through each\n")
        if proof.rows:
            out.write(f"unanchored: {proof.unanchored} row(s) after the last checkpoint\n")
    elif checkpoints:
        out.write(f"checkpoints: {checkpoints} found, not checked: no public key (--key) to check them with\n")
    if proof.gaps:
        out.write(f"gaps: {proof.gaps} (a filtered export: rows between are not in it, so links are not checked)\n")
    out.writelines(f"note: {note}\n" for note in proof.notes)
    return EXIT_OK if proof.ok else EXIT_FAULTS


def cmd_audit_verify(args: argparse.Namespace) -> int:
    # An export checked with the public key given needs no config (an auditor's machine has none).
    settings = None if args.file and args.key else load_config(args.config)
    keys = public_keys(args.key, None if settings is None else settings.audit)
    out = sys.stdout
    try:
        against = [c for path in args.against or () for c in read_export(Path(path)).checkpoints]
        if args.file:
            return _verify_file(Path(args.file), keys, against, out)
    except ExportUnreadable as exc:
        sys.stderr.write(f"signoff: {exc}\n")
        return EXIT_CONFIG
    if settings is None:
        raise ConfigError("verify needs a config for the database (or --file EXPORT to verify an export)")
    engine = _engine(settings)
    try:
        with Session(engine) as session:
            stored = [Checkpoint.from_row(c) for c in session.exec(select(AuditCheckpoint))]
        proof = prove(_database_rows(engine), [*stored, *against], keys)
    finally:
        engine.dispose()
    code = _report(proof, "audit chain", out, keys=len(keys), checkpoints=len(stored))
    if args.against:
        missing = len(set(against) - set(stored))
        out.write(f"against: {len(against)} checkpoint(s) from {', '.join(args.against)}")
        out.write(f", {missing} of them no longer in the database\n" if missing else "\n")
    if not keys:
        out.write(f"note: {NO_KEY}\n")
    return code


def _verify_file(path: Path, keys: list[Any], against: list[Checkpoint], out: TextIO) -> int:
    export = read_export(path)
    scope = export.scope
    proof = prove(export.rows(), [*export.checkpoints, *against], keys, Scope(scope.contiguous, scope.whole))
    code = _report(proof, f"{path}", out, keys=len(keys), checkpoints=len(export.checkpoints))
    if export.header is None:
        out.write("note: the file has no export header: its rows must link up, but need not reach the log's start\n")
    elif not scope.whole:
        out.write("note: a partial export (filtered or limited): it cannot show that no row is missing\n")
    return code


def cmd_audit_key(args: argparse.Namespace) -> int:
    out = sys.stdout
    if args.generate:
        key = Ed25519PrivateKey.generate()
        pem = private_key_text(key)
        if args.out:
            try:
                with Path(args.out).open("x", encoding="utf-8") as file:
                    Path(args.out).chmod(0o600)
                    file.write(pem)
            except FileExistsError:
                sys.stderr.write(f"signoff: {args.out} exists; a signing key is never overwritten\n")
                return EXIT_CONFIG
            out.write(f"signing key written to {args.out} (mode 600); set [audit] signing_key_file = {args.out!r}\n")
        else:
            out.write(pem)
        out.write(f"public key: {public_key_text(key.public_key())}\nkey id: {key_id(key.public_key())}\n")
        return EXIT_OK
    settings = load_config(args.config)
    configured = signing_key(settings.audit)
    if configured is None:
        sys.stderr.write(
            "signoff: no signing key configured: set [audit] signing_key or signing_key_file"
            " (make one with `signoff audit key --generate --out FILE`)\n"
        )
        return EXIT_CONFIG
    out.write(f"{public_key_text(configured.public_key())}\n")
    sys.stderr.write(f"key id: {key_id(configured.public_key())}\n")
    return EXIT_OK


def _required_key(settings: Settings, what: str) -> Ed25519PrivateKey:
    key = signing_key(settings.audit)
    if key is None:
        raise ConfigError(f"{what} needs a signing key: set [audit] signing_key or signing_key_file")
    return key


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    key = _required_key(settings, "a checkpoint")
    engine = _engine(settings)
    try:
        with engine.begin() as connection:
            made = make_checkpoint(connection, key, datetime.now(UTC))
    finally:
        engine.dispose()
    if made is None:
        sys.stdout.write("no checkpoint needed: every row is anchored already\n")
        return EXIT_OK
    _send_out(settings, made)
    sys.stdout.write(f"checkpoint of row {made.row_id} signed with key {made.key_id}\n")
    return EXIT_OK


def _send_out(settings: Settings, checkpoint: Checkpoint) -> None:
    if settings.audit.checkpoint_file is not None:
        append_checkpoint(settings.audit.checkpoint_file, checkpoint)


def _cutoff(text: str, now: datetime) -> datetime:
    try:
        return now - timedelta(seconds=duration(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"--before {text!r}: neither a duration (90d) nor a date (2026-01-01)") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def cmd_audit_archive(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    key = _required_key(settings, "archiving (its checkpoint joins the archive to the rows kept)")
    now = datetime.now(UTC)
    cutoff = _cutoff(args.before, now)
    engine = _engine(settings)
    try:
        done = archive(engine, key, cutoff, Path(args.out), now, settings.telemetry.audit_to, args.wait)
    except ArchiveRefused as exc:
        sys.stderr.write(f"signoff: not archived: {exc}\n")
        return EXIT_FAULTS
    finally:
        engine.dispose()
    _send_out(settings, done.checkpoint)
    sys.stdout.write(
        f"archived {done.rows} rows (through row {done.through}, before {cutoff:%Y-%m-%d %H:%M:%SZ}) to {args.out};"
        f" {done.kept} rows kept, joined to the archive by the checkpoint of row {done.through}"
        f" (key {done.checkpoint.key_id})\n"
    )
    for behind in done.unsent:  # an export not in this config's audit_to: its copy lacks these rows (they are here)
        sys.stderr.write(
            f"signoff: note: the audit export {behind} had not sent every archived row; they are in {args.out}\n"
        )
    return EXIT_OK


def _seconds(text: str) -> float:
    try:
        return duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def add_audit_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    audit = commands.add_parser("audit", help="print or export the audit log, newest first (every row unless --limit)")
    audit.add_argument("--format", choices=["table", "jsonl", "csv"], default="table")
    audit.add_argument("--limit", type=_positive, help="only the newest N matching rows (default: every one)")
    for field in FILTERS:
        audit.add_argument(f"--{field}")
    audit.set_defaults(func=cmd_audit)
    sub = audit.add_subparsers(dest="audit_command")
    verify = sub.add_parser(
        "verify", help="check the hash chain and every signed checkpoint; name every problem and the unanchored rows"
    )
    verify.add_argument(
        "--against", action="append", metavar="FILE", help="also hold the log to the checkpoints in FILE (repeatable)"
    )
    verify.add_argument("--file", metavar="EXPORT", help="verify an export or archive (JSON lines, .gz too) on its own")
    verify.add_argument(
        "--key",
        action="append",
        metavar="PUBLIC_KEY",
        help="check signatures with this public key (or a file holding it); default: the configured key's",
    )
    verify.set_defaults(func=cmd_audit_verify)
    key = sub.add_parser("key", help="print the public key of [audit] signing_key; --generate makes a new key")
    key.add_argument("--generate", action="store_true", help="make a new Ed25519 signing key")
    key.add_argument("--out", metavar="FILE", help="with --generate: write the signing key to FILE (mode 600)")
    key.set_defaults(func=cmd_audit_key)
    checkpoint = sub.add_parser("checkpoint", help="sign the chain's head now (the server does every N rows or T s)")
    checkpoint.set_defaults(func=cmd_audit_checkpoint)
    archived = sub.add_parser("archive", help="move rows older than --before to an archive file, then remove them")
    archived.add_argument("--before", required=True, help="a duration back from now (90d) or a date (2026-01-01)")
    archived.add_argument("--out", required=True, metavar="FILE", help="the archive (JSON lines; gzipped if .gz)")
    archived.add_argument(
        "--wait",
        type=_seconds,
        default=CATCH_UP,
        metavar="DURATION",
        help="how long to wait for [telemetry] audit_to to send the rows to remove, before refusing (default 10s)",
    )
    archived.set_defaults(func=cmd_audit_archive)
