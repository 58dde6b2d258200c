"""Which downstream session a message from a shared stdio child is for: the rules, with no I/O.

Over stdio a child cannot say which request a log message or a server-to-client request belongs to
(the SDK's `related_request_id` only routes on HTTP transports), so signoff attributes one to the
session whose requests are in flight. When requests of more than one session are in flight, it cannot
tell, and such a message goes to nobody: isolation wins over delivery. What belongs to no request goes
where the protocol says: log messages to the sessions whose level allows them, resource updates to the
sessions that subscribed, list-changed notifications to every session.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from anyio.streams.memory import MemoryObjectSendStream

Message = dict[str, Any]

LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
# What signoff declares to the child: it relays these to the session that caused them, if that session can.
CHILD_CAPABILITIES: Message = {"sampling": {}, "elicitation": {"form": {}, "url": {}}}
RELAYED_REQUESTS = frozenset({"sampling/createMessage", "elicitation/create"})


@dataclass(slots=True)
class Pending:
    """A request written to the child and not yet answered; `owner` None: signoff's own."""

    downstream_id: Any
    send: MemoryObjectSendStream[Message]
    owner: str | None = None  # the session id, or "request:<uid>" for a 2026-07-28 request (it has no session)
    progress_token: Any = None
    tool: str | None = None
    streams: bool = False  # its answer may be an event stream, which carries what belongs to the request
    levels: frozenset[str] = frozenset(LEVELS)  # 2026-07-28: the log levels the request opted in to


@dataclass(slots=True)
class DownstreamSession:
    """One handshake session on the shared child: who owns it, what its client can do and asked for."""

    identity: str
    capabilities: Message = field(default_factory=dict)
    level: str | None = None  # from logging/setLevel; None: every level the child sends
    subscriptions: set[str] = field(default_factory=set)
    listeners: list[MemoryObjectSendStream[Message]] = field(default_factory=list)

    def wants(self, level: Any) -> bool:
        return level_allows(self.level, level)


def params_of(message: Message) -> Message:
    """A message's params as an object (an absent or malformed one reads as empty)."""
    params = message.get("params")
    return params if isinstance(params, dict) else {}


def level_allows(threshold: str | None, level: Any) -> bool:
    """Whether a log message at `level` passes a session's `threshold` (an unknown level passes only no threshold)."""
    if threshold is None:
        return True
    if level not in LEVELS or threshold not in LEVELS:
        return False
    return LEVELS.index(level) >= LEVELS.index(threshold)


def most_verbose(levels: Iterable[str | None]) -> str | None:
    """The level the child must log at so that every session gets what it asked for."""
    known = [level for level in levels if level in LEVELS]
    return min(known, key=LEVELS.index) if known else None


def modern_levels(meta: Message, key: str) -> frozenset[str]:
    """The levels a 2026-07-28 request opted in to with its `_meta` log-level key (none without it)."""
    requested = meta.get(key)
    if requested not in LEVELS:
        return frozenset()
    return frozenset(LEVELS[LEVELS.index(requested) :])


def the_one(owners: Iterable[str | None]) -> tuple[str | None, bool]:
    """The owner of every request in flight, and whether any is: (owner, True), (None, False) idle, or (None, True)."""
    distinct = {owner for owner in owners if owner is not None}
    if len(distinct) == 1:
        return next(iter(distinct)), True
    return None, bool(distinct)


def refusal(session: DownstreamSession | None, message: Message) -> str | None:
    """Why a server-to-client request may not go to `session`'s client; None when it may."""
    if session is None:
        return "a 2026-07-28 client cannot be asked over stdio (it has no session to carry the request)"
    method = message.get("method")
    params = params_of(message)
    capabilities = session.capabilities
    if method == "sampling/createMessage":
        return None if isinstance(capabilities.get("sampling"), dict) else "the client did not declare sampling"
    elicitation = capabilities.get("elicitation")
    if not isinstance(elicitation, dict):
        return "the client did not declare elicitation"
    mode = params.get("mode", "form")
    if mode == "url" and "url" not in elicitation:
        return "the client did not declare URL elicitation"
    if mode == "form" and elicitation and "form" not in elicitation:  # {} means form (2025-06-18)
        return "the client did not declare form elicitation"
    return None
