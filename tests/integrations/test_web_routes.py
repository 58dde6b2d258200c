"""The web page's routes over loopback: sign-in and sessions, CSRF, deciding through the forms, the audit page.

A real signoff (uvicorn, lifespan, SQLite) in front of a real MCP upstream; a real MCP client whose call is
held while the test decides; httpx2 as the browser, keeping the session cookie.
"""

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import pytest
from mcp_types import CallToolResult, TextContent
from sqlalchemy import text
from sqlmodel import Session

from integrations.errors import ConfigError
from integrations.settings import load_settings
from tests.conftest import Running
from tests.fakes.upstreams import EverythingState
from tests.webpage import SESSION_SECRET, csrf_of, guarded, pending_id, sign_in, status_of

pytestmark = pytest.mark.anyio

HOSTILE = '<script>alert("x")</script>"><img src=x onerror=alert(1)>'


def browser(running: Running) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(base_url=running.url, timeout=10)


def set_cookie(http: httpx2.AsyncClient, value: str) -> None:
    http.cookies.clear()
    http.cookies.set("signoff_session", value)


def result_text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


async def test_every_page_but_sign_in_needs_a_session(signoff: Any) -> None:
    async with guarded(signoff, EverythingState(), hold="0.2s") as running, running.client("ev") as client:
        first = await client.call_tool("delete_record", {"record_id": "r-1"})
        approval_id = first.meta["signoff/decision"]["approval_id"] if first.meta else ""
        async with browser(running) as http:
            pages = {
                path: await http.get(path)
                for path in ("/approvals", f"/approvals/{approval_id}", "/audit?tool=echo", "/audit/export.csv")
            }
            live = await http.get("/approvals/live")
            approve = await http.post(f"/approvals/{approval_id}/approve", data={"csrf": "x", "reason": "ok"})
            login = await http.get("/login")
            style = await http.get("/static/web.css")
        status = await status_of(running, approval_id)

    for path, response in pages.items():
        assert response.status_code == 303
        assert response.headers["location"] == "/login?next=" + path.replace("/", "%2F").replace("?", "%3F").replace(
            "=", "%3D"
        )
    assert live.status_code == 401
    assert approve.status_code == 403 and "not signed in" in approve.text
    assert status == "pending"  # nothing was decided
    assert login.status_code == 200 and 'name="token"' in login.text
    assert style.status_code == 200


async def test_sign_in_gives_a_signed_httponly_samesite_cookie_and_sign_out_ends_it(signoff: Any) -> None:
    async with guarded(signoff, EverythingState()) as running, browser(running) as http:
        form = await http.get("/login?next=/audit")
        wrong = await http.post("/login", data={"csrf": csrf_of(form.text), "token": "nope", "next": "/audit"})
        no_csrf = await http.post("/login", data={"token": "alice-approver-token", "next": "/audit"})
        good = await http.post(
            "/login", data={"csrf": csrf_of(form.text), "token": "alice-approver-token", "next": "/audit"}
        )
        cookie_header = good.headers["set-cookie"]
        audit = await http.get("/audit")
        csrf = csrf_of(audit.text)
        cookie = http.cookies["signoff_session"]
        set_cookie(http, cookie[:-3] + ("aaa" if not cookie.endswith("aaa") else "bbb"))
        forged_cookie = await http.get("/audit")
        set_cookie(http, cookie)
        out = await http.post("/logout", data={"csrf": csrf})
        after = await http.get("/approvals")

    assert wrong.status_code == 401 and "not an approver token" in wrong.text
    assert no_csrf.status_code == 403
    assert good.status_code == 303 and good.headers["location"] == "/audit"
    assert "httponly" in cookie_header.lower() and "samesite=lax" in cookie_header.lower()
    assert "alice-approver-token" not in cookie_header
    assert audit.status_code == 200 and "Signed in as <strong>alice</strong>" in audit.text
    assert forged_cookie.status_code == 303  # a cookie whose signature fails is no session
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert after.status_code == 303


async def test_sign_in_only_redirects_to_this_site(signoff: Any) -> None:
    async with guarded(signoff, EverythingState()) as running, browser(running) as http:
        targets = []
        hostile = ("//evil.example/x", "https://evil.example/", "/\\evil.example", "/\t/evil.example", "/\n/evil")
        for target in (*hostile, "/audit?tool=echo"):
            form = await http.get("/login")
            data = {"csrf": csrf_of(form.text), "token": "bob-approver-token", "next": target}
            targets.append((await http.post("/login", data=data)).headers["location"])
            await http.post("/logout", data={"csrf": csrf_of((await http.get("/approvals")).text)})

    assert targets == ["/approvals"] * len(hostile) + ["/audit?tool=echo"]


