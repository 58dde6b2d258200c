"""What `signoff audit verify` proves: the chain's links and hashes, and that it passes through every signed checkpoint.

One walk serves the database and an export file alike: rows come in id order (oldest or newest first), checkpoints
are given up front (there are few: one per N rows). A checkpoint counts as an anchor only when its Ed25519 signature
holds under a public key given; then a row it names must be there with the hash it names (else the log was cut
short or rewritten), and rows after the newest anchor are reported as unanchored: nothing outside the database
vouches for them.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from approvals.audit import GENESIS, row_hash
from approvals.checkpoints import ARCHIVE, Checkpoint, keyring, signature_holds


@dataclass(slots=True)
class Proof:
    """The outcome of a walk: `faults` (any means the log cannot be trusted as complete) and what was shown."""

    rows: int = 0
    first_id: int | None = None
    last_id: int | None = None
    anchors: int = 0  # checkpoints whose signature holds and whose row is here with its hash
    unanchored: int = 0  # rows after the newest anchor
    start: str = ""
    faults: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    gaps: int = 0  # breaks between neighbouring rows where the rows are not meant to be contiguous

    @property
    def ok(self) -> bool:
        return not self.faults


@dataclass(frozen=True, slots=True)
class Scope:
    """What the rows are meant to be: `contiguous` (no row between two is missing: an unfiltered log or export) and
    `whole` (they reach back to the log's start, or to the checkpoint an archive left)."""

    contiguous: bool = True
    whole: bool = True


def prove(
    rows: Iterable[Mapping[str, Any]],
    checkpoints: Sequence[Checkpoint],
    keys: Sequence[Ed25519PublicKey],
    scope: Scope = Scope(),
) -> Proof:
    """Walk `rows` (id order, either way) checking each row's hash and links, and each checkpoint against them.

    Args:
        rows: mappings with an audit row's columns (`id`, `prev_hash`, `hash` and the chained ones).
        checkpoints: the checkpoints to hold the rows to (from the database, a file, or the export itself).
        keys: the public keys signatures are checked with; none: nothing can be anchored, and the proof says so.
        scope: whether the rows are contiguous and whole.
    """
    proof = Proof()
    ring = keyring(keys)
    valid: dict[int, list[Checkpoint]] = {}
    for checkpoint in _unique(checkpoints):
        holds = signature_holds(checkpoint, ring)
        if holds:
            valid.setdefault(checkpoint.row_id, []).append(checkpoint)
        elif holds is False:
            proof.faults.append(f"checkpoint of row {checkpoint.row_id} ({_when(checkpoint)}): its signature is bad")
        elif ring:
            proof.faults.append(
                f"checkpoint of row {checkpoint.row_id} ({_when(checkpoint)}) is signed by key {checkpoint.key_id},"
                " which was not given"
            )
    if checkpoints and not ring:
        proof.notes.append(f"{len(checkpoints)} checkpoint(s) not checked: no public key to check signatures with")
    seen: set[int] = set()  # only the ids checkpoints name: the walk keeps no more than a row in memory
    before_first_anchor = after_last_anchor = 0  # rows in file order, to count the unanchored either way
    previous: Mapping[str, Any] | None = None
    descending: bool | None = None
    oldest: Mapping[str, Any] | None = None
    anchored = False
    newest_id: int | None = None
    for row in rows:
        row_id = int(row["id"])
        if row_hash(str(row["prev_hash"]), row) != row["hash"]:
            proof.faults.append(f"row {row_id}: its content does not match its hash (the row was edited)")
        if previous is not None:
            before = int(previous["id"])
            if descending is None:
                descending = row_id < before
            if (row_id < before) != descending or row_id == before:
                proof.faults.append(f"row {row_id}: out of id order after row {before}")
            older, newer = (row, previous) if descending else (previous, row)
            if newer["prev_hash"] != older["hash"]:
                if scope.contiguous:
                    proof.faults.append(
                        f"row {newer['id']}: prev_hash does not match row {older['id']} (rows between were removed,"
                        " or one was edited)"
                    )
                else:
                    proof.gaps += 1
        if oldest is None or row_id < int(oldest["id"]):
            oldest = row
        newest_id = row_id if newest_id is None else max(newest_id, row_id)
        after_last_anchor += 1
        for checkpoint in valid.get(row_id, ()):
            seen.add(row_id)
            if checkpoint.hash == row["hash"]:
                proof.anchors += 1
                if not anchored:
                    anchored, before_first_anchor = True, proof.rows
                after_last_anchor = 0
            else:
                proof.faults.append(
                    f"row {row_id}: its hash is not the one the checkpoint of {_when(checkpoint)} signed"
                    " (the log was rewritten at or before this row)"
                )
        proof.rows += 1
        previous = row
    if not anchored:
        proof.unanchored = proof.rows
    else:  # newest first, the rows before the first anchor met are the newer ones
        proof.unanchored = before_first_anchor if descending else after_last_anchor
    proof.first_id = None if oldest is None else int(oldest["id"])
    proof.last_id = newest_id
    _judge_start(proof, oldest, valid, scope)
    _judge_missing(proof, valid, seen, scope)
    return proof


def _judge_start(
    proof: Proof, oldest: Mapping[str, Any] | None, valid: Mapping[int, list[Checkpoint]], scope: Scope
) -> None:
    if oldest is None:
        proof.start = "no rows"
        return
    prev = oldest["prev_hash"]
    if prev == GENESIS:
        proof.start = "from the log's first row"
        return
    # Only an archive's checkpoint joins: a periodic one of an earlier row says nothing of rows removed after it.
    joins = [c for cs in valid.values() for c in cs if c.kind == ARCHIVE and c.hash == prev and c.row_id < oldest["id"]]
    if joins:
        proof.start = f"after row {joins[0].row_id}, joined by the archive checkpoint of {_when(joins[0])}"
        return
    proof.start = f"after a row not here (hash {prev[:12]}…), which no signed checkpoint joins"
    if scope.whole:
        proof.faults.append(
            f"row {oldest['id']}: the first row follows a row that is not here and no signed checkpoint joins it"
            " (rows were removed from the start)"
        )


def _judge_missing(proof: Proof, valid: Mapping[int, list[Checkpoint]], seen: set[int], scope: Scope) -> None:
    for row_id, checkpoints in sorted(valid.items()):
        if row_id in seen:
            continue
        when = _when(checkpoints[-1])
        if proof.last_id is None or row_id > proof.last_id:
            if scope.contiguous:
                ends = "the log is empty" if proof.last_id is None else f"the log ends at row {proof.last_id}"
                proof.faults.append(
                    f"the checkpoint of {when} signed row {row_id}, but {ends} (rows were removed from the end)"
                )
        elif proof.first_id is not None and row_id < proof.first_id:
            continue  # before these rows: archived ones, checked against their archive
        elif scope.contiguous:
            proof.faults.append(f"row {row_id}, which the checkpoint of {when} signed, is missing")


def _unique(checkpoints: Iterable[Checkpoint]) -> list[Checkpoint]:
    return list(dict.fromkeys(checkpoints))


def _when(checkpoint: Checkpoint) -> str:
    return checkpoint.at.strftime("%Y-%m-%d %H:%M:%SZ")
