"""The audit page: the log filtered and paged, exported as CSV or JSONL, and whether its hash chain holds.

Read-only. Filters are exact matches on indexed columns plus a time range; paging follows row ids (keyset),
so a page stays cheap however long the log grows. Exports use the same filters and stream in batches
(`integrations.audit_files`), with the hashes and, in JSON lines, the signed checkpoints, so they verify offline.
"""

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlmodel import Session, col, func, select
from sqlmodel.sql.expression import SelectOfScalar
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute

from approvals.audit import ChainReport, of_kind, verify_chain
from approvals.checkpoints import Checkpoint
from approvals.models import AuditEvent, AuditKind
from integrations.audit_files import (
    EXPORT_COLUMNS,
    Export,
    begin,
    checkpoint_lines,
    csv_cell,
    csv_line,
    joining,
    read_batch,
    row_lines,
)
from integrations.web.identity import Identity
from integrations.web.pages import Pages

T = TypeVar("T")
PAGE = 50
VERIFY_EVERY = 60.0
OUTCOMES = (
    "ok",
    "tool_error",
    "error",
    "upstream_failure",
    "upstream_unavailable",
    "approve",
    "reject",
    "expired",
    "cancelled",
)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """What the auditor asked for; every field empty means the whole log."""

    since: str = ""
    until: str = ""
    server: str = ""
    tool: str = ""
    agent: str = ""
    actor: str = ""
    kind: str = ""
    outcome: str = ""

    @classmethod
    def from_query(cls, params: QueryParams) -> "AuditFilter":
        return cls(**{f.name: params.get(f.name, "").strip() for f in fields(cls)})

    def query_string(self, **extra: str | int) -> str:
        pairs = [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name)]
        pairs += [(k, str(v)) for k, v in extra.items()]
        return str(QueryParams(pairs))

    def problems(self) -> list[str]:
        return [f"{name}: {value!r} is not a date and time" for name, value in self._moments() if value is None]

    def _moments(self) -> list[tuple[str, datetime | None]]:
        return [(name, _moment(getattr(self, name))) for name in ("since", "until") if getattr(self, name)]

    def apply(self, query: SelectOfScalar[T]) -> SelectOfScalar[T]:
        for column, value in (
            (AuditEvent.server, self.server),
            (AuditEvent.tool, self.tool),
            (AuditEvent.identity, self.agent),
            (AuditEvent.actor, self.actor),
            (AuditEvent.outcome, self.outcome),
        ):
            if value:
                query = query.where(col(column) == value)
        if self.kind:
            query = of_kind(query, self.kind)
        since, until = _moment(self.since), _moment(self.until)
        if since is not None:
            query = query.where(col(AuditEvent.at) >= since)
        if until is not None:
            query = query.where(col(AuditEvent.at) <= until)
        return query


def _moment(value: str) -> datetime | None:
    """A time from the filter form: ISO 8601; without a zone it is UTC, as the page shows every time."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[AuditEvent]
    total: int
    older: int | None
    newer: int | None


def _read_page(session: Session, wanted: AuditFilter, before: int | None, after: int | None, size: int) -> Page:
    total = session.exec(wanted.apply(select(func.count()).select_from(AuditEvent))).one()
    query = wanted.apply(select(AuditEvent))
    if after is not None:  # towards newer rows: read upwards from `after`, show them newest first
        rows = list(session.exec(query.where(col(AuditEvent.id) > after).order_by(col(AuditEvent.id)).limit(size + 1)))
        more_newer, rows = len(rows) > size, rows[:size][::-1]
        more_older = bool(rows) and _exists(session, query.where(col(AuditEvent.id) < rows[-1].id))
    else:
        upto = query if before is None else query.where(col(AuditEvent.id) < before)
        rows = list(session.exec(upto.order_by(col(AuditEvent.id).desc()).limit(size + 1)))
        more_older, rows = len(rows) > size, rows[:size]
        more_newer = (
            before is not None and bool(rows) and _exists(session, query.where(col(AuditEvent.id) > rows[0].id))
        )
    return Page(
        rows=rows,
        total=total,
        older=rows[-1].id if rows and more_older else None,
        newer=rows[0].id if rows and more_newer else None,
    )


def _exists(session: Session, query: SelectOfScalar[Any]) -> bool:
    return session.exec(query.limit(1)).first() is not None


def _filters(wanted: AuditFilter) -> dict[str, str]:
    return {f.name: getattr(wanted, f.name) for f in fields(wanted)}


def _int(raw: str | None) -> int | None:
    # ASCII digits only ("²".isdigit() is true) and at most 18 of them: a row id fits SQLite's and PostgreSQL's
    # 64-bit integers, and int() refuses strings of over 4,300 digits.
    return int(raw) if raw is not None and raw.isascii() and raw.isdigit() and len(raw) <= 18 else None


def _cursor(params: QueryParams, key: str, problems: list[str]) -> int | None:
    """The row id a page starts from (`before` or `after`), or None; a value that is not one is a problem."""
    raw = params.get(key) or None
    number = _int(raw)
    if raw is not None and number is None:
        problems.append(f"{key} must be a row number, as in this page's own links")
    return number


class ChainStatus:
    """The chain's last verification, re-checked at most every `every` seconds (a full walk of the log)."""

    def __init__(self, every: float = VERIFY_EVERY) -> None:
        self.every = every
        self.report: ChainReport | None = None
        self.checked_at: datetime | None = None
        self._at = 0.0

    async def current(self, request: Request, pages: Pages, force: bool) -> tuple[ChainReport, datetime]:
        if force or self.report is None or self.checked_at is None or time.monotonic() - self._at > self.every:
            self.report = await pages.approvals(request).store.run(verify_chain)
            self.checked_at, self._at = datetime.now(UTC), time.monotonic()
        return self.report, self.checked_at


