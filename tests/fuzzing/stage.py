"""The stage: a real signoff over loopback before its upstreams and the Slack fake, and liveness after."""

import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import httpx2
from sqlmodel import Session, col, func, select

from approvals.audit import verify_chain
from approvals.models import AuditEvent
from tests.conftest import AGENT_TOKEN, Running
from tests.fakes.slack_api import FakeSlack
from tests.fakes.upstreams import everything_http_app, serve_http
from tests.fuzzing.case import ACCEPT, APPROVER_TOKEN, HANDSHAKE, MAX_BODY, POLICY, SLACK_SECRET, Target


@dataclass
class Stage:
    running: Running
    slack: FakeSlack
    target: Target


@dataclass(frozen=True)
class Liveness:
    call_ok: bool
    healthz_ok: bool
    chain_ok: bool
    last_call_audited: bool
    detail: str

    @property
    def ok(self) -> bool:
        return self.call_ok and self.healthz_ok and self.chain_ok and self.last_call_audited


def slack_section(api: str) -> str:
    users = {"alice": "U0ALICE", "bob": "U0BOB", "carol": "U0CAROL"}
    lines = [
        "",
        "[slack]",
        'bot_token = "xoxb-test-token"',
        f'signing_secret = "{SLACK_SECRET}"',
        'channel = "#approvals"',
        f'api_url = "{api}/api/"',
        "",
    ]
    for name, user in users.items():
        groups = ["ops"] if name == "carol" else ["dba"]
        lines += [
            "[[approvers]]",
            f'name = "{name}"',
            f'token = "{name}-approver-token"',
            f'slack_user = "{user}"',
            f"groups = {json.dumps(groups)}",
            "",
        ]
    return "\n".join(lines)


Start = Callable[..., AbstractAsyncContextManager[Running]]


@asynccontextmanager
async def stage(start: Start, *, stdio: bool = False, pending: int = 3) -> AsyncIterator[Stage]:
    """signoff (fixture-style `start`) before the everything server, the Slack fake, and `pending` held requests."""
    slack = FakeSlack()
    async with serve_http(slack.app) as api, serve_http(everything_http_app()) as upstream:
        servers: list[dict[str, Any]] = [{"name": "ev", "url": f"{upstream}/mcp", "policy": POLICY}]
        if stdio:
            demo = [sys.executable, "-m", "integrations.demo"]
            servers.append({"name": "demo", "command": demo, "policy": "catalog:demo"})
        gateway = {"approval_hold": "0.05s", "max_body_bytes": MAX_BODY}
        async with start(servers, gateway=gateway, extra=slack_section(api)) as running:
            target = await _prepare(running, slack, pending, stdio)
            yield Stage(running, slack, target)


async def _prepare(running: Running, slack: FakeSlack, pending: int, stdio: bool) -> Target:
    ids = []
    async with running.client("ev") as client:
        for n in range(pending):
            result = await client.call_tool("delete_record", {"record_id": f"fuzz-{n}"})
            ids.append(str((result.meta or {})["signoff/decision"]["approval_id"]))
    async with httpx2.AsyncClient(base_url=running.url, timeout=10) as http:
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": HANDSHAKE,
                "capabilities": {},
                "clientInfo": {"name": "fuzz", "version": "1"},
            },
        }
        headers = {"Authorization": f"Bearer {AGENT_TOKEN}", "Accept": ACCEPT}
        session = (await http.post("/mcp/ev", json=init, headers=headers)).headers.get("mcp-session-id", "")
        stdio_session = ""
        if stdio:
            answer = await http.post("/mcp/demo", json=init, headers=headers)
            stdio_session = answer.headers.get("mcp-session-id", "")
        form = await http.get("/login")
        csrf = _csrf(form.text)
        await http.post("/login", data={"csrf": csrf, "token": APPROVER_TOKEN, "next": "/approvals"})
        cookie = http.cookies.get("signoff_session") or ""
        web_csrf = _csrf((await http.get("/approvals")).text)
    with anyio.fail_after(10):
        await slack.wait_for("chat.postMessage", pending)
    channel = next(iter(slack.messages), ("C0APPROVALS", "1700000001.000001"))
    return Target(
        server="ev",
        stdio_server="demo" if stdio else None,
        approval_ids=tuple(ids),
        session_id=session,
        stdio_session_id=stdio_session,
        web_cookie=cookie,
        web_csrf=web_csrf,
        slack_channel=channel[0],
        slack_ts=channel[1],
    )


def _csrf(html: str) -> str:
    marker = 'name="csrf" value="'
    start = html.find(marker)
    return html[start + len(marker) : html.find('"', start + len(marker))] if start >= 0 else ""


async def check_liveness(running: Running, marker: str) -> Liveness:
    """After the fuzzing: a normal allowed call through a real MCP client, /healthz, and the audit chain."""
    problems: list[str] = []
    call_ok = healthz_ok = chain_ok = audited = False
    engine = running.app.state.signoff.database
    with Session(engine) as session:
        before = session.exec(select(func.max(col(AuditEvent.id)))).one() or 0
    try:
        with anyio.fail_after(15):
            async with running.client("ev") as client:
                result = await client.call_tool("echo", {"text": marker})
        texts = [getattr(block, "text", "") for block in result.content]
        call_ok = not result.is_error and texts == [marker]
        if not call_ok:
            problems.append(f"echo answered {result!r}"[:300])
    except Exception as exc:  # liveness reports every way the call can fail
        problems.append(f"echo failed: {type(exc).__name__}: {exc}"[:300])
    async with httpx2.AsyncClient(timeout=10) as http:
        try:
            health = await http.get(f"{running.url}/healthz")
            healthz_ok = health.status_code == 200 and health.json().get("status") == "ok"
            if not healthz_ok:
                problems.append(f"/healthz answered {health.status_code} {health.text[:200]}")
        except httpx2.HTTPError as exc:
            problems.append(f"/healthz failed: {exc!r}")
    try:
        with anyio.fail_after(10):
            await running.app.state.signoff.audit.flush()
    except Exception as exc:  # a writer that cannot flush is the finding, whatever it raised
        problems.append(f"the audit writer cannot flush: {type(exc).__name__}: {exc}"[:300])
    with Session(engine) as session:
        report = verify_chain(session)
        chain_ok = report.ok
        if not chain_ok:
            problems.append(f"audit chain broken at row {report.first_bad_id}: {report.problem}")
        rows = session.exec(select(AuditEvent).where(col(AuditEvent.id) > before)).all()
        audited = any(r.tool == "echo" and r.kind == "allowed" for r in rows)
        if not audited:
            problems.append(f"no 'allowed' audit row for the last echo call (rows after it: {len(rows)})")
    return Liveness(call_ok, healthz_ok, chain_ok, audited, "; ".join(problems))
