"""The Redis client replicas share state through when `[gateway] redis_url` is set; without it, the database.

Short timeouts: a shared store that does not answer must turn into a clear refusal (limits fail closed) within a
second, not hold a call for the operating system's TCP timeout. The URL may carry a password, so it is never
logged; errors name the store, not the URL.
"""

from redis.asyncio import Redis

__all__ = ["TIMEOUT", "connect_redis"]

TIMEOUT = 1.0  # seconds for a connect or a command before the store counts as unreachable


def connect_redis(url: str) -> "Redis":
    """A client for `url` (no connection is made until the first command); close it with `aclose()`."""
    client: Redis = Redis.from_url(
        url,
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
        health_check_interval=15,
        retry_on_timeout=False,
    )
    return client
