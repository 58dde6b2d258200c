"""Which downstream session a message from a shared stdio child is for: the rules and the state they read, no I/O.

Over stdio a child cannot say which request a log message or a server-to-client request belongs to
(the SDK's `related_request_id` only routes on HTTP transports), so signoff attributes one to the
session whose requests are in flight. When requests of more than one session are in flight, it cannot
tell, and such a message goes to nobody: isolation wins over delivery. What belongs to no request goes
where the protocol says: log messages to the sessions whose level allows them, resource updates to the
sessions that subscribed, list-changed notifications to every session. A 2026-07-28 child names the
`subscriptions/listen` request each of its stream's messages is for: those go to that request alone. For a
handshake-era child signoff serves `subscriptions/listen` itself: a `Listener` takes the list-changed kinds and
the resources it asked for (and the child can send), tagged with its request's id.
"""

import contextlib
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream
from mcp.shared.subscriptions import SUBSCRIPTION_ID_META_KEY

from integrations.gateway.wire import Message, rpc_error

logger = logging.getLogger(__name__)


LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
# What signoff declares to the child: it relays these to the session that caused them, if that session can.
CHILD_CAPABILITIES: Message = {"sampling": {}, "elicitation": {"form": {}, "url": {}}}
RELAYED_REQUESTS = frozenset({"sampling/createMessage", "elicitation/create"})
# subscriptions/listen filter keys, by the notification they take, and the child capability each needs
LISTEN_KINDS = {
    "notifications/tools/list_changed": "toolsListChanged",
    "notifications/prompts/list_changed": "promptsListChanged",
    "notifications/resources/list_changed": "resourcesListChanged",
}
MAX_LISTEN_URIS = 100  # resources one listen stream may watch: each costs the child a resources/subscribe


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
    tagged: bool = False  # a `subscriptions/listen` stream: what is for it names it, so it is no request in flight
    capabilities: Message | None = None  # a 2026-07-28 request for a handshake-era child: what its client declared
    identity: str | None = None  # the agent that sent it (a 2026-07-28 request's round is that agent's alone)
    round: str | None = None  # the requestState of the question its client was asked and has not answered yet


@dataclass(slots=True, frozen=True)
class Round:
    """A question a handshake-era child asked during a 2026-07-28 request, sent to its client as input_required."""

    uid: int  # the child's request that asked (signoff's id for it upstream)
    asked: str | int  # the child's id for its question
    identity: str | None


@dataclass(slots=True, eq=False)
class Listener:
    """A 2026-07-28 `subscriptions/listen` stream signoff serves for a handshake-era child."""

    subscription: Any  # the client's id for its listen request: every message on the stream names it
    send: MemoryObjectSendStream[Message]
    honoured: Message  # the filter it was acknowledged with

    def takes(self, method: str, uri: Any) -> bool:
        if method == "notifications/resources/updated":
            return uri in self.honoured.get("resourceSubscriptions", ())
        return self.honoured.get(LISTEN_KINDS.get(method, "")) is True


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


def refusal(capabilities: Message, message: Message) -> str | None:
    """Why a server-to-client request may not go to a client that declared `capabilities`; None when it may."""
    method = message.get("method")
    params = params_of(message)
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


INPUT_KEY = "signoff"  # the one key of the inputRequests signoff sends for a handshake-era child's question
MAX_ROUNDS = 10_000  # questions waiting for a 2026-07-28 client's retry; each also holds a request of the child
MAX_ELICITATIONS = 10_000  # URL elicitations awaiting their end; a child that never ends them cannot grow this past it
REQUEST_CANCELLED = -32800  # the code the SDK's own server answers a cancelled request with


def subscription_of(message: Message) -> Any:
    """The `subscriptions/listen` request id a 2026-07-28 message is tagged with (`_meta`), or None."""
    body = message.get("params") if "method" in message else message.get("result")
    meta = body.get("_meta") if isinstance(body, dict) else None
    return meta.get(SUBSCRIPTION_ID_META_KEY) if isinstance(meta, dict) else None


def retagged(message: Message, subscription: Any) -> Message:
    """`message` with its subscription tag set to `subscription` (the client's id for its listen request)."""
    key = "params" if "method" in message else "result"
    body = message[key]
    return {**message, key: {**body, "_meta": {**body["_meta"], SUBSCRIPTION_ID_META_KEY: subscription}}}


