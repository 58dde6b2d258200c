"""Every SQLModel table of signoff, in one place so migrations see the whole schema."""

import uuid
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class AuditKind(StrEnum):
    """What an audit row records."""

    ALLOWED = "allowed"
    DENIED = "denied"
    HIDDEN = "hidden"
    RATE_LIMITED = "rate_limited"
    APPROVAL_REQUIRED = "approval_required"
    POLICY_LOADED = "policy_loaded"
    POLICY_RELOADED = "policy_reloaded"
    POLICY_REFUSED = "policy_refused"
    TOOL_DRIFT = "tool_drift"
    DRIFT_ACCEPTED = "drift_accepted"
    GRANT_CREATED = "grant_created"
    GRANT_USED = "grant_used"
    GRANT_REVOKED = "grant_revoked"
    GRANT_EXPIRED = "grant_expired"
    SERVER_REFUSED = "server_refused"  # an agent asked for a server it may not reach; nothing went upstream
    REQUESTED = "requested"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    EXECUTED = "executed"
    FAILED = "failed"
    VOTED = "voted"
    ESCALATED = "escalated"  # an escalation came due: more approvers may decide, and were told
    REMINDED = "reminded"  # the current approvers were reminded of a request still waiting
    DECISION_REFUSED = "decision_refused"
    QUARANTINED = "audit_quarantined"  # a record the database refused, kept as ASCII JSON with why


