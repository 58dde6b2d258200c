"""The bus between replicas: tells every other signoff process on the same store that something it waits on or holds
a copy of changed (a request settled, the grants, a server's tool drift, a policy file), so it acts at once rather
than at its next poll.

The carrier is Redis pub/sub when `[gateway] redis_url` is set, PostgreSQL LISTEN/NOTIFY when the database is
PostgreSQL, and nothing otherwise: SQLite serves one process, which already knows what it did. A message is a topic
and an id as small JSON, never a secret or a tool's arguments. Delivery is best effort, and the polls stay as the
fallback (decisions every 2 s, grants every 5 s, policy files every second): while the listener is disconnected
they carry everything, and each time it connects the receivers catch up once, since what was said meanwhile is
lost. A replica hears its own messages too and drops them by their sender id.
"""

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol
from uuid import uuid4

import anyio
import anyio.abc
import psycopg
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from sqlalchemy.engine import Engine

from approvals.ports import Broadcaster, Topic
from integrations.background import Backoff, WriteBehind
from integrations.supervision import Spawner

__all__ = ["Broadcast", "Broadcaster", "PostgresCarrier", "RedisCarrier", "Topic"]

logger = logging.getLogger(__name__)

CHANNEL = "signoff"
KEEPALIVE = 5.0  # seconds of quiet after which the listener checks its connection is still there
RECONNECT = Backoff(first=0.1, most=5.0)
Handler = Callable[[str], Awaitable[object]]


class Carrier(Protocol):
    """One way of reaching every replica: a listening connection, and a way to send."""

    kind: str

    async def listen(self) -> AsyncIterator[str]:
        """Connect, subscribe, and yield each payload; raises when the connection is lost."""
        ...  # pragma: no cover
        yield ""  # pragma: no cover

    async def send(self, payload: str) -> None: ...

    async def close(self) -> None: ...


class PostgresCarrier:
    """LISTEN on one dedicated autocommit connection; NOTIFY from another (`notifies()` holds the first one's lock).

    Messages are sent after the transaction they tell of has committed, not with `pg_notify` inside it: the
    domain's transactions run in worker threads through `approvals.store`, and one send path serves Redis too.
    A crash between the commit and the send loses the message, which the poll then delivers.
    """

    kind = "postgresql"

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._sender: psycopg.AsyncConnection[Any] | None = None
        self.backend: int | None = None  # the listening connection's server process id (tests terminate it)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        # Keepalives so a peer that vanished without a FIN is noticed in seconds, not at TCP's two hours.
        return await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, connect_timeout=3, keepalives=1, keepalives_idle=5, keepalives_interval=2
        )

    async def listen(self) -> AsyncIterator[str]:
        connection = await self._connect()
        try:
            await connection.execute(f"LISTEN {CHANNEL}")
            self.backend = connection.info.backend_pid
            yield ""  # subscribed: the caller may catch up now
            while True:
                async for notify in connection.notifies(timeout=KEEPALIVE):
                    yield notify.payload
                await connection.execute("SELECT 1")  # quiet for a while: make sure the connection is alive
        finally:
            self.backend = None
            with anyio.CancelScope(shield=True):
                await connection.close()

    async def send(self, payload: str) -> None:
        if self._sender is None or self._sender.closed:
            self._sender = await self._connect()
        try:
            await self._sender.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
        except psycopg.Error:
            await self._sender.close()
            self._sender = None
            raise

    async def close(self) -> None:
        if self._sender is not None:
            await self._sender.close()


class RedisCarrier:
    """Redis pub/sub on the runtime's client (`integrations/shared.py`): a subscription holds its own connection."""

    kind = "redis"

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def listen(self) -> AsyncIterator[str]:
        pubsub: PubSub = self._redis.pubsub()
        try:
            await pubsub.subscribe(CHANNEL)
            yield ""
            while True:
                message = await pubsub.get_message(timeout=KEEPALIVE)
                if message is None:
                    await pubsub.ping()  # quiet for a while: make sure the connection is alive
                elif message.get("type") == "message":
                    data = message["data"]
                    yield data.decode() if isinstance(data, bytes) else str(data)
        finally:
            with anyio.CancelScope(shield=True):
                await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # older redis-py leaves it unannotated

    async def send(self, payload: str) -> None:
        await self._redis.publish(CHANNEL, payload)

    async def close(self) -> None:
        return None


