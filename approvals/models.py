"""Every SQLModel table of signoff, in one place so migrations see the whole schema."""

from datetime import UTC, datetime
from enum import StrEnum

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


class AuditEvent(SQLModel, table=True):
    """One append-only audit row. `hash` covers every other column and `prev_hash`, chaining the log."""

    __tablename__ = "audit_events"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    kind: str = Field(index=True, max_length=32)
    server: str = Field(default="", index=True, max_length=64)
    tool: str = Field(default="", index=True, max_length=256)
    identity: str = Field(default="", index=True, max_length=128)
    actor: str = Field(default="", max_length=128)
    channel: str = Field(default="", max_length=32)
    rule: str = Field(default="", max_length=512)
    policy_version: str = Field(default="", max_length=64)
    args_digest: str = Field(default="", max_length=64)
    arguments: str | None = None
    outcome: str = Field(default="", index=True, max_length=32)
    detail: str = ""
    latency_ms: float | None = None
    prev_hash: str = Field(default="", max_length=64)
    hash: str = Field(default="", max_length=64, unique=True)
