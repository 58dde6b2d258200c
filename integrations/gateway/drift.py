"""Noticing tool drift: pin each upstream tool's definition the first time a `tools/list` shows it, compare later.

A tool's definition is its description, input schema and annotations; its digest is the SHA-256 of their canonical
JSON. The live state is in memory, so a call costs one dict lookup and a change takes effect at once; each change
is then made durable in the background, in order, with its audit row (`approvals.pins`), so a restart remembers.
A drift, once written, and an acceptance, written at once, are told to the other replicas (`Topic.DRIFT`), which read
that server's pins again.
"""

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import anyio
from sqlalchemy.engine import Engine
from sqlmodel import Session

from approvals import pins
from approvals.audit import canonical_json
from approvals.ports import Broadcaster, Topic
from integrations.background import WriteBehind
from integrations.supervision import Spawner
from policies import Policy
from policies.drift import Drift, drift_action
from policies.model import DriftAction

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # server, tool
Job = tuple[Callable[..., object], tuple[Any, ...]]  # an approvals.pins function and its arguments after the session
MAX_ATTEMPTS = 3


def _description(definition: str | None) -> str:
    try:
        found = json.loads(definition or "{}").get("description")
    except (ValueError, AttributeError):
        return ""
    return found if isinstance(found, str) else ""


def tool_definition(tool: Mapping[str, Any]) -> tuple[str, str]:
    """The digest and canonical JSON of what a tool tells the model: description, input schema, annotations."""
    definition = canonical_json(
        {k: tool.get(k) for k in ("description", "inputSchema", "annotations")},
    )
    return hashlib.sha256(definition.encode()).hexdigest(), definition