async def test_approving_through_the_form_runs_the_held_call_and_records_the_web_channel(signoff: Any) -> None:
    state = EverythingState()
    async with guarded(signoff, state) as running, running.client("ev") as client, browser(running) as http:
        results: list[CallToolResult] = []
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    results.append(await client.call_tool("delete_record", {"record_id": "r-17"}))

                tg.start_soon(call)
                approval_id = await pending_id(running, "delete_record")
                csrf = await sign_in(http, "alice")
                listing = await http.get("/approvals")
                live = await http.get("/approvals/live")
                detail = await http.get(f"/approvals/{approval_id}")
                assert state.deleted_records == []  # held: nothing ran yet
                decided = await http.post(f"/approvals/{approval_id}/approve", data={"csrf": csrf, "reason": "ok 42"})
        after = await http.get(f"/approvals/{approval_id}")
        rows = await running.audit()

    assert listing.status_code == 200
    assert f"/approvals/{approval_id}" in listing.text and "Deletes a customer record" in listing.text
    assert "alpha" in listing.text and "data-deadline" in listing.text and "min" in listing.text
    assert "Review and decide" in listing.text and live.status_code == 200 and approval_id in live.text
    assert "&#34;record_id&#34;: &#34;r-17&#34;" in detail.text  # pretty JSON, escaped
    assert "tools[&#34;delete_record&#34;]" in detail.text and 'action="/approvals/' in detail.text
    assert decided.status_code == 303 and decided.headers["location"] == f"/approvals/{approval_id}"
    assert not results[0].is_error and state.deleted_records == ["r-17"]
    assert "You approved this request" in after.text and "ok 42" in after.text
    approved = next(r for r in rows if r.kind == "approved")
    assert (approved.actor, approved.channel, approved.outcome) == ("alice", "web", "approve")


async def test_missing_or_forged_csrf_tokens_are_refused_and_nothing_is_decided(signoff: Any) -> None:
    state = EverythingState()
    async with guarded(signoff, state, hold="0.2s") as running, running.client("ev") as client:
        first = await client.call_tool("delete_record", {"record_id": "r-2"})
        approval_id = first.meta["signoff/decision"]["approval_id"] if first.meta else ""
        async with browser(running) as alice, browser(running) as bob:
            await sign_in(alice, "alice")
            bobs_token = await sign_in(bob, "bob")
            path = f"/approvals/{approval_id}"
            attempts = [
                await alice.post(f"{path}/approve", data={"reason": "no token"}),
                await alice.post(f"{path}/approve", data={"csrf": "forged-token", "reason": "forged"}),
                await alice.post(f"{path}/reject", data={"csrf": bobs_token, "reason": "someone else's token"}),
                await alice.post(f"{path}/approve", content=b"", headers={"content-type": "text/plain"}),
                await alice.post("/logout", data={"csrf": "forged-token"}),
            ]
            still_signed_in = await alice.get("/approvals")
        status = await status_of(running, approval_id)
        rows = await running.audit()

    assert [a.status_code for a in attempts] == [403, 403, 403, 403, 403]
    assert "Nothing was changed" in attempts[0].text
    assert still_signed_in.status_code == 200
    assert status == "pending" and state.deleted_records == []
    assert not [r for r in rows if r.kind in ("approved", "rejected", "voted", "decision_refused")]


async def test_a_rejection_needs_a_reason_and_the_agent_is_told_it(signoff: Any) -> None:
    state = EverythingState()
    async with guarded(signoff, state) as running, running.client("ev") as client, browser(running) as http:
        results: list[CallToolResult] = []
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    results.append(await client.call_tool("delete_record", {"record_id": "r-9"}))

                tg.start_soon(call)
                approval_id = await pending_id(running, "delete_record")
                csrf = await sign_in(http, "carol")
                blank = await http.post(f"/approvals/{approval_id}/reject", data={"csrf": csrf, "reason": "  "})
                long = await http.post(f"/approvals/{approval_id}/reject", data={"csrf": csrf, "reason": "x" * 2001})
                assert await status_of(running, approval_id) == "pending"
                rejected = await http.post(
                    f"/approvals/{approval_id}/reject", data={"csrf": csrf, "reason": "wrong customer"}
                )
        again = await http.post(f"/approvals/{approval_id}/approve", data={"csrf": csrf})

    assert blank.status_code == 400 and "A rejection needs a reason" in blank.text
    assert long.status_code == 400 and "too long" in long.text
    assert rejected.status_code == 303
    assert results[0].is_error and "carol rejected this call" in result_text(results[0])
    assert "wrong customer" in result_text(results[0]) and state.deleted_records == []
    assert again.status_code == 409 and "already rejected" in again.text


