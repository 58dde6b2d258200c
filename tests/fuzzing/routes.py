"""Cases for the other routes: /api, /slack/events (signed and not), the web forms, and oversized bodies."""

import hashlib
import hmac
import json
import random
import time
import uuid
from typing import Any
from urllib.parse import urlencode

from tests.fuzzing.case import (
    APPROVER_TOKEN,
    BIG_BODY,
    SLACK_SECRET,
    Target,
)
from tests.fuzzing.mcp import (
    mcp_headers,
)
from tests.fuzzing.values import (
    api_headers,
    encode,
    header_text,
    pct,
    value,
    weird_string,
)


def approval_id(rng: random.Random, target: Target) -> str:
    return rng.choice(
        [
            *(target.approval_ids or ("00000000-0000-0000-0000-000000000000",)),
            str(uuid.UUID(int=rng.getrandbits(128))),
            "not-a-uuid",
            "00000000-0000-0000-0000-000000000000",
            "%00",
            pct(weird_string(rng)[:200]),
            "1" * 5000,
        ]
    )


def gen_api(rng: random.Random, target: Target) -> dict[str, Any]:
    """/api: approve, reject, list, get, grants, drift, audit, reload with bad ids, bad bodies, bad tokens."""
    headers = api_headers(rng)
    which = rng.randrange(8)
    rid = approval_id(rng, target)
    if which == 0:
        query = {k: header_text(weird_string(rng))[:100] for k in rng.sample(["status", "server", "tool", "limit"], 2)}
        return {"method": "GET", "path": "/api/approvals?" + urlencode(query), "headers": headers, "body": b""}
    if which == 1:
        return {"method": "GET", "path": f"/api/approvals/{rid}", "headers": headers, "body": b""}
    if which == 2:
        query = {k: header_text(weird_string(rng))[:100] for k in rng.sample(["tool", "server", "kind", "limit"], 2)}
        path = rng.choice(["/api/audit", "/api/grants", "/api/drift"]) + "?" + urlencode(query)
        return {"method": "GET", "path": path, "headers": headers, "body": b""}
    if which == 3:
        path = rng.choice(
            [
                f"/api/grants/{rid}/revoke",
                f"/api/drift/{target.server}/accept",
                f"/api/drift/{target.server}/{pct(weird_string(rng)[:60])}/accept",
                f"/api/drift/{pct(weird_string(rng)[:60])}/accept",
                "/api/policies/reload",
            ]
        )
        return {"method": "POST", "path": path, "headers": headers, "body": encode(rng, value(rng))}
    fields = {
        rng.choice(["reason", "comment", "grant", "arguments", "note", weird_string(rng)]): value(rng)
        for _ in range(rng.randrange(0, 4))
    }
    if rng.random() < 0.3:
        fields["grant"] = rng.choice(["15m", "1h", "0s", "-1m", "1e9s", 1e308, -1, "", "forever", weird_string(rng)])
    body: Any = fields if rng.random() < 0.8 else value(rng)
    raw = encode(rng, body) if rng.random() < 0.9 else rng.choice([b"{", b"\xff\xfe", b"reason=ok", b'{"reason":NaN}'])
    verb = rng.choice(["approve", "reject"])
    method = rng.choice(["POST"] * 8 + ["GET", "PUT"])
    return {"method": method, "path": f"/api/approvals/{rid}/{verb}", "headers": headers, "body": raw}


# -- /slack/events ------------------------------------------------------------------------------------------


def sign(secret: str, stamp: str, body: bytes) -> str:
    """Slack's v0 signature (what slack_sdk's SignatureVerifier computes, but over bytes that need not be UTF-8)."""
    digest = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return f"v0={digest}"


def slack_signed(body: bytes, rng: random.Random, *, honest: bool) -> dict[str, str]:
    stamp = str(int(time.time()))
    signature = sign(SLACK_SECRET, stamp, body)
    headers = {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature}
    if honest:
        return headers
    which = rng.randrange(6)
    if which == 0:
        return {}
    if which == 1:
        headers["X-Slack-Signature"] = "v0=" + "0" * 64
    elif which == 2:
        headers["X-Slack-Request-Timestamp"] = str(int(time.time()) - 3600)
    elif which == 3:
        headers["X-Slack-Request-Timestamp"] = header_text(rng.choice(["", "abc", "-1", "1e10", "9" * 40, "🔥"]))
    elif which == 4:
        headers["X-Slack-Signature"] = header_text(rng.choice(["", "v0=", "v1=abc", signature.upper(), "🔥"]))
    else:
        headers["X-Slack-Signature"] = sign("another-secret", stamp, body)
    return headers