def honoured_filter(requested: Any, capabilities: Any) -> Message:
    """What signoff acknowledges of a listen request's filter for a handshake-era child: the kinds asked for that
    the child declares it sends (listChanged, resources.subscribe); the spec's ack omits the rest."""
    requested = requested if isinstance(requested, dict) else {}
    capabilities = capabilities if isinstance(capabilities, dict) else {}
    honoured: Message = {}
    for key in LISTEN_KINDS.values():
        section = capabilities.get(key.removesuffix("ListChanged"))
        if requested.get(key) is True and isinstance(section, dict) and section.get("listChanged") is True:
            honoured[key] = True
    uris = requested.get("resourceSubscriptions")
    resources = capabilities.get("resources")
    if isinstance(uris, list) and isinstance(resources, dict) and resources.get("subscribe") is True:
        kept = list(dict.fromkeys(uri for uri in uris if isinstance(uri, str)))[:MAX_LISTEN_URIS]
        if kept:
            honoured["resourceSubscriptions"] = kept
    return honoured


def tagged_for(message: Message, subscription: Any) -> Message:
    """A child's notification as a listen stream carries it: its `_meta` names the listen request."""
    params = params_of(message)
    meta = params.get("_meta")
    meta = meta if isinstance(meta, dict) else {}
    return {**message, "params": {**params, "_meta": {**meta, SUBSCRIPTION_ID_META_KEY: subscription}}}


def deliver(send: MemoryObjectSendStream[Message], message: Message) -> None:
    # The waiting side may have gone (client disconnected, timed out); the message then has no reader.
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.WouldBlock):
        send.send_nowait(message)


def _broadcast(session: DownstreamSession, message: Message) -> bool:
    for listener in session.listeners:
        deliver(listener, message)
    return bool(session.listeners)


