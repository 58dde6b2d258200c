"""The gateway's few words of JSON-RPC and SSE, written once: an error, an event, and which revision a client speaks.

The endpoint, the stdio multiplexer, the approval holding and the refusals all answer clients in these shapes;
before, each had its own copy, and two of them disagreed on what an unknown `MCP-Protocol-Version` is.
"""

import json
from typing import Any, TypeGuard

from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

Message = dict[str, Any]
VERSION_HEADER = "mcp-protocol-version"  # the header a Streamable HTTP client names its revision in

__all__ = ["VERSION_HEADER", "Message", "is_modern", "rpc_error", "sse_event"]


def rpc_error(request_id: Any, code: int, message: str) -> Message:
    """A JSON-RPC error response."""
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def sse_event(message: Message) -> bytes:
    """One message as a Server-Sent Event of the Streamable HTTP transport."""
    return b"event: message\ndata: " + json.dumps(message, separators=(",", ":")).encode() + b"\n\n"


def is_modern(version: str | None) -> TypeGuard[str]:
    """Whether a client sending `MCP-Protocol-Version: version` speaks a 2026-07-28-era (stateless) revision.

    Every revision but the handshake ones is; no header, or an empty one, means the handshake. A version string
    signoff does not know is judged against the upstream's own list first (`revisions.version_error`), so one
    that gets this far is served as modern.
    """
    return bool(version) and version not in HANDSHAKE_PROTOCOL_VERSIONS
