"""Errors raised at the edges: bad configuration, unreachable upstreams, bad requests."""


class IntegrationError(Exception):
    """Root of every error raised by `integrations`."""


class ConfigError(IntegrationError, ValueError):
    """Raised when the configuration file or a policy it names cannot be used; the message says which key."""


class UpstreamUnavailable(IntegrationError, ConnectionError):
    """Raised when an upstream MCP server cannot be reached, or exited while a request was in flight."""

    def __init__(self, server: str, detail: str) -> None:
        super().__init__(f"upstream server {server!r} is unavailable: {detail}")
        self.server = server
        self.detail = detail