async def test_an_approver_the_rule_does_not_name_is_told_why_and_cannot_decide(signoff: Any) -> None:
    async with guarded(signoff, EverythingState(), hold="0.2s") as running, running.client("ev") as client:
        first = await client.call_tool("drop_table", {"name": "users"})
        approval_id = first.meta["signoff/decision"]["approval_id"] if first.meta else ""
        async with browser(running) as http:
            csrf = await sign_in(http, "carol")
            listing = await http.get("/approvals")
            detail = await http.get(f"/approvals/{approval_id}")
            forced = await http.post(f"/approvals/{approval_id}/approve", data={"csrf": csrf})
        rows = await running.audit()

    assert "Not yours to decide" in listing.text
    assert "You cannot decide this request because the rule tools[&#34;drop_table&#34;] names alice, bob" in detail.text
    assert 'action="/approvals/' not in detail.text.replace('action="/logout"', "")
    assert forced.status_code == 403 and "You may not decide this" in forced.text
    refused = [r for r in rows if r.kind == "decision_refused"]
    assert [(r.actor, r.channel) for r in refused] == [("carol", "web")]


async def test_a_quorum_shows_its_progress_and_each_approver_counts_once(signoff: Any) -> None:
    state = EverythingState()
    async with guarded(signoff, state, hold="0.2s") as running, running.client("ev") as client:
        first = await client.call_tool("drop_table", {"name": "orders"})
        approval_id = first.meta["signoff/decision"]["approval_id"] if first.meta else ""
        async with browser(running) as alice, browser(running) as bob:
            alice_csrf = await sign_in(alice, "alice")
            voted = await alice.post(f"/approvals/{approval_id}/approve", data={"csrf": alice_csrf})
            alice_view = await alice.get(f"/approvals/{approval_id}")
            listing = await bob.get("/approvals") if await sign_in(bob, "bob") else None
            bob_csrf = csrf_of((await bob.get(f"/approvals/{approval_id}")).text)
            await bob.post(f"/approvals/{approval_id}/approve", data={"csrf": bob_csrf, "reason": "checked"})
        with anyio.fail_after(10):
            result = await client.call_tool("drop_table", {"name": "orders"})
        async with browser(running) as carol:
            await sign_in(carol, "carol")
            final = await carol.get(f"/approvals/{approval_id}")

    assert voted.status_code == 303
    assert "Your approval is recorded: 1 of 2" in alice_view.text
    assert "You already approved this request" in alice_view.text and "1 of 2" in alice_view.text
    assert listing is not None and "1 of 2" in listing.text
    assert not result.is_error and state.dropped_tables == ["orders"]
    assert "executed" in final.text and "2 of 2" in final.text and "nothing left to decide" in final.text


async def test_hostile_tool_arguments_render_as_text_and_redacted_ones_stay_hidden(signoff: Any) -> None:
    async with guarded(signoff, EverythingState(), hold="0.2s") as running, running.client("ev") as client:
        hostile = await client.call_tool("delete_record", {"record_id": HOSTILE, HOSTILE: "key"})
        secret = await client.call_tool("echo", {"text": "prod password hunter2"})
        hostile_id = hostile.meta["signoff/decision"]["approval_id"] if hostile.meta else ""
        secret_id = secret.meta["signoff/decision"]["approval_id"] if secret.meta else ""
        async with browser(running) as http:
            await sign_in(http, "alice")
            pages = [
                await http.get("/approvals"),
                await http.get(f"/approvals/{hostile_id}"),
                await http.get("/audit"),
            ]
            redacted = await http.get(f"/approvals/{secret_id}")

    for page in pages:
        assert page.status_code == 200
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
    assert "&lt;script&gt;alert(" in pages[1].text and "&lt;img src=x onerror=alert(1)&gt;" in pages[1].text
    assert "hunter2" not in redacted.text and "[redacted]" in redacted.text
    assert "Hidden by the policy: <code>text</code>" in redacted.text


async def test_unknown_requests_are_404(signoff: Any) -> None:
    async with guarded(signoff, EverythingState()) as running, browser(running) as http:
        csrf = await sign_in(http, "alice")
        unknown = await http.get("/approvals/00000000-0000-0000-0000-000000000000")
        malformed = await http.get("/approvals/not-an-id")
        post = await http.post("/approvals/00000000-0000-0000-0000-000000000000/approve", data={"csrf": csrf})

    assert [unknown.status_code, malformed.status_code, post.status_code] == [404, 404, 404]
    assert "No such request" in unknown.text