def build_audit_routes(pages: Pages) -> list[BaseRoute]:
    chain = ChainStatus()

    async def audit(request: Request, identity: Identity) -> Response:
        params = request.query_params
        wanted = AuditFilter.from_query(params)
        problems = wanted.problems()
        size = max(1, min(_int(params.get("limit")) or PAGE, 500))
        before, after = _cursor(params, "before", problems), _cursor(params, "after", problems)
        page = await pages.approvals(request).store.run(_read_page, wanted, before, after, size)
        keep = {"limit": size} if size != PAGE else {}
        report, checked_at = await chain.current(request, pages, force=params.get("verify") == "now")
        context = {
            "wanted": wanted,
            "problems": problems,
            "page": page,
            "size": size,
            "report": report,
            "checked_at": checked_at,
            "kinds": [k.value for k in AuditKind],
            "outcomes": OUTCOMES,
            "export_query": wanted.query_string(),
            "older_query": wanted.query_string(**keep, before=page.older) if page.older else None,
            "newer_query": wanted.query_string(**keep, after=page.newer) if page.newer else None,
            "newest_query": wanted.query_string(**keep),
            "section": "audit",
        }
        status = 400 if problems else 200
        return pages.render(request, "audit.html", context, status_code=status, identity=identity)

    async def export(request: Request, identity: Identity, fmt: str) -> Response:
        wanted = AuditFilter.from_query(request.query_params)
        problems = wanted.problems()
        if problems:
            return pages.refuse(request, 400, "The filter is not valid", "; ".join(problems))
        store = pages.approvals(request).store
        job = await store.run(begin, Export(where=wanted.apply, filters=_filters(wanted)))

        async def batches() -> AsyncIterator[tuple[list[AuditEvent], dict[int, list[Checkpoint]]]]:
            after: int | None = None
            while True:
                rows, named = await store.run(read_batch, job, after)
                if not rows:
                    return
                yield rows, named
                after = rows[-1].id

        async def as_jsonl() -> AsyncIterator[str]:
            yield json.dumps(job.header(datetime.now(UTC))) + "\n"
            oldest: AuditEvent | None = None
            async for rows, named in batches():
                yield "".join(line for row in rows for line in row_lines(row, named))
                oldest = rows[-1]
            if oldest is not None:  # the checkpoint joining it to an archive, when it starts there
                yield "".join(checkpoint_lines(await store.run(joining, oldest.prev_hash)))

        async def as_csv() -> AsyncIterator[str]:
            yield csv_line(EXPORT_COLUMNS)
            async for rows, _ in batches():
                yield "".join(csv_line([csv_cell(getattr(row, c)) for c in EXPORT_COLUMNS]) for row in rows)

        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        media = "text/csv; charset=utf-8" if fmt == "csv" else "application/jsonl; charset=utf-8"
        disposition = f'attachment; filename="signoff-audit-{stamp}.{fmt}"'
        body = as_csv() if fmt == "csv" else as_jsonl()
        return StreamingResponse(body, media_type=media, headers={"content-disposition": disposition})

    async def export_csv(request: Request, identity: Identity) -> Response:
        return await export(request, identity, "csv")

    async def export_jsonl(request: Request, identity: Identity) -> Response:
        return await export(request, identity, "jsonl")

    return [
        pages.route("/audit", pages.page(audit), name="audit"),
        pages.route("/audit/export.csv", pages.page(export_csv), name="audit_csv"),
        pages.route("/audit/export.jsonl", pages.page(export_jsonl), name="audit_jsonl"),
    ]
