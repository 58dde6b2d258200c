"""The active grants, in memory, for the gateway's one dict lookup per call that needs approval.

The database is the truth: the book is loaded from it at start, changed with every grant created or revoked
here, and reloaded now and then so grants given or revoked by another replica take effect. Expiry is checked at
use: a grant past its time lets nothing through, whatever the book last heard.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from approvals.models import Grant
from approvals.service import as_utc

Key = tuple[str, str, str]  # server, tool, agent identity


@dataclass(frozen=True, slots=True)
class ActiveGrant:
    """What a call needs to know about a grant: its id, who gave it, and when it ends."""

    id: UUID
    granted_by: str
    expires_at: datetime

    @classmethod
    def of(cls, grant: Grant) -> "ActiveGrant":
        return cls(grant.id, grant.granted_by, as_utc(grant.expires_at))


class GrantBook:
    """Active grants by (server, tool, identity); `version` changes with every local change."""

    def __init__(self) -> None:
        self._grants: dict[Key, dict[UUID, ActiveGrant]] = {}
        self.version = 0

    def __len__(self) -> int:
        return sum(len(g) for g in self._grants.values())

    def add(self, grant: Grant) -> None:
        self._grants.setdefault((grant.server, grant.tool, grant.identity), {})[grant.id] = ActiveGrant.of(grant)
        self.version += 1

    def remove(self, grant_id: UUID) -> None:
        for key, held in list(self._grants.items()):
            if held.pop(grant_id, None) is not None and not held:
                del self._grants[key]
        self.version += 1

    def replace(self, grants: Iterable[Grant]) -> None:
        """Hold exactly `grants` (a fresh read of the active ones)."""
        fresh: dict[Key, dict[UUID, ActiveGrant]] = {}
        for grant in grants:
            fresh.setdefault((grant.server, grant.tool, grant.identity), {})[grant.id] = ActiveGrant.of(grant)
        self._grants = fresh
        self.version += 1

    def find(self, key: Key, now: datetime) -> tuple[ActiveGrant | None, list[UUID]]:
        """The grant that lets `key`'s call through now (the one that lasts longest), and those found past their time.

        Grants past their time are dropped from the book; the caller records their expiry.
        """
        held = self._grants.get(key)
        if not held:
            return None, []
        expired = [g.id for g in held.values() if g.expires_at <= now]
        for grant_id in expired:
            del held[grant_id]
        if not held:
            del self._grants[key]
            return None, expired
        return max(held.values(), key=lambda g: g.expires_at), expired