async def test_the_audit_page_filters_pages_exports_and_shows_the_chain(signoff: Any) -> None:
    async with guarded(signoff, EverythingState()) as running, running.client("ev") as client:
        with anyio.fail_after(20):
            for i in range(5):
                await client.call_tool("echo", {"text": f"hello {i}"})
            for i in range(3):
                await client.call_tool("add", {"a": i, "b": 1})
            await client.call_tool("=1+2", {})  # an unknown tool whose name a spreadsheet would run as a formula
        async with running.client("ev", token="agent-token-bravo") as other:
            await other.call_tool("echo", {"text": "from bravo"})
        await running.audit()  # flush the writer
        async with browser(running) as http:
            await sign_in(http, "alice")
            by_tool = await http.get("/audit?tool=echo&kind=allowed")
            by_agent = await http.get("/audit?agent=bravo&kind=allowed")
            future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
            past = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
            none_since = await http.get(f"/audit?since={future}")
            all_since = await http.get(f"/audit?since={past}&tool=add&kind=allowed")
            none_until = await http.get(f"/audit?until={past}")
            bad = await http.get("/audit?since=yesterday")
            first = await http.get("/audit?tool=echo&kind=allowed&limit=2")
            older = await http.get("/audit?" + _link(first.text, "next"))
            newer = await http.get("/audit?" + _link(older.text, "prev"))
            exported_csv = await http.get("/audit/export.csv?tool=echo&kind=allowed")
            exported_jsonl = await http.get("/audit/export.jsonl?agent=alpha")
            formula = await http.get("/audit/export.csv?tool=%3D1%2B2")
            with Session(running.app.state.signoff.database) as session:
                session.execute(text("UPDATE audit_events SET detail = 'edited' WHERE id = 3"))
                session.commit()
            cached = await http.get("/audit")
            verified = await http.get("/audit?verify=now")

    assert _rows(by_tool.text) == 6 and "6 matching events" in by_tool.text
    assert _rows(by_agent.text) == 1 and "from bravo" not in by_agent.text  # arguments are not on the page
    assert "No audit event matches" in none_since.text and "0 matching events" in none_since.text
    assert _rows(all_since.text) == 3 and "No audit event matches" in none_until.text
    assert bad.status_code == 400 and "is not a date and time" in bad.text
    assert _rows(first.text) == 2 and _rows(older.text) == 2 and _ids(newer.text) == _ids(first.text)
    assert not set(_ids(first.text)) & set(_ids(older.text)) and _ids(first.text) > _ids(older.text)
    assert exported_csv.headers["content-disposition"].startswith('attachment; filename="signoff-audit-')
    table = list(csv.DictReader(io.StringIO(exported_csv.text)))
    assert len(table) == 6 and {row["tool"] for row in table} == {"echo"} and table[0]["hash"]
    header, *lines = [json.loads(line) for line in exported_jsonl.text.splitlines()]
    assert header["export"]["filters"] == {"agent": "alpha"} and header["export"]["contiguous"] is False
    assert lines and {line["identity"] for line in lines} == {"alpha"} and all(line["hash"] for line in lines)
    assert lines == sorted(lines, key=lambda line: -line["id"])  # newest first, like `signoff audit`
    assert next(csv.DictReader(io.StringIO(formula.text)))["tool"] == "'=1+2"
    assert "Chain intact:" in by_tool.text and "Chain intact:" in cached.text  # re-checked at most every minute
    assert "Chain BROKEN at row 3:" in verified.text


async def test_a_configured_session_secret_keeps_sign_ins_across_a_restart(signoff: Any) -> None:
    extra = f'\n[web]\nsession_secret = "{SESSION_SECRET}"\n'
    async with guarded(signoff, EverythingState(), extra=extra) as running, browser(running) as http:
        await sign_in(http, "bob")
        cookie = http.cookies["signoff_session"]
    async with guarded(signoff, EverythingState(), extra=extra) as running, browser(running) as http:
        set_cookie(http, cookie)
        again = await http.get("/approvals")
    async with guarded(signoff, EverythingState()) as running, browser(running) as http:
        set_cookie(http, cookie)
        random_secret = await http.get("/approvals")

    assert again.status_code == 200 and "Signed in as <strong>bob</strong>" in again.text
    assert random_secret.status_code == 303


def test_a_short_session_secret_is_refused(tmp_path: Any) -> None:
    config = tmp_path / "signoff.toml"
    config.write_text('[web]\nsession_secret = "short"\n')
    with pytest.raises(ConfigError):
        load_settings(config, environ={})


def _rows(html: str) -> int:
    return len(_ids(html))


def _ids(html: str) -> list[int]:
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in html else ""
    return [int(cell.split("</td>", 1)[0]) for cell in body.split("<tr>\n      <td>")[1:]]


def _link(html: str, rel: str) -> str:
    marker = f'rel="{rel}"'
    anchor = next(part for part in html.split("<a ") if marker in part.split(">", 1)[0])
    href = anchor.split('href="/audit?', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    assert parse_qs(urlsplit("?" + href).query)
    return href