class ToolWatch:
    """Pinned tool definitions and drifted tools, by (server, tool), kept in memory and written behind."""

    def __init__(self, engine: Engine, now: Callable[[], datetime], broadcast: Broadcaster | None = None) -> None:
        self._engine = engine
        self._now = now
        self._broadcast = broadcast
        self.pinned: dict[Key, str] = {}
        self.drifted: dict[Key, Drift] = {}
        # What each tool says it does, as its upstream last listed it (or as pinned): shown to approvers.
        self.descriptions: dict[Key, str] = {}
        self._jobs: WriteBehind[Job] = WriteBehind("tool pin writer", self._handle)

    # -- start, write behind, stop -------------------------------------------------------------------------------

    def _run_job(self, job: Job) -> None:
        fn, args = job
        with Session(self._engine, expire_on_commit=False) as session:
            fn(session, *args)

    async def load(self, versions: Mapping[str, str]) -> None:
        """Re-check every server's pins under its policy version now (a changed file is a re-check), then hold them."""

        def read(session: Session) -> list[Any]:
            now = self._now()
            for server, version in versions.items():
                pins.recheck_pins(session, server, version, now)
            return list(pins.load_pins(session))

        rows = await anyio.to_thread.run_sync(lambda: self._with_session(read))
        for pin in rows:
            key = (pin.server, pin.tool)
            self.pinned[key] = pin.digest
            self.descriptions.setdefault(key, _description(pin.drift_definition or pin.definition))
            if pin.drift_digest is not None:
                self.drifted[key] = Drift(pin.tool, pin.digest, pin.drift_digest)

    def _with_session(self, fn: Callable[[Session], Any]) -> Any:
        with Session(self._engine, expire_on_commit=False) as session:
            return fn(session)

    def _enqueue(self, fn: Callable[..., object], *args: Any) -> None:
        self._jobs.put((fn, args))

    async def _handle(self, jobs: Sequence[Job]) -> int:
        """Write one pin or drift, retried; one that keeps failing raises, and the queue sets it aside."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                await anyio.to_thread.run_sync(self._run_job, jobs[0])
            except Exception:  # not the last word: the queue logs and sets aside what fails every time
                if attempt == MAX_ATTEMPTS:
                    raise
                logger.warning("Recording a tool pin failed (attempt %d of %d)", attempt, MAX_ATTEMPTS, exc_info=True)
                await anyio.sleep(0.5)
                continue
            fn, args = jobs[0]
            if fn is pins.record_drift and self._broadcast is not None:  # the others hold to it from now on too
                self._broadcast.send(Topic.DRIFT, args[0])
            return 1
        return 1

    def health(self) -> dict[str, Any]:
        return self._jobs.health()

    async def flush(self) -> None:
        """Write every change noticed so far."""
        await self._jobs.flush()

    def start(self, task_group: Spawner) -> None:
        self._jobs.start(task_group)

    async def close(self) -> None:
        left = await self._jobs.close()
        if left:
            logger.error(
                "Stopping with %d tool pin changes unwritten; they are noticed again at the next start", len(left)
            )

    # -- the gateway's side ---------------------------------------------------------------------------------------

    def observe(self, server: str, policy: Policy, tools: Iterable[Any], version: str | None = None) -> frozenset[str]:
        """Compare a `tools/list` page with the pins; pin new tools, record drift. Returns the tools to leave out.

        A tool's policy says what drift means for it (`on_drift`): `ignore` tools are not tracked at all, and a
        drifted `hide` tool is left out of the list until the drift is re-checked. Pins and drift are recorded
        under `version`, the server's policy version (default: `policy`'s): a list an agent sees under its own
        policy must not record that policy's version, or the server's next start would take the difference for a
        policy change and accept the drift.
        """
        version = version or policy.digest
        hidden: set[str] = set()
        for tool in tools:
            name = tool.get("name") if isinstance(tool, dict) else None
            if not isinstance(name, str):
                continue
            said = tool.get("description")
            self.descriptions[(server, name)] = said if isinstance(said, str) else ""
            action = drift_action(policy, name)
            if action is DriftAction.IGNORE:
                continue
            digest, definition = tool_definition(tool)
            key = (server, name)
            pinned = self.pinned.get(key)
            if pinned is None:
                self.pinned[key] = digest
                self._enqueue(pins.record_pin, server, name, digest, definition, version, self._now())
                continue
            drift = self.drifted.get(key)
            if digest != pinned and (drift is None or drift.current != digest):
                drift = self.drifted[key] = Drift(name, pinned, digest)
                logger.warning(
                    "Tool %s on %s changed upstream (definition %s is now %s); on_drift %s",
                    name,
                    server,
                    pins.short(pinned),
                    pins.short(digest),
                    action,
                )
                now = self._now()
                self._enqueue(pins.record_drift, server, name, pinned, digest, definition, version, action, now)
            if drift is not None and action is DriftAction.HIDE:
                hidden.add(name)
        return frozenset(hidden)

    def description(self, server: str, tool: str) -> str:
        """What `tool` on `server` says it does, as its upstream listed it ("" when no list has shown it)."""
        return self.descriptions.get((server, tool), "")

    def recheck(self, server: str, policy_version: str) -> list[str]:
        """`server`'s policy changed: what each drifted tool shows now is its pin. Returns those tools."""
        accepted = self._accept_in_memory(server, None)
        self._enqueue(pins.recheck_pins, server, policy_version, self._now())
        return accepted

    async def accept(self, server: str, tool: str | None, actor: str, channel: str, policy_version: str) -> list[str]:
        """An approver accepts the drift of `tool` (or of every drifted tool of `server`). Returns the tools."""
        accepted = set(self._accept_in_memory(server, tool))

        def write(session: Session) -> list[str]:
            return pins.accept_drift(session, server, tool, actor, channel, policy_version, self._now())

        await self.flush()  # a drift still being written must land before it is accepted
        accepted |= set(await anyio.to_thread.run_sync(lambda: self._with_session(write)))
        if self._broadcast is not None:
            self._broadcast.send(Topic.DRIFT, server)
        return sorted(accepted)

    async def refresh(self, server: str | None = None) -> None:
        """Read the pins of `server` (or of all) again: another replica accepted drift, or the bus reconnected."""
        await self.flush()  # what this replica noticed lands first, or reading would undo it
        rows = await anyio.to_thread.run_sync(lambda: self._with_session(lambda s: pins.list_pins(s, server, False)))
        for pin in rows:
            key = (pin.server, pin.tool)
            self.pinned[key] = pin.digest
            self.descriptions.setdefault(key, _description(pin.drift_definition or pin.definition))
            if pin.drift_digest is None:
                self.drifted.pop(key, None)
            else:
                self.drifted[key] = Drift(pin.tool, pin.digest, pin.drift_digest)

    def _accept_in_memory(self, server: str, tool: str | None) -> list[str]:
        accepted = []
        for key in [k for k in self.drifted if k[0] == server and tool in (None, k[1])]:
            self.pinned[key] = self.drifted.pop(key).current
            accepted.append(key[1])
        return sorted(accepted)
