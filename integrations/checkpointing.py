"""Makes the audit chain's signed checkpoints while signoff serves, and sends each one out as it is made.

Every `poll` seconds one indexed count says how many rows follow the newest checkpoint; at `checkpoint_rows` of
them, or when any have waited `checkpoint_seconds`, the head is signed and stored (`approvals.checkpoints`), then
appended to `[audit] checkpoint_file` (flushed and fsynced) and published as the webhook event `audit.checkpoint`.
Those copies live where an editor of the database cannot reach, which is what lets `verify --against` see a
truncation or a rewrite. The signing key stays in this process: it is never logged.
"""

import json
import logging
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import anyio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import Engine

from approvals.checkpoints import Checkpoint, make_checkpoint
from integrations.supervision import Spawner
from integrations.webhooks import WebhookNotifier

logger = logging.getLogger(__name__)

CHECKPOINT_EVENT = "audit.checkpoint"
CLOSE_TIMEOUT = 5.0  # seconds the checkpoint at shutdown may take


def append_checkpoint(path: str, checkpoint: Checkpoint) -> None:
    """Append `checkpoint` to `path` as one JSON line, and fsync it: a copy that outlives the database's rows."""
    line = json.dumps({"checkpoint": checkpoint.as_json()}, separators=(",", ":")) + "\n"
    with Path(path).open("a", encoding="utf-8") as out:
        out.write(line)
        out.flush()
        os.fsync(out.fileno())


class Checkpointer:
    """Signs the chain head every `rows` rows or `seconds` seconds (whichever comes first) from one task."""

    def __init__(
        self,
        engine: Engine,
        key: Ed25519PrivateKey,
        *,
        rows: int,
        seconds: float,
        now: Callable[[], datetime],
        file: str | None = None,
        notifier: WebhookNotifier | None = None,
        poll: float = 1.0,
    ) -> None:
        self._engine = engine
        self._key = key
        self._rows = rows
        self._seconds = seconds
        self._now = now
        self._file = file
        self._notifier = notifier
        self._poll = min(poll, seconds)
        self.made = 0
        self.last: Checkpoint | None = None
        self.last_error: str | None = None

    def start(self, spawner: Spawner) -> None:
        spawner.start_soon(self._run, name="audit-checkpoints")

    async def _run(self) -> None:
        since = time.monotonic()
        while True:
            await anyio.sleep(self._poll)
            due = time.monotonic() - since >= self._seconds
            try:
                made = await self.checkpoint(min_rows=1 if due else self._rows)
            except Exception as exc:  # a background loop's top-level handler: the next tick tries again
                self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
                logger.exception("Making an audit checkpoint failed")
                continue
            if made is not None or due:
                since = time.monotonic()

    async def checkpoint(self, min_rows: int = 1, *, publish: bool = True) -> Checkpoint | None:
        """Sign the head now if at least `min_rows` rows are unanchored; send it out (to the webhook if `publish`)."""
        made = await anyio.to_thread.run_sync(self._make, min_rows)
        if made is None:
            return None
        self.made, self.last, self.last_error = self.made + 1, made, None
        logger.info("Audit checkpoint of row %d signed with key %s", made.row_id, made.key_id)
        if self._file is not None:
            try:
                await anyio.to_thread.run_sync(append_checkpoint, self._file, made)
            except OSError as exc:
                self.last_error = f"checkpoint_file: {exc.strerror or exc}"
                logger.error("Cannot append the audit checkpoint to %s: %s", self._file, exc.strerror or exc)
        if self._notifier is not None and publish:
            self._notifier.publish(CHECKPOINT_EVENT, made.as_json(), subject="checkpoint")
        return made

    async def close(self) -> None:
        """At shutdown, after the audit writer drained: anchor the last rows, so a clean stop leaves none unanchored.

        The webhooks have stopped by then, so this one goes to the database and the checkpoint file only.
        """
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT):
            try:
                await self.checkpoint(publish=False)
            except Exception:  # shutdown's top-level handler: the next start's first checkpoint anchors them
                logger.exception("The audit checkpoint at shutdown failed")

    def _make(self, min_rows: int) -> Checkpoint | None:
        with self._engine.begin() as connection:
            return make_checkpoint(connection, self._key, self._now(), min_rows=min_rows)

    def health(self) -> dict[str, object]:
        return {
            "made": self.made,
            "last_row": None if self.last is None else self.last.row_id,
            "last_error": self.last_error,
        }
