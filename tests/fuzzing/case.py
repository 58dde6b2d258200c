"""What a fuzz case is: one HTTP request as sent, built from (family, seed, index), and what it may refer to."""

import hashlib
from dataclasses import dataclass

MODERN = "2026-07-28"
HANDSHAKE = "2025-11-25"
ACCEPT = "application/json, text/event-stream"
SLACK_SECRET = "slack-signing-secret-fuzz"
APPROVER_TOKEN = "alice-approver-token"
MAX_BODY = 256 * 1024  # the stage's [gateway] max_body_bytes
BIG_BODY = 1536 * 1024  # over max_body_bytes and over Slack's 1 MiB
POLICY = {
    "version": "1",
    "default": "allow",
    "hide": ["drop_table"],
    "tools": {
        "delete_record": {
            "action": "require_approval",
            "reason": "Deletes a record",
            "approval": {"approvers": ["alice", "bob"], "timeout": "10m"},
        },
        "fail": {"action": "deny", "reason": "Not today"},
        "add": {"deny_if": [{"arg": "a", "op": "lt", "value": 0}]},
    },
}
TOOLS = ["echo", "add", "fail", "counter", "delete_record", "drop_table", "slow_count", "confirm", "nope"]


@dataclass(frozen=True)
class Case:
    """One HTTP request, exactly as sent. Header values are latin-1 text (each char one byte on the wire)."""

    family: str
    seed: int
    index: int
    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    chunked: bool = False  # sent without Content-Length, in 64 KiB chunks
    expect_413: bool = False  # an oversized body: the answer must be 413

    def replay(self, base_url: str = "http://127.0.0.1:8080", limit: int = 3000) -> str:
        """Python that sends this request again (the body is cut past `limit` bytes; regenerate it by seed/index)."""
        body = repr(self.body[:limit])
        if len(self.body) > limit:
            digest = hashlib.sha256(self.body).hexdigest()[:16]
            body += f" + ...  # {len(self.body)} bytes, sha256 {digest}; regenerate with the seed and index below"
        content = f"chunks({body})" if self.chunked else body
        return (
            f"# family={self.family} seed={self.seed} index={self.index}\n"
            f"# regenerate: tests.fuzzing.case({self.family!r}, {self.seed}, {self.index}, target)\n"
            f"httpx2.request({self.method!r}, {base_url + self.path!r},\n"
            f"    headers=[{', '.join(f'({k!r}, {v!r})' for k, v in self.headers)}],\n"
            f"    content={content})"
        )


@dataclass(frozen=True)
class Target:
    """What a case may refer to on the stage: real ids and tokens, so requests get past the first check."""

    server: str = "ev"
    stdio_server: str | None = None
    approval_ids: tuple[str, ...] = ()
    session_id: str = ""
    stdio_session_id: str = ""
    web_cookie: str = ""
    web_csrf: str = ""
    slack_channel: str = "C0APPROVALS"
    slack_ts: str = "1700000001.000001"
