"""Bearer tokens to identities, compared in constant time and never kept in clear."""

import hashlib
import hmac
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class TokenBook(Generic[T]):
    """Maps bearer tokens to whoever holds them (an agent's name, an approver)."""

    def __init__(self, entries: Iterable[tuple[str, T]]) -> None:
        # Only SHA-256 digests are kept; each lookup compares every digest with compare_digest, so neither
        # timing nor a dict probe tells a caller how much of a guessed token was right.
        self._entries = [(hashlib.sha256(token.encode()).digest(), holder) for token, holder in entries]

    def lookup(self, authorization: str) -> T | None:
        """The holder of the token in an `Authorization: Bearer ...` header value, or None."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        digest = hashlib.sha256(token.strip().encode()).digest()
        found: T | None = None
        for known, holder in self._entries:
            if hmac.compare_digest(known, digest):
                found = holder
        return found
