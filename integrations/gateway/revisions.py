"""Which 2026-07-28-era protocol revisions an upstream serves, as it says itself, and the check made with them.

The gateway judges a request's revision by its upstream, as a direct connection would: an HTTP upstream
lists its revisions in its `server/discover` result (or in the `-32022` error it answers a discover at a
revision it lacks); a stdio child is served by signoff's own translation, so its list is signoff's. An
unsupported revision is answered the spec's way, with `data.supported` and `data.requested`.
This module reads one answer and builds one error; it sends nothing itself (`HttpUpstream` asks).
"""

import json
from collections.abc import Mapping, Sequence
from typing import Any

from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    MCP_PARAM_HEADER_PREFIX,
    InboundLadderRejection,
    classify_inbound_request,
    unsupported_protocol_version_rejection,
    validate_mcp_param_headers,
)
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    PROTOCOL_VERSION_META_KEY,
    UNSUPPORTED_PROTOCOL_VERSION,
)
from mcp_types.jsonrpc import METHOD_NOT_FOUND
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_MODERN_VERSION

Message = dict[str, Any]

DISCOVER_ID = "signoff-discover"
MAX_DISCOVER_BYTES = 64 * 1024
PARAM_HEADER_PREFIX = MCP_PARAM_HEADER_PREFIX.lower()
DISCOVER_HEADERS = {
    "content-type": "application/json",
    "accept": "application/json, text/event-stream",
    "mcp-protocol-version": LATEST_MODERN_VERSION,
    "mcp-method": "server/discover",
}
DISCOVER_BODY = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": DISCOVER_ID,
        "method": "server/discover",
        "params": {
            "_meta": {
                PROTOCOL_VERSION_META_KEY: LATEST_MODERN_VERSION,
                CLIENT_CAPABILITIES_META_KEY: {},
                CLIENT_INFO_META_KEY: {"name": "signoff", "version": "0.1.0"},
            }
        },
    },
    separators=(",", ":"),
).encode()


def modern_only(versions: Any) -> tuple[str, ...] | None:
    """The 2026-07-28-era entries of a `supportedVersions` or `supported` list, in order; None if it is no list."""
    if not isinstance(versions, list):
        return None
    return tuple(v for v in versions if isinstance(v, str) and v not in HANDSHAKE_PROTOCOL_VERSIONS)


def versions_in(message: Message | None) -> tuple[str, ...]:
    """The revisions a `server/discover` answer names: its result's `supportedVersions`, or the `supported` of
    its -32022 error; () for anything else (a handshake-era server answers with some other error)."""
    if message is None:
        return ()
    result = message.get("result")
    if isinstance(result, dict):
        return modern_only(result.get("supportedVersions")) or ()
    error = message.get("error")
    if isinstance(error, dict) and error.get("code") == UNSUPPORTED_PROTOCOL_VERSION:
        data = error.get("data")
        return (modern_only(data.get("supported")) if isinstance(data, dict) else None) or ()
    return ()


def version_error(message: Message, headers: dict[str, str], supported: Sequence[str]) -> tuple[int, Message] | None:
    """For a request at a 2026-07-28-era revision: the HTTP status and JSON-RPC error it is refused with, if any.

    The revision is checked against `supported`, what the upstream serves; a refusal carries the error's
    `data` (for -32022, `supported` and `requested`), as the spec requires and the SDK's client reads.
    """
    verdict = classify_inbound_request(message, headers=headers, supported_modern_versions=supported)
    if not isinstance(verdict, InboundLadderRejection):
        return None
    return _refusal(verdict, message["id"])


def notification_version_error(version: str, supported: Sequence[str]) -> tuple[int, Message] | None:
    """For a notification at a 2026-07-28-era `version`: the -32022 refusal if the upstream does not serve it
    (a notification has no id to answer, so the error's id is null), as the SDK's server answers one."""
    verdict = unsupported_protocol_version_rejection(version, supported)
    return None if verdict is None else _refusal(verdict, None)


def _refusal(verdict: InboundLadderRejection, request_id: Any) -> tuple[int, Message]:
    error: Message = {"code": verdict.code, "message": verdict.message}
    if verdict.data is not None:
        error["data"] = verdict.data
    return ERROR_CODE_HTTP_STATUS.get(verdict.code, 400), {"jsonrpc": "2.0", "id": request_id, "error": error}


# Methods 2026-07-28 removed: a request for one at that revision is answered as for any unknown method.
REMOVED_METHODS = frozenset({"initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"})


def method_not_found(request_id: Any) -> tuple[int, Message]:
    """The 2026-07-28 answer to a method the server does not serve (or the revision removed): 404 and -32601."""
    return 404, {"jsonrpc": "2.0", "id": request_id, "error": {"code": METHOD_NOT_FOUND, "message": "Method not found"}}


def error_status(message: Message) -> int:
    """The HTTP status a 2026-07-28 answer is sent with: the spec's status for its error code, else 200."""
    error = message.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return ERROR_CODE_HTTP_STATUS.get(code, 200) if isinstance(code, int) else 200


def wants_param_check(message: Message, headers: Mapping[str, str]) -> bool:
    """Whether a 2026-07-28 `tools/call` could break an `Mcp-Param-*` declaration (it has arguments or such headers)."""
    params = message.get("params")
    if message.get("method") != "tools/call" or not isinstance(params, dict):
        return False
    return bool(params.get("arguments")) or any(name.startswith(PARAM_HEADER_PREFIX) for name in headers)


def param_header_error(input_schema: Any, message: Message, headers: Mapping[str, str]) -> tuple[int, Message] | None:
    """The 400 and -32020 refusal of a `tools/call` whose `Mcp-Param-*` headers disagree with its arguments, as the
    SDK's own server checks them against the tool's `inputSchema`; None when they agree (or cannot be compared)."""
    params = message.get("params")
    arguments = params.get("arguments") if isinstance(params, dict) else None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return None
    verdict = validate_mcp_param_headers(input_schema, arguments, headers)
    return None if verdict is None else _refusal(verdict, message["id"])
