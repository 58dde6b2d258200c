"""Signed checkpoints of the audit chain: Ed25519 signatures over the chain's head, made every N rows or T seconds.

The chain alone proves order, not completeness (a database editor can cut its tail or recompute it from an edited
row). A checkpoint signs `(row_id, hash, at, kind)` with a key the database does not hold, so no editor can make a
new one; copies sent elsewhere (a file, a webhook) then pin the head where the editor cannot reach. Signatures come
from the `cryptography` package; nothing here is hand-written crypto. The caller's session or connection is used;
this module opens none.
"""

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, func, insert, select
from sqlmodel import col

from approvals.audit import lock_chain
from approvals.errors import BadKey
from approvals.models import AuditCheckpoint, AuditEvent

PERIODIC, ARCHIVE = "periodic", "archive"
_VERSION = "signoff-audit-checkpoint/1"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed chain head, as stored, exported and sent out (`as_json` is its wire form)."""

    row_id: int
    hash: str
    at: datetime
    kind: str
    key_id: str
    signature: str

    def message(self) -> bytes:
        return signed_message(self.row_id, self.hash, self.at, self.kind, self.key_id)

    def as_json(self) -> dict[str, Any]:
        fields = asdict(self)
        fields["at"] = _iso(self.at)
        return fields

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Checkpoint":
        """A checkpoint from its wire form; ValueError naming what is missing or malformed."""
        try:
            at = datetime.fromisoformat(str(data["at"]))
            return cls(
                row_id=int(data["row_id"]),
                hash=str(data["hash"]),
                at=at if at.tzinfo else at.replace(tzinfo=UTC),
                kind=str(data["kind"]),
                key_id=str(data["key_id"]),
                signature=str(data["signature"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a checkpoint ({type(exc).__name__}: {exc})") from exc

    @classmethod
    def from_row(cls, row: AuditCheckpoint | Any) -> "Checkpoint":
        at: datetime = row.at
        return cls(
            row.row_id, row.hash, at if at.tzinfo else at.replace(tzinfo=UTC), row.kind, row.key_id, row.signature
        )


def _iso(at: datetime) -> str:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def signed_message(row_id: int, hash_: str, at: datetime, kind: str, key_id: str) -> bytes:
    """The exact bytes a checkpoint's signature covers: canonical JSON with a version tag."""
    content = {"v": _VERSION, "row_id": row_id, "hash": hash_, "at": _iso(at), "kind": kind, "key_id": key_id}
    return json.dumps(content, sort_keys=True, separators=(",", ":")).encode()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_text(key: Ed25519PublicKey) -> str:
    """A public key as `signoff audit key` prints it: base64 of its 32 raw bytes."""
    return base64.b64encode(_raw_public(key)).decode()


def key_id(key: Ed25519PublicKey) -> str:
    """A short name for a public key: the first 16 hex digits of the SHA-256 of its raw bytes."""
    return hashlib.sha256(_raw_public(key)).hexdigest()[:16]


def private_key_text(key: Ed25519PrivateKey) -> str:
    """A signing key as `signoff audit key --generate` writes it: PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def read_private_key(text: str) -> Ed25519PrivateKey:
    """A signing key from PKCS#8 PEM, or from base64 of its 32 raw bytes (one line, for an environment variable).

    Raises:
        BadKey: the text is neither, or is a key of another type.
    """
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise BadKey("the signing key is PEM but not an unencrypted private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise BadKey("the signing key is not an Ed25519 key")
        return key
    return Ed25519PrivateKey.from_private_bytes(_raw32(text, "signing key"))


def read_public_key(text: str) -> Ed25519PublicKey:
    """A public key from base64 of its 32 raw bytes (as `signoff audit key` prints it) or PEM.

    Raises:
        BadKey: the text is neither.
    """
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode())
        except ValueError as exc:
            raise BadKey("the public key is PEM but not a public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise BadKey("the public key is not an Ed25519 key")
        return key
    return Ed25519PublicKey.from_public_bytes(_raw32(text, "public key"))


def _raw32(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadKey(f"the {what} is neither PEM nor base64") from exc
    if len(raw) != 32:
        raise BadKey(f"the {what} is {len(raw)} bytes; an Ed25519 key is 32")
    return raw


def sign(key: Ed25519PrivateKey, row_id: int, hash_: str, at: datetime, kind: str) -> Checkpoint:
    """A checkpoint of `(row_id, hash_)` at `at`, signed with `key`."""
    kid = key_id(key.public_key())
    signature = key.sign(signed_message(row_id, hash_, at, kind, kid))
    return Checkpoint(row_id, hash_, at.astimezone(UTC), kind, kid, base64.b64encode(signature).decode())


def signature_holds(checkpoint: Checkpoint, keys: Mapping[str, Ed25519PublicKey]) -> bool | None:
    """Whether `checkpoint`'s signature is good under the key it names; None when that key is not in `keys`."""
    key = keys.get(checkpoint.key_id)
    if key is None:
        return None
    try:
        key.verify(base64.b64decode(checkpoint.signature, validate=True), checkpoint.message())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def keyring(keys: Iterable[Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    """Public keys by their key id, as `signature_holds` looks them up."""
    return {key_id(k): k for k in keys}


def store(connection: Connection, checkpoint: Checkpoint) -> None:
    """Insert `checkpoint` in the caller's transaction (the caller commits)."""
    values = asdict(checkpoint)
    connection.execute(insert(AuditCheckpoint.__table__), [values])  # type: ignore[attr-defined]


def make_checkpoint(
    connection: Connection, key: Ed25519PrivateKey, now: datetime, *, min_rows: int = 1
) -> Checkpoint | None:
    """Sign the chain's head and store the checkpoint, when at least `min_rows` rows came after the last one.

    Runs under the chain's lock, so the head cannot move while it is signed and two replicas do not both sign it.
    The caller commits.

    Returns:
        The checkpoint made, or None when fewer than `min_rows` rows are unanchored (or the log is empty).
    """
    lock_chain(connection)
    if unanchored_rows(connection, max(min_rows, 1)) < max(min_rows, 1):
        return None
    head = connection.execute(
        select(col(AuditEvent.id), col(AuditEvent.hash)).order_by(col(AuditEvent.id).desc()).limit(1)
    ).one()
    checkpoint = sign(key, int(head[0] or 0), head[1], now, PERIODIC)
    store(connection, checkpoint)
    return checkpoint


def unanchored_rows(connection: Connection, at_most: int | None = None) -> int:
    """How many rows came after the newest checkpoint (all of them when there is none), counting `at_most` of them:
    the checkpointer asks every second, and need not count past the number that makes a checkpoint due."""
    last = connection.execute(select(func.max(col(AuditCheckpoint.row_id)))).scalar()
    rows = select(col(AuditEvent.id))
    if last is not None:
        rows = rows.where(col(AuditEvent.id) > last)
    if at_most is not None:
        rows = rows.limit(at_most)
    return int(connection.execute(select(func.count()).select_from(rows.subquery())).scalar_one())