class Broadcast:
    """The bus of this process: `send` queues a message for every other replica, `on` says what to do with one heard.

    Without a carrier (SQLite, no Redis) it sends nothing and counts as connected: there is no other replica.
    """

    def __init__(self, carrier: Carrier | None, *, backoff: Backoff = RECONNECT) -> None:
        self._carrier = carrier
        self._backoff = backoff
        self.sender = uuid4().hex[:16]
        self._handlers: dict[Topic, list[Handler]] = {}
        self._catch_up: list[Callable[[], Awaitable[object]]] = []
        self._watchers: list[Callable[[bool], None]] = []
        self._outbox: WriteBehind[str] = WriteBehind("bus sender", self._deliver, max_batch=100)
        self.connected = carrier is None
        self.reconnects = 0
        self.heard = 0
        self.sent = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._changed = anyio.Event()  # set whenever `connected` changes (tests and benchmarks wait on it)

    @property
    def kind(self) -> str:
        return "local" if self._carrier is None else self._carrier.kind

    def on(self, topic: Topic, handler: Handler) -> None:
        """Run `handler(about)` for each message on `topic` from another replica, each in its own task."""
        self._handlers.setdefault(topic, []).append(handler)

    def on_connect(self, catch_up: Callable[[], Awaitable[object]]) -> None:
        """Run `catch_up()` each time the listener (re)connects: messages sent while it was away are lost."""
        self._catch_up.append(catch_up)

    def on_change(self, watcher: Callable[[bool], None]) -> None:
        """Call `watcher(connected)` each time the listener connects or loses its connection."""
        self._watchers.append(watcher)

    def send(self, topic: Topic, about: str) -> None:
        if self._carrier is None:
            return
        self._outbox.put(json.dumps({"topic": topic.value, "about": about, "from": self.sender}))

    async def _deliver(self, payloads: Sequence[str]) -> int:
        if self._carrier is None:
            return len(payloads)
        for done, payload in enumerate(payloads):
            try:
                await self._carrier.send(payload)
            except Exception as exc:  # best effort: the other replicas' polls deliver what is dropped
                self.dropped += len(payloads) - done
                self.last_error = f"sending: {type(exc).__name__}: {exc}"[:300]
                logger.warning("Bus: %d messages not sent (%s); the polls carry them", len(payloads) - done, exc)
                return len(payloads)
            self.sent += 1
        return len(payloads)

    def start(self, parts: Spawner) -> None:
        if self._carrier is None:
            return
        self._outbox.start(parts)
        parts.start_soon(self._listen, name="bus listener")

    async def close(self) -> None:
        await self._outbox.close()
        if self._carrier is not None:
            await self._carrier.close()

    async def wait_changed(self) -> bool:
        """Wait until the listener connects or disconnects; returns whether it is connected then."""
        await self._changed.wait()
        return self.connected

    def _set_connected(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected = connected
            for watcher in self._watchers:
                watcher(connected)
            self._changed.set()
            self._changed = anyio.Event()

    async def _listen(self) -> None:
        if self._carrier is None:
            return
        attempt = 0
        async with anyio.create_task_group() as tasks:
            while True:
                try:
                    first = True
                    async for payload in self._carrier.listen():
                        if first:  # subscribed
                            first, attempt = False, 0
                            self._set_connected(True)
                            logger.info("Bus: listening on %s", self.kind)
                            for catch_up in self._catch_up:
                                tasks.start_soon(self._run, catch_up)
                            continue
                        self._dispatch(tasks, payload)
                    raise ConnectionError("the subscription ended")
                except Exception as exc:  # the listener's top-level handler: fall back to the polls, reconnect
                    attempt += 1
                    if self.connected:
                        logger.warning("Bus: lost the %s connection (%s); polling until it is back", self.kind, exc)
                    self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                    self._set_connected(False)
                await anyio.sleep(self._backoff.delay(attempt))
                self.reconnects += 1

    def _dispatch(self, tasks: anyio.abc.TaskGroup, payload: str) -> None:
        try:
            message = json.loads(payload)
            topic, about, sender = Topic(message["topic"]), str(message["about"]), message.get("from")
        except (ValueError, KeyError, TypeError):
            logger.warning("Bus: ignored a message that is not signoff's")
            return
        if sender == self.sender:  # our own, already acted on here
            return
        self.heard += 1
        for handler in self._handlers.get(topic, ()):
            tasks.start_soon(self._run, handler, about)

    async def _run(self, handler: Callable[..., Awaitable[object]], *args: Any) -> None:
        try:
            await handler(*args)
        except Exception:  # one message's top-level handler: the poll is still there
            logger.exception("Bus: acting on a message failed")

    def health(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "connected": self.connected,
            "reconnects": self.reconnects,
            "sent": self.sent,
            "heard": self.heard,
            "dropped": self.dropped,
            "last_error": self.last_error,
        }


def carrier_for(database: Engine, redis: Redis | None) -> Carrier | None:
    """Redis when configured (preferred: it spares the database two connections per replica), else PostgreSQL when
    the database is, else none."""
    if redis is not None:
        return RedisCarrier(redis)
    if database.dialect.name == "postgresql":
        return PostgresCarrier(database.url.set(drivername="postgresql").render_as_string(hide_password=False))
    return None
