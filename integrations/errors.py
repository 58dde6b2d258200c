"""Errors raised at the edges: bad configuration, unreachable upstreams, bad requests."""


class IntegrationError(Exception):
    """Root of every error raised by `integrations`."""


class ConfigError(IntegrationError, ValueError):
    """Raised when the configuration file or a policy it names cannot be used; the message says which key."""


class UpstreamUnavailable(IntegrationError, ConnectionError):
    """Raised when an upstream MCP server cannot be reached or cannot take a request now."""

    state = "is unavailable"

    def __init__(self, server: str, detail: str) -> None:
        super().__init__(f"upstream server {server!r} {self.state}: {detail}")
        self.server = server
        self.detail = detail


class UpstreamFailed(UpstreamUnavailable):
    """Raised when an upstream took a request but its answer never came or cannot be used.

    It timed out, closed the connection or broke its event stream mid-answer, or exited while the
    request was in flight. Unlike a refused connection, the request may have run upstream.
    """

    state = "failed"


class IssuerUnavailable(IntegrationError, ConnectionError):
    """Raised when an OAuth/OpenID issuer's metadata or signing keys cannot be fetched (the provider is down)."""

    def __init__(self, issuer: str, detail: str) -> None:
        super().__init__(f"the identity provider {issuer} cannot be reached: {detail}")
        self.issuer = issuer
        self.detail = detail


class InvalidToken(IntegrationError, ValueError):
    """Raised when a JWT (an access token or an ID token) fails validation; the message never holds the token."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class LimitStoreUnavailable(IntegrationError, ConnectionError):
    """Raised when the store rate limits are counted in (Redis or the database) cannot be reached or fails a count.

    `detail` says what went wrong without the store's URL, which may carry a password.
    """

    def __init__(self, backend: str, detail: str) -> None:
        super().__init__(f"the rate-limit store ({backend}) cannot be reached: {detail}")
        self.backend = backend
        self.detail = detail
