"""Shared by the web page's route and browser tests: a guarded upstream behind signoff, and signing in."""

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2

from tests.conftest import READER, Running
from tests.fakes.upstreams import EverythingState, everything_http_app, serve_http

POLICY = {
    "version": "1",
    "default": "allow",
    "tools": {
        "delete_record": {
            "action": "require_approval",
            "reason": "Deletes a customer record",
            "approval": {"approvers": ["group:dba", "carol"], "timeout": "10m"},
        },
        "drop_table": {
            "action": "require_approval",
            "reason": "Drops a table",
            "approval": {"approvers": ["alice", "bob"], "quorum": 2, "timeout": "10m"},
        },
        "echo": {
            "approve_if": [{"arg": "text", "op": "contains", "value": "prod"}],
            "approval": {"approvers": ["alice"], "timeout": "10m"},
            "redact": ["text"],
        },
    },
}
SESSION_SECRET = "a-test-session-secret-that-is-long-enough"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@asynccontextmanager
async def guarded(signoff: Any, state: EverythingState, hold: str = "20s", extra: str = "") -> AsyncIterator[Running]:
    """signoff in front of the everything server under POLICY, with the test approvers."""
    async with serve_http(everything_http_app(state)) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": POLICY}]
        async with signoff(servers, approvers=True, gateway={"approval_hold": hold}, extra=extra) as running:
            yield running


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    if match is None:
        raise AssertionError("the page has no CSRF field")
    return match.group(1)


async def sign_in(http: httpx2.AsyncClient, name: str) -> str:
    """Sign `http` in as the approver `name`; returns the session's CSRF token."""
    form = await http.get("/login")
    response = await http.post(
        "/login", data={"csrf": csrf_of(form.text), "token": f"{name}-approver-token", "next": "/approvals"}
    )
    if response.status_code != 303:
        raise AssertionError(f"sign-in failed: {response.status_code}")
    return csrf_of((await http.get("/approvals")).text)


async def pending_id(running: Running, tool: str) -> str:
    """The id of the pending request for `tool`, once the held call has created it."""
    async with httpx2.AsyncClient(base_url=running.url, timeout=10) as http:
        while True:  # bounded by the caller's fail_after
            listing = (await http.get(f"/api/approvals?status=pending&tool={tool}", headers=READER)).json()["approvals"]
            if listing:
                return str(listing[0]["id"])
            await anyio.sleep(0.02)


async def status_of(running: Running, approval_id: str) -> str:
    async with httpx2.AsyncClient(base_url=running.url, timeout=10) as http:
        return str((await http.get(f"/api/approvals/{approval_id}", headers=READER)).json()["status"])
