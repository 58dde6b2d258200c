"""Hot reload of policy files: watch each server's policy file, and each agent's own, and swap the policy in place
when its file changes.

A swap is one assignment (to `Served.policy`, or to an agent's entry in `Served.agent_policies`): a call in flight
keeps the policy it started with, the next call gets the new one, and rate-limit counters (kept by counter name,
outside any policy) carry on. An invalid edit is
refused (an approver that no `[[approvers]]` entry provides is a fault too): the previous policy keeps serving,
and the faults are logged and kept for `/healthz`. Files are polled (modification time, size and inode, then a
digest of the content), so no platform file-watching API is needed.
Only policy files reload; changes to signoff.toml itself need a restart.
"""

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

import anyio

from integrations.gateway.endpoint import Served
from integrations.gateway.rights import own_policy
from integrations.supervision import Spawner
from policies import Policy, PolicyInvalid, format_fault, load_policy

logger = logging.getLogger(__name__)

Stat = tuple[int, int, int]  # mtime_ns, size, inode


class Slot(NamedTuple):
    """Which policy a file holds: a server's (`agent` None), or one agent's own for that server."""

    server: str
    agent: str | None = None

    def __str__(self) -> str:
        return self.server if self.agent is None else f"{self.server} (agent {self.agent})"


class Check(StrEnum):
    """What checking one policy file found."""

    UNCHANGED = "unchanged"
    RELOADED = "reloaded"
    REFUSED = "refused"


@dataclass(slots=True)
class PolicyFile:
    """One policy file as last read, and the last refusal, if the file is still refused."""

    slot: Slot
    path: Path
    stat: Stat | None
    content: str
    loaded_at: datetime
    reloads: int = 0
    error: str | None = None
    error_at: datetime | None = None

    def health(self, policy: Policy) -> dict[str, Any]:
        return {
            "version": policy.digest,
            "source": str(self.path),
            "loaded_at": self.loaded_at.isoformat(),
            "reloads": self.reloads,
            "error": self.error,
            "error_at": self.error_at.isoformat() if self.error_at else None,
        }


@dataclass(frozen=True, slots=True)
class _Read:
    """What a worker thread found in one file: its stat, its content digest, and the policy or the faults."""

    stat: Stat | None
    content: str
    policy: Policy | None = None
    error: str | None = None


def _stat(path: Path) -> Stat | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _read(path: Path, known: PolicyFile, force: bool, approvers: frozenset[str] | None) -> _Read | None:
    """Read and load the file if it may have changed; None when it has not."""
    stat = _stat(path)
    if stat is not None and stat == known.stat and not force:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        return _Read(None, "", error=f"cannot read {path}: {exc.strerror}")
    content = hashlib.sha256(data).hexdigest()
    if content == known.content and known.error is None:
        return _Read(stat, content)
    try:
        return _Read(stat, content, policy=load_policy(data, source=str(path), approvers=approvers))
    except PolicyInvalid as exc:
        faults = "; ".join(format_fault(f, str(path)) for f in exc.faults if f.severity == "error")
        return _Read(stat, content, error=faults)


def _now() -> datetime:
    return datetime.now(UTC)


class PolicyWatcher:
    """Polls every policy file every `interval` seconds, or at once when woken (SIGHUP, the API).

    `paths` names each file by its `Slot`: a server's policy, or an agent's own for a server (whose limits then
    count in the agent's own budget, as at start).
    """

    def __init__(
        self,
        servers: Mapping[str, Served],
        paths: Mapping[Slot, Path],
        *,
        on_reload: Callable[[Slot, Policy, Policy], None],
        on_refused: Callable[[Slot, str], None],
        interval: float = 1.0,
        now: Callable[[], datetime] = _now,
        approvers: frozenset[str] | None = None,
    ) -> None:
        self._servers = servers
        self._approvers = approvers  # the configured approver names and groups a policy may name (None: any)
        self._on_reload = on_reload
        self._on_refused = on_refused
        self._interval = interval
        self._now = now
        # Nothing is known of the files yet, so the first check reads them all: an edit made between loading the
        # policies and starting to watch them is not missed.
        started = now()
        self.files = {slot: PolicyFile(slot, path, None, "", started) for slot, path in paths.items()}
        self._wake = anyio.Event()
        self._lock = anyio.Lock()

    def wake(self) -> None:
        """Check every file now (the SIGHUP handler)."""
        self._wake.set()

    def start(self, task_group: Spawner) -> None:
        task_group.start_soon(self._poll)

    async def _poll(self) -> None:
        while True:
            with anyio.move_on_after(self._interval):
                await self._wake.wait()
            force = self._wake.is_set()
            self._wake = anyio.Event()
            try:
                await self.check_all(force=force)
            except Exception:  # the poller's top-level handler: log, keep watching
                logger.exception("Checking policy files failed")

    async def check_all(self, *, force: bool = False) -> dict[Slot, Check]:
        """Check every policy file; reload those that changed and are valid. `force` reads them even if unchanged."""
        async with self._lock:
            return {slot: await self._check(slot, force) for slot in self.files}

    def policy(self, slot: Slot) -> Policy:
        """The policy in force for `slot`."""
        served = self._servers[slot.server]
        return served.policy if slot.agent is None else served.agent_policies[slot.agent]

    async def _check(self, name: Slot, force: bool) -> Check:
        known = self.files[name]
        read = await anyio.to_thread.run_sync(_read, known.path, known, force, self._approvers)
        if read is None:
            return Check.UNCHANGED
        served = self._servers[name.server]
        if read.error is not None:
            known.stat, known.content = read.stat, read.content
            if read.error != known.error:  # report each refusal once, not at every poll
                known.error, known.error_at = read.error, self._now()
                logger.error("Policy for %s not reloaded; the previous one keeps serving: %s", name, read.error)
                self._on_refused(name, read.error)
            return Check.REFUSED
        known.stat, known.content = read.stat, read.content
        known.error = known.error_at = None
        old = self.policy(name)
        if read.policy is None or read.policy.digest == old.digest:
            return Check.UNCHANGED
        if name.agent is None:
            new = served.policy = read.policy
        else:
            new = served.agent_policies[name.agent] = own_policy(read.policy, name.agent)
        known.loaded_at = self._now()
        known.reloads += 1
        logger.info("Policy for %s reloaded: version %s replaces %s", name, new.digest, old.digest)
        self._on_reload(name, old, new)
        return Check.RELOADED