def slack_payload(rng: random.Random, target: Target) -> dict[str, Any]:
    rid = rng.choice([*target.approval_ids, approval_id(rng, target)]) if target.approval_ids else "x"
    user = {"id": rng.choice(["U0ALICE", "U0BOB", "U0NOBODY"]), "username": "alice", "team_id": "T0SIGNOFF"}
    kind = rng.choice(["block_actions"] * 4 + ["view_submission", "shortcut", "message_action", "view_closed", "x"])
    if kind == "view_submission":
        return {
            "type": "view_submission",
            "team": {"id": "T0SIGNOFF", "domain": "acme"},
            "user": user,
            "api_app_id": "A0SIGNOFF",
            "trigger_id": "1.2.x",
            "view": {
                "id": "V0MODAL",
                "type": "modal",
                "callback_id": rng.choice(["signoff_reject", "signoff_approve_note", "x"]),
                "private_metadata": rng.choice([rid, json.dumps({"id": rid}), ""]),
                "blocks": [],
                "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": "no"}}}},
            },
        }
    action = {
        "action_id": rng.choice(["signoff_approve", "signoff_approve_note", "signoff_reject", "signoff_open", "x"]),
        "block_id": "signoff_actions",
        "text": {"type": "plain_text", "text": "Approve"},
        "value": rid,
        "type": "button",
        "action_ts": "1700000000.000001",
    }
    return {
        "type": kind,
        "user": user,
        "api_app_id": "A0SIGNOFF",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": target.slack_ts, "channel_id": target.slack_channel},
        "trigger_id": "13345224609.738474920.x",
        "team": {"id": "T0SIGNOFF", "domain": "acme"},
        "channel": {"id": target.slack_channel, "name": "approvals"},
        "message": {"type": "message", "ts": target.slack_ts, "text": "x", "blocks": []},
        "state": {"values": {}},
        "response_url": "https://hooks.slack.invalid/actions/T0SIGNOFF/1/x",
        "actions": [action],
    }


def mutate(rng: random.Random, doc: Any) -> Any:
    """Replace, delete or retype one value somewhere inside `doc` (in place; returns the new root)."""
    if not isinstance(doc, dict | list) or not doc or rng.random() < 0.1:
        return value(rng)
    keys: list[Any] = list(doc) if isinstance(doc, dict) else list(range(len(doc)))
    k = rng.choice(keys)
    child = doc[k]
    roll = rng.random()
    if isinstance(child, dict | list) and child and roll < 0.5:
        doc[k] = mutate(rng, child)
    elif roll < 0.65 and isinstance(doc, dict):
        del doc[k]
    elif roll < 0.8:
        doc[k] = weird_string(rng)
    else:
        doc[k] = value(rng)
    return doc


def gen_slack(rng: random.Random, target: Target) -> dict[str, Any]:
    """/slack/events: mutated interaction payloads and Events API bodies, signed correctly or not at all."""
    honest = rng.random() < 0.75
    roll = rng.random()
    if roll < 0.7:
        payload: Any = slack_payload(rng, target)
        for _ in range(rng.randrange(0, 4)):
            payload = mutate(rng, payload)
        text = json.dumps(payload, ensure_ascii=rng.random() < 0.7)
        body = urlencode({"payload": text}, encoding="utf-8", errors="surrogatepass").encode()
        content_type = "application/x-www-form-urlencoded"
    elif roll < 0.85:
        event: Any = rng.choice(
            [
                {"type": "url_verification", "challenge": value(rng), "token": "x"},
                {"type": "event_callback", "team_id": "T0SIGNOFF", "event": value(rng)},
                {"type": "app_rate_limited"},
                value(rng),
            ]
        )
        body = encode(rng, event)
        content_type = "application/json"
    else:
        body = rng.choice(
            [
                b"payload=%7B",
                b"payload=",
                b"payload=%ff%fe",
                b"payload=null&payload=1",
                b"command=/signoff&text=%00",
                bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 100))),
                b"",
            ]
        )
        content_type = rng.choice(["application/x-www-form-urlencoded", "application/json", "text/plain", ""])
    headers = {"Content-Type": content_type, **slack_signed(body, rng, honest=honest)}
    return {"method": "POST", "path": "/slack/events", "headers": headers, "body": body}


# -- the web page ------------------------------------------------------------------------------------------