class Multiplexer:
    """The sessions on one shared child and its requests in flight, and where each message of the child goes.

    Every method is synchronous: the caller (`StdioUpstream`) does the writing to the child.
    """

    def __init__(self) -> None:
        self.pending: dict[int, Pending] = {}  # by the id signoff gave the request upstream
        self.sessions: dict[str, DownstreamSession] = {}
        self.asked: dict[str | int, str] = {}  # the child's requests relayed to a client, and to which session
        self.elicitations: dict[str, str] = {}  # URL elicitations relayed, and to which session (for their end)
        self.unattributed = 0  # messages the child sent while several sessions waited: sent to none
        self.listeners: list[Listener] = []  # 2026-07-28 listen streams signoff serves for the child
        self.rounds: dict[str, Round] = {}  # by requestState: the child's questions to 2026-07-28 clients

    def forget_requests(self) -> list[Pending]:
        """The child is gone: every request in flight, to be failed, and nothing it asked stays open."""
        pending = list(self.pending.values())
        self.pending.clear()
        self.asked.clear()  # a client's late answer must not reach the next child
        self.rounds.clear()
        self.elicitations.clear()
        return pending

    # -- from the child ------------------------------------------------------------------------

    def answered(self, message: Message) -> None:
        uid = message.get("id")
        pending = self.pending.pop(uid, None) if isinstance(uid, int) else None
        if pending is not None:  # answered: no longer in flight, and nothing more is for it
            if subscription_of(message) == uid:
                message = retagged(message, pending.downstream_id)
            deliver(pending.send, {**message, "id": pending.downstream_id})
            pending.send.close()

    def notified(self, message: Message) -> None:
        method, params = str(message.get("method")), params_of(message)
        subscription = subscription_of(message)
        if subscription is not None:  # a frame of a listen stream: for that request only, or for nobody
            pending = self.pending.get(subscription) if isinstance(subscription, int) else None
            if pending is not None and pending.streams:
                deliver(pending.send, retagged(message, pending.downstream_id))
        elif method == "notifications/progress":
            # signoff rewrote each request's progress token to its own upstream id
            token = params.get("progressToken")
            pending = self.pending.get(token) if isinstance(token, int) else None
            if pending is not None and pending.progress_token is not None and pending.owner is not None:
                self._to_request(pending, {**message, "params": {**params, "progressToken": pending.progress_token}})
        elif method == "notifications/cancelled":  # the child gave up on a request it sent a client
            asked = params.get("requestId")
            owner = self.asked.pop(asked, None) if isinstance(asked, str | int) else None
            if owner is not None:
                self._to_owner(owner, message)
        elif method == "notifications/resources/updated":
            for session in self.sessions.values():
                if params.get("uri") in session.subscriptions:
                    _broadcast(session, message)
            self._to_listeners(method, message, params.get("uri"))
        elif method.endswith("/list_changed"):
            for session in self.sessions.values():
                _broadcast(session, message)
            self._to_listeners(method, message, None)
        elif method == "notifications/elicitation/complete":  # ends a URL elicitation: for the session asked
            owner = self.elicitations.pop(str(params.get("elicitationId")), None)
            if owner is not None:
                self._to_owner(owner, message)
        else:  # a log message, or one the protocol does not place: for the request in flight, or for everyone
            self._attributed(message, params.get("level") if method == "notifications/message" else None)

    def relay(self, message: Message) -> str | None:
        """Send a server-to-client request to the session whose request caused it; why not, if it cannot."""
        request_id = message["id"]
        if not isinstance(request_id, str | int) or request_id in self.asked:
            return "its id is not a string or number, or is already in use"
        owner, busy = the_one(pending.owner for pending in self.pending.values() if not pending.tagged)
        if owner is None:
            return "requests of several sessions are in flight" if busy else "no client request is in flight"
        session = self.sessions.get(owner)
        if session is None:
            return self._ask_in_a_round(owner, message)
        problem = refusal(session.capabilities, message)
        if problem is not None:
            return problem
        self.asked[request_id] = owner
        if not self._to_owner(owner, message):
            del self.asked[request_id]
            return "the client has no open stream to carry it"
        elicitation = params_of(message).get("elicitationId")
        if isinstance(elicitation, str) and len(self.elicitations) < MAX_ELICITATIONS:
            self.elicitations[elicitation] = owner
        return None

    def _ask_in_a_round(self, owner: str, message: Message) -> str | None:
        """Answer the 2026-07-28 request `owner` with `input_required` carrying the child's question (MRTR): the
        client retries with the answer and the requestState, and `resume` finds the child's request again."""
        found = next(((uid, p) for uid, p in self.pending.items() if p.owner == owner), None)
        capabilities = found[1].capabilities if found is not None else None
        if found is None or capabilities is None:
            return "a 2026-07-28 client of this child cannot be asked (it has no session to carry the request)"
        uid, pending = found
        if pending.round is not None:
            return "its client was asked already and has not answered; it is asked one question at a time"
        if len(self.rounds) >= MAX_ROUNDS:
            return "too many questions wait for their clients' answers"
        problem = refusal(capabilities, message)
        if problem is not None:
            return problem
        state = secrets.token_urlsafe(24)
        self.rounds[state] = Round(uid=uid, asked=message["id"], identity=pending.identity)
        pending.round = state
        question = {"method": message["method"], "params": params_of(message)}
        result = {"resultType": "input_required", "inputRequests": {INPUT_KEY: question}, "requestState": state}
        deliver(pending.send, {"jsonrpc": "2.0", "id": pending.downstream_id, "result": result})
        pending.send.close()
        return None

    def resume(self, state: Any, identity: str) -> Round | None:
        """The round a 2026-07-28 retry's `requestState` names, if it is this agent's; it ends here."""
        round = self.rounds.get(state) if isinstance(state, str) else None
        if round is None or round.identity != identity:
            return None
        del self.rounds[state]
        return round

    def _attributed(self, message: Message, level: Any) -> None:
        owner, busy = the_one(pending.owner for pending in self.pending.values() if not pending.tagged)
        if owner is not None:
            self._to_owner(owner, message, level)
        elif not busy:
            for session in self.sessions.values():
                if level is None or session.wants(level):
                    _broadcast(session, message)
        else:
            self.unattributed += 1
            logger.debug("%s while several sessions wait; sent to none", message.get("method"))

    def _to_owner(self, owner: str, message: Message, level: Any = None) -> bool:
        """Send `message` to `owner`: on the stream of a request of its in flight, else its GET streams."""
        session = self.sessions.get(owner)
        if level is not None and session is not None and not session.wants(level):
            return False
        for pending in self.pending.values():
            if pending.owner == owner:
                if level is not None and session is None and level not in pending.levels:
                    return False
                if pending.streams:
                    deliver(pending.send, message)
                    return True
        return session is not None and _broadcast(session, message)

    def _to_listeners(self, method: str, message: Message, uri: Any) -> None:
        for listener in self.listeners:
            if listener.takes(method, uri):
                deliver(listener.send, tagged_for(message, listener.subscription))

    def _wanted(self, besides: object = None) -> set[str]:
        """The resources some session or listen stream (other than `besides`) wants the child subscribed to."""
        wanted: set[str] = set()
        for sid, session in self.sessions.items():
            if sid != besides:
                wanted |= session.subscriptions
        for listener in self.listeners:
            if listener is not besides:
                wanted.update(listener.honoured.get("resourceSubscriptions", ()))
        return wanted

    def listen(self, listener: Listener) -> list[str]:
        """Add a listen stream; the resources the child must be subscribed to for it (nobody else wanted them)."""
        wanted = self._wanted()
        self.listeners.append(listener)
        return [uri for uri in listener.honoured.get("resourceSubscriptions", ()) if uri not in wanted]

    def unlisten(self, listener: Listener) -> list[str]:
        """Forget a listen stream; the resources nobody wants any more, for the child to stop watching."""
        if listener not in self.listeners:
            return []
        self.listeners.remove(listener)
        listener.send.close()
        wanted = self._wanted()
        return [uri for uri in listener.honoured.get("resourceSubscriptions", ()) if uri not in wanted]

    def _to_request(self, pending: Pending, message: Message) -> None:
        if pending.streams:
            deliver(pending.send, message)
        elif (session := self.sessions.get(pending.owner or "")) is not None:
            _broadcast(session, message)

    # -- from a client -------------------------------------------------------------------------

    def session_request(self, session_id: str, message: Message) -> Message | None:
        """Keep what a session asked for (its log level, its subscriptions) and say what the child must be sent.

        The child serves every session at once: it logs at the most verbose level any session asked for, and
        stays subscribed to a resource while any session wants it. None: nothing, the answer is `{}`.
        """
        session = self.sessions[session_id]
        method, params = message.get("method"), message.get("params")
        if not isinstance(params, dict):
            return message
        if method == "logging/setLevel" and params.get("level") in LEVELS:
            session.level = params["level"]
            level = most_verbose(other.level for other in self.sessions.values())
            return {**message, "params": {**params, "level": level}}
        uri = params.get("uri")
        if method not in ("resources/subscribe", "resources/unsubscribe") or not isinstance(uri, str):
            return message
        others = uri in self._wanted(besides=session_id)
        if method == "resources/subscribe":
            session.subscriptions.add(uri)
        else:
            session.subscriptions.discard(uri)
        return None if others else message

    def client_answer(self, message: Message, session_id: str | None) -> Message | None:
        """A client's answer to a request the child sent, for the child: only the session asked may give it."""
        request_id = message.get("id")
        if not isinstance(request_id, str | int) or session_id is None or self.asked.get(request_id) != session_id:
            return None
        del self.asked[request_id]
        return {key: message[key] for key in ("jsonrpc", "id", "result", "error") if key in message}

    def client_notification(self, message: Message, session_id: str | None) -> Message | None:
        """What reaches the child of a client's notification: a cancel only for a request of that session's."""
        if message.get("method") != "notifications/cancelled":
            return message
        params = params_of(message)
        for uid, pending in self.pending.items():
            if pending.owner == session_id and pending.downstream_id == params.get("requestId"):
                del self.pending[uid]  # answered now, so a late answer is ignored and no later cancel hits it
                deliver(pending.send, rpc_error(pending.downstream_id, REQUEST_CANCELLED, "Request cancelled"))
                pending.send.close()
                return {**message, "params": {**params, "requestId": uid}}
        return None  # no request of this session's: its id means nothing to the child, or another session's call

    def session_ended(self, session_id: str) -> tuple[list[int], list[str | int], list[str]]:
        """Forget a session: its requests in flight, the child's requests to it, and the subscriptions only it held."""
        session = self.sessions.pop(session_id)
        for listener in session.listeners:
            listener.close()
        uids = [uid for uid, pending in self.pending.items() if pending.owner == session_id]
        asked = [request_id for request_id, owner in self.asked.items() if owner == session_id]
        for request_id in asked:
            del self.asked[request_id]
        for elicitation in [key for key, owner in self.elicitations.items() if owner == session_id]:
            del self.elicitations[elicitation]
        wanted = self._wanted()
        return uids, asked, sorted(session.subscriptions - wanted)
