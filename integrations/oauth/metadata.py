"""OAuth 2.0 Protected Resource Metadata (RFC 9728) for the MCP endpoints, so clients find where to get a token.

Served at the root well-known URL and, path-inserted, for each `/mcp/{server}` (the MCP authorization spec's
two discovery locations). Every document names the one resource signoff accepts tokens for: `[auth] audience`.
MCP clients match it hierarchically (the SDK's `check_resource_allowed`), so an audience such as
`https://signoff.example.com/mcp` covers every `/mcp/{server}` below it.
"""

from collections.abc import Collection
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from integrations.oauth.agents import METADATA_PATH
from integrations.settings import AuthSettings

# Public documents that browser-based MCP clients read from other origins.
_HEADERS = {"access-control-allow-origin": "*", "cache-control": "public, max-age=300"}


def resource_metadata(auth: AuthSettings) -> dict[str, Any]:
    document: dict[str, Any] = {
        "resource": auth.audience,
        "authorization_servers": [auth.issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": "signoff MCP gateway",
    }
    if auth.scopes:
        document["scopes_supported"] = list(auth.scopes)
    return document


def build_metadata_routes(auth: AuthSettings, servers: Collection[str]) -> list[BaseRoute]:
    """The metadata routes; `servers` are the configured server names (any other gets a 404)."""
    document = resource_metadata(auth)

    async def root(request: Request) -> Response:
        return JSONResponse(document, headers=_HEADERS)

    async def per_server(request: Request) -> Response:
        server = request.path_params["server"]
        if server not in servers:
            known = ", ".join(sorted(servers)) or "none"
            return JSONResponse({"error": f"Unknown server {server!r}; configured: {known}"}, status_code=404)
        return JSONResponse(document, headers=_HEADERS)

    return [
        Route(METADATA_PATH, root, methods=["GET"]),
        Route(f"{METADATA_PATH}/mcp/{{server}}", per_server, methods=["GET"]),
    ]