def gen_web(rng: random.Random, target: Target) -> dict[str, Any]:
    """/login and the approve/reject forms, with and without a session and a CSRF token."""
    cookie = rng.choice([target.web_cookie] * 3 + ["", target.web_cookie[:-3] + "AAA", header_text(weird_string(rng))])
    headers = {"Content-Type": rng.choice(["application/x-www-form-urlencoded"] * 4 + ["multipart/form-data", ""])}
    if cookie:
        headers["Cookie"] = f"signoff_session={cookie}"
    if rng.random() < 0.2:
        headers["Origin"] = rng.choice(["http://evil.example", "null", "http://127.0.0.1"])
    csrf = rng.choice([target.web_csrf] * 3 + ["", "x", header_text(weird_string(rng))])
    fields: dict[str, Any] = {}
    if csrf or rng.random() < 0.5:
        fields["csrf"] = csrf
    which = rng.randrange(5)
    if which == 0:
        fields["token"] = rng.choice([APPROVER_TOKEN, "nope", weird_string(rng)])
        fields["next"] = rng.choice(["/approvals", "//evil.example", weird_string(rng)])
        path = "/login"
    elif which == 1:
        query = urlencode({"next": header_text(weird_string(rng))[:200]})
        return {"method": "GET", "path": f"/login?{query}", "headers": headers, "body": b""}
    elif which == 2:
        query = urlencode({k: header_text(weird_string(rng))[:100] for k in ("tool", "server", "status")})
        path = rng.choice([f"/approvals/{approval_id(rng, target)}", "/audit", "/approvals"]) + "?" + query
        if rng.random() < 0.5:  # the audit page's filters and cursors, with numbers of every shape
            keys = ["before", "after", "limit", "since", "until", "kind", "outcome", "agent", "verify"]
            numbers = ["9" * rng.randrange(1, 40), "1" * 5000, "-1", "0", "\u00b2", "1e9", "0x10", " 7"]
            pairs = {k: rng.choice([*numbers, weird_string(rng)]) for k in rng.sample(keys, rng.randrange(1, 4))}
            path = "/audit?" + urlencode({k: header_text(v)[:6000] for k, v in pairs.items()})
        return {"method": "GET", "path": path, "headers": headers, "body": b""}
    else:
        path = f"/approvals/{approval_id(rng, target)}/{rng.choice(['approve', 'reject'])}"
        fields["reason"] = rng.choice(["ok", "", weird_string(rng)])
        if rng.random() < 0.3:
            fields[weird_string(rng)] = weird_string(rng)
    form = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in fields.items()]
    body = urlencode(form, encoding="utf-8", errors="surrogatepass").encode()
    if rng.random() < 0.1:
        body = rng.choice([b"csrf=%ff%fe&reason=%00", b"\xff\xfe", b"=&=&&&", b"reason=" + b"x" * 100_000])
    return {"method": "POST", "path": path, "headers": headers, "body": body}


# -- oversized bodies ---------------------------------------------------------------------------------------


def _oversized(rng: random.Random, target: Target, paths: list[str]) -> dict[str, Any]:
    path = rng.choice(paths)
    if path.startswith("/mcp/"):
        headers = mcp_headers(rng, target, "tools/call", "echo")
        text = "x" * BIG_BODY
        body = json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": text}}}
        ).encode()
    elif path == "/slack/events":
        payload = json.dumps({**slack_payload(rng, target), "padding": "x" * BIG_BODY})
        body = urlencode({"payload": payload}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", **slack_signed(body, rng, honest=True)}
    elif path.startswith("/api"):
        body = b'{"reason":"' + b"x" * BIG_BODY + b'"}'
        headers = {"Authorization": f"Bearer {APPROVER_TOKEN}", "Content-Type": "application/json"}
    else:
        fields = {"csrf": target.web_csrf, "token": APPROVER_TOKEN, "reason": "x" * BIG_BODY}
        body = urlencode(fields).encode()
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"signoff_session={target.web_cookie}",
        }
    return {
        "method": "POST",
        "path": path,
        "headers": headers,
        "body": body,
        "chunked": rng.random() < 0.6,
        "expect_413": True,
    }


def gen_oversized_limited(rng: random.Random, target: Target) -> dict[str, Any]:
    """Bodies over the limit on the routes that have one (/mcp, /slack/events), declared or chunked."""
    return _oversized(rng, target, [f"/mcp/{target.server}", "/slack/events"])


def gen_oversized_other(rng: random.Random, target: Target) -> dict[str, Any]:
    """Bodies over 1.5 MiB, declared or chunked, on /api and the web forms."""
    rid = target.approval_ids[0] if target.approval_ids else "x"
    return _oversized(rng, target, [f"/api/approvals/{rid}/approve", "/login", f"/approvals/{rid}/reject"])