class AuditEvent(SQLModel, table=True):
    """One append-only audit row. `hash` covers every other column and `prev_hash`, chaining the log."""

    __tablename__ = "audit_events"
    # Each index costs a page write per tool call; which are kept, and why, is in migration 0016.
    __table_args__ = (
        Index(
            "ix_audit_events_kind_notable",
            "kind",
            sqlite_where=text("kind <> 'allowed'"),
            postgresql_where=text("kind <> 'allowed'"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    kind: str = Field(max_length=32)
    server: str = Field(default="", max_length=64)
    tool: str = Field(default="", index=True, max_length=256)
    identity: str = Field(default="", index=True, max_length=128)
    actor: str = Field(default="", max_length=128)
    channel: str = Field(default="", max_length=32)
    rule: str = Field(default="", max_length=512)
    policy_version: str = Field(default="", max_length=64)
    args_digest: str = Field(default="", max_length=64)
    arguments: str | None = None
    outcome: str = Field(default="", max_length=32)
    detail: str = ""
    latency_ms: float | None = None
    prev_hash: str = Field(default="", max_length=64)
    hash: str = Field(default="", max_length=64)


class AuditCheckpoint(SQLModel, table=True):
    """A signed statement that the audit chain's head was row `row_id` with `hash` at `at` (issue 18).

    A chain proves order, not completeness: whoever can edit the database can delete its last rows, or edit a row
    and recompute every later hash. A checkpoint signed with a key the database does not hold, and sent where the
    database's editor cannot reach, pins the head; `kind` is `periodic`, or `archive` for the one that joins an
    archive to the rows kept.
    """

    __tablename__ = "audit_checkpoints"

    id: int | None = Field(default=None, primary_key=True)
    row_id: int = Field(index=True)
    hash: str = Field(max_length=64)
    at: datetime = Field(default_factory=utcnow)
    kind: str = Field(default="periodic", max_length=16)
    key_id: str = Field(max_length=64)
    signature: str = Field(max_length=128)


class ApprovalStatus(StrEnum):
    """Where an approval request is in its life. Only `pending` and `approved` ever change again."""

    PENDING = "pending"
    APPROVED = "approved"
    EXECUTING = "executing"
    EXECUTED = "executed"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class Verdict(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class ApprovalRequest(SQLModel, table=True):
    """A held tool call waiting for people: the row is the truth, the waiting coroutine only follows it."""

    __tablename__ = "approval_requests"
    # At most one pending request per exact call: a repeat joins it instead of asking people twice, and two
    # replicas racing to create it cannot both win.
    __table_args__ = (
        Index(
            "uq_approval_requests_pending_call",
            "identity",
            "server",
            "tool",
            "args_digest",
            unique=True,
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    server: str = Field(index=True, max_length=64)
    tool: str = Field(index=True, max_length=256)
    identity: str = Field(index=True, max_length=128)
    arguments: str
    args_digest: str = Field(index=True, max_length=64)
    redact: str = "[]"
    rule: str = Field(default="", max_length=512)
    policy_version: str = Field(default="", max_length=64)
    reason: str = ""
    approvers: str = "[]"
    quorum: int = 1
    allow_self_approval: bool = False
    allow_edits: bool = False  # the rule lets an approver edit the arguments (`approval.allow_edits`)
    channel: str | None = Field(default=None, max_length=128)
    status: str = Field(default=ApprovalStatus.PENDING, index=True, max_length=16)
    requested_at: datetime = Field(default_factory=utcnow, index=True)
    deadline: datetime = Field(index=True)
    responded_at: datetime | None = None
    responded_by: str | None = Field(default=None, max_length=128)
    comment: str | None = None
    finished_at: datetime | None = None
    outcome: str | None = None
    claimed_at: datetime | None = None  # when an approved call's execution was claimed
    claimed_by: str | None = Field(default=None, max_length=160)  # the process that claimed it: host:pid:boot
    messages: str = "{}"
    grant_max: float | None = None  # seconds: the longest grant an approver may give with this request; None: none
    # The rule's quorum.any_of as JSON ([{"count": 2, "approvers": ["group:dba"]}]; "[]": `quorum` of `approvers`),
    # its escalations ([{"after": 600.0, "approvers": [...], "channel": null}]) and reminder interval (seconds).
    thresholds: str = Field(default="[]", sa_column_kwargs={"server_default": "[]"})
    escalate: str = Field(default="[]", sa_column_kwargs={"server_default": "[]"})
    remind_seconds: float | None = None
    # How many of `escalate` have been announced: each is announced once, by a compare-and-set.
    escalated: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    reminded_at: datetime | None = None  # when the current approvers were last reminded
    notice_at: datetime | None = Field(default=None, index=True)  # when the next escalation or reminder is due
    # The arguments an approver edited the call to (canonical JSON, exact like `arguments`); the call runs with
    # these instead. None: approved (or pending) as requested.
    edited_arguments: str | None = None
    # The caller's groups when it asked: a reloaded policy's `caller` conditions are tested on them.
    groups: str = Field(default="[]", sa_column_kwargs={"server_default": "[]"})
    use_within: float | None = None  # seconds an approval may wait to be used (the rule's `use_within`)
    use_by: datetime | None = Field(default=None, index=True)  # set on approval: unused by then, it expires
    # The CallToolResult (JSON) of a call the agent waits for as an MCP task: stored with the outcome of its run,
    # so every later `tasks/get` (here, on another replica, after a restart) reads it and nothing runs twice.
    task_result: str | None = None
    # The tool's own description, as the upstream's `tools/list` gave it when the call came (None: none seen).
    tool_description: str | None = None
    # Until when a call is held open waiting on this request (`integrations.gateway.holding`): a decision before
    # then runs at once for an agent still waiting; after it, the agent was told "pending" and must call again.
    held_until: datetime | None = None


class ApprovalDecision(SQLModel, table=True):
    """One approver's vote on one request; a person votes once per request."""

    __tablename__ = "approval_decisions"
    __table_args__ = (UniqueConstraint("request_id", "approver"),)

    id: int | None = Field(default=None, primary_key=True)
    request_id: uuid.UUID = Field(foreign_key="approval_requests.id", index=True)
    approver: str = Field(max_length=128)
    verdict: str = Field(max_length=16)
    comment: str = ""
    channel: str = Field(default="", max_length=32)
    at: datetime = Field(default_factory=utcnow)
    # The approver's groups when they voted, as JSON: which thresholds the vote counts towards.
    groups: str = Field(default="[]", sa_column_kwargs={"server_default": "[]"})


class ToolPin(SQLModel, table=True):
    """A tool's definition as the gateway first saw it upstream, and any later change not yet re-checked.

    `digest` is the SHA-256 of the canonical JSON `definition` (description, input schema, annotations), pinned
    under `policy_version`. A different digest seen since is the drift (`drift_digest`), which holds until the
    policy changes or an approver accepts it.
    """

    __tablename__ = "tool_pins"

    server: str = Field(primary_key=True, max_length=64)
    tool: str = Field(primary_key=True, max_length=256)
    digest: str = Field(max_length=64)
    definition: str
    policy_version: str = Field(default="", max_length=64)
    pinned_at: datetime = Field(default_factory=utcnow)
    drift_digest: str | None = Field(default=None, max_length=64)
    drift_definition: str | None = None
    drifted_at: datetime | None = None


class GrantStatus(StrEnum):
    """A grant is active until it expires or is revoked; neither comes back."""

    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


class Grant(SQLModel, table=True):
    """A time-boxed grant: calls by `identity` to `tool` on `server` that would need approval run until `expires_at`."""

    __tablename__ = "grants"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    server: str = Field(index=True, max_length=64)
    tool: str = Field(index=True, max_length=256)
    identity: str = Field(index=True, max_length=128)
    request_id: uuid.UUID = Field(foreign_key="approval_requests.id", index=True)
    rule: str = Field(default="", max_length=512)
    policy_version: str = Field(default="", max_length=64)
    granted_by: str = Field(max_length=128)
    comment: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime = Field(index=True)
    status: str = Field(default=GrantStatus.ACTIVE, index=True, max_length=16)
    ended_at: datetime | None = None
    ended_by: str | None = Field(default=None, max_length=128)
    end_reason: str | None = None


class WebSession(SQLModel, table=True):
    """A sign-in to the web page: the server's record of it, so that signing out ends it on every replica.

    The cookie carries a random session id; the row keeps only that id's SHA-256 (`id`), so reading the database
    does not let anyone present a session. A session counts while `ended_at` is null and it is younger than the
    web page's session lifetime; rows older than that are deleted at later sign-ins.
    """

    __tablename__ = "web_sessions"

    id: str = Field(primary_key=True, max_length=64)
    approver: str = Field(max_length=128)
    method: str = Field(max_length=32)
    signed_in_at: datetime
    ended_at: datetime | None = None
    end_reason: str | None = Field(default=None, max_length=32)


class McpSession(SQLModel, table=True):
    """An MCP session and the agent it belongs to, so that no other agent can use its id, on any replica, after
    any restart.

    `id` is the SHA-256 of the `Mcp-Session-Id` the upstream gave (reading the table gives no session away). A row
    is written when the session is opened (`initialize`), deleted when the agent ends it (DELETE), and pruned once
    older than the gateway's session lifetime.
    """

    __tablename__ = "mcp_sessions"

    id: str = Field(primary_key=True, max_length=64)
    agent: str = Field(max_length=128)
    server: str = Field(max_length=64)
    created_at: datetime = Field(index=True)


class RateHit(SQLModel, table=True):
    """One call a rate limit admitted, kept until its window has passed: the database's sliding log of limits,
    shared by every replica when no Redis is configured (`integrations.ratelogs`).

    `key` is the limit's counter key (budget, scope, counter, window), `at` the call's time and `expires` the
    moment it leaves the window (`at + window`), both in seconds since the epoch.
    """

    __tablename__ = "rate_hits"
    __table_args__ = (Index("ix_rate_hits_key_at", "key", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=512)
    at: float
    expires: float = Field(index=True)


class SlackReplay(SQLModel, table=True):
    """A signed Slack request already handled, by its signature, so the same request is a replay on every replica
    (the database's replay cache when no Redis is configured). Pruned once older than twice Slack's 5-minute window.
    """

    __tablename__ = "slack_replays"

    signature: str = Field(primary_key=True, max_length=80)
    seen_at: float = Field(index=True)  # seconds since the epoch


class SignInFailure(SQLModel, table=True):
    """A failed sign-in on the web page (or one being checked), by client address: every replica counts them all
    (`integrations.web.failures`). Pruned once older than the throttle's window."""

    __tablename__ = "sign_in_failures"

    id: str = Field(primary_key=True, max_length=32)
    client: str = Field(index=True, max_length=64)
    at: float = Field(index=True)


class SignInKnown(SQLModel, table=True):
    """A client address that signed in successfully, and when: exempt from the page-wide pause for a while."""

    __tablename__ = "sign_in_known"

    client: str = Field(primary_key=True, max_length=64)
    at: float = Field(index=True)


class AuditExportCursor(SQLModel, table=True):
    """How far an audit export (`[telemetry] audit_to`) has sent the log: the rows after `last_id` go next.

    One row per export; a replica that sends a batch holds this row's lock while it does, so two replicas never
    send the same rows, and a restart goes on where the last commit left off."""

    __tablename__ = "audit_export_cursors"

    name: str = Field(primary_key=True, max_length=64)
    last_id: int = 0
