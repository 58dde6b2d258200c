"""Agents with OAuth 2.1 access tokens: signoff as a resource server in front of a real upstream, against a real
OpenID provider (oidc-provider from npm, tests/fakes/identity_provider.py) over loopback.

What an agent sees: its calls go through as its `[[agents]]` entry, a bad token gets a 401 whose WWW-Authenticate
says why and where the Protected Resource Metadata is, an unlisted identity a 403, a provider that is down a 503
(static tokens keep working), and the metadata documents name the provider.
"""

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from mcp import Client
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from mcp_types import CallToolResult, TextContent

from integrations.app import create_app
from integrations.errors import ConfigError
from integrations.settings import load_settings
from tests.conftest import AGENT_TOKEN, Running, connect, write_config
from tests.fakes.identity_provider import (
    AGENT_CLIENT,
    AGENT_SECRET,
    STRANGER_CLIENT,
    STRANGER_SECRET,
    IdentityProvider,
    Key,
    identity_provider,
    restart,
    stop,
)
from tests.fakes.upstreams import EverythingState, everything_http_app, loopback_socket, serve_http

pytestmark = pytest.mark.anyio

AUDIENCE = "https://signoff.example.com/mcp"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


class Clock:
    """signoff's clock, which the test moves on (key refetches are rate-limited on it)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def gateway(
    signoff: Any, idp: IdentityProvider, *, auth: str = "", clock: Clock | None = None
) -> AsyncIterator[Running]:
    """signoff with `[auth]` for `idp`, an allow-all policy on the everything server, and a tokenless ci-bot agent."""
    extra = f"""
[[agents]]
name = "ci-bot"

[auth]
issuer = "{idp.issuer}"
audience = "{AUDIENCE}"
{auth}
"""
    async with serve_http(everything_http_app(EverythingState())) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": {"version": "1", "default": "allow"}}]
        async with signoff(servers, extra=extra, clock=clock or time.time) as running:
            yield running


async def post(running: Running, token: str | None) -> httpx2.Response:
    headers = {"accept": "application/json, text/event-stream"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    async with httpx2.AsyncClient(timeout=10) as http:
        return await http.post(running.mcp_url("ev"), json=INITIALIZE, headers=headers)


async def health(running: Running) -> dict[str, Any]:
    async with httpx2.AsyncClient(timeout=10) as http:
        body: dict[str, Any] = (await http.get(f"{running.url}/healthz")).json()
        return body


def text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def challenge(response: httpx2.Response) -> str:
    return response.headers.get("www-authenticate", "")


def metadata_url(running: Running) -> str:
    return f"{running.url}/.well-known/oauth-protected-resource/mcp/ev"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_with_public_key(idp: IdentityProvider, claims: dict[str, Any]) -> str:
    """The classic key-confusion forgery: HMAC-signed with the provider's public key (which anyone can fetch)."""
    public = idp.keys[0].private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": idp.keys[0].kid}).encode())
    body = b64(json.dumps(claims).encode())
    signature = hmac.new(public, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


async def forge(idp: IdentityProvider, forgery: str) -> str:
    """A token that must not get in, of the kind `forgery` names."""
    claims, now = idp.claims(AUDIENCE), int(time.time())
    if forgery == "wrong_audience":  # a real token from the provider, for another resource
        return await idp.client_credentials(resource="https://other.example.com/mcp")
    unsigned = f"{b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{b64(json.dumps(claims).encode())}."
    forged: dict[str, Callable[[], str]] = {
        "wrong_issuer": lambda: idp.sign({**claims, "iss": "https://evil.example.com"}),
        "expired": lambda: idp.sign({**claims, "exp": now - 120}),
        "not_yet_valid": lambda: idp.sign({**claims, "nbf": now + 600}),
        "bad_signature": lambda: idp.sign(claims, key=Key.new("key-1")),  # the provider's kid, another key
        "alg_none": lambda: unsigned,
        "hs256_with_the_public_key": lambda: hs256_with_public_key(idp, claims),
        "unknown_key": lambda: idp.sign(claims, key=Key.new("key-9")),
        "no_exp": lambda: idp.sign({k: v for k, v in claims.items() if k != "exp"}),
        "garbage": lambda: "not-a-token-at-all",
    }
    return forged[forgery]()


async def test_an_agent_with_an_access_token_calls_tools_as_its_agents_entry_beside_static_tokens(
    signoff: Any, tmp_path: Path
) -> None:
    async with identity_provider(tmp_path) as idp, gateway(signoff, idp) as running:
        token = await idp.client_credentials(resource=AUDIENCE)
        async with connect(running.mcp_url("ev"), token) as client:
            result = await client.call_tool("echo", {"text": "hello via oauth"})
        async with running.client("ev", AGENT_TOKEN) as client:
            static = await client.call_tool("echo", {"text": "hello via a static token"})
        events = await running.audit()
        status = await health(running)

    assert not result.is_error and text(result) == "hello via oauth"
    assert not static.is_error and text(static) == "hello via a static token"
    identities = [e.identity for e in events if e.tool == "echo"]
    assert identities == ["ci-bot", "alpha"]
    assert status["auth"]["ok"] is True and status["auth"]["issuer"] == idp.issuer
    assert status["status"] == "ok"


class Storage:
    """The SDK OAuth client's token store, in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


async def test_the_sdks_oauth_client_finds_the_provider_from_the_401_gets_a_token_and_calls_a_tool(
    tmp_path: Path,
) -> None:
    sock = loopback_socket()  # bound first: the audience is signoff's own URL, as the SDK derives the resource
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with identity_provider(tmp_path) as idp, serve_http(everything_http_app(EverythingState())) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": {"version": "1", "default": "allow"}}]
        auth = f'[[agents]]\nname = "ci-bot"\n\n[auth]\nissuer = "{idp.issuer}"\naudience = "{url}/mcp"\n'
        config = write_config(tmp_path, servers, extra=auth)
        app = create_app(load_settings(config, environ={"ALPHA_TOKEN": AGENT_TOKEN}))
        async with serve_http(app, sock) as served:
            storage = Storage()
            oauth = ClientCredentialsOAuthProvider(
                f"{served}/mcp/ev", storage, AGENT_CLIENT, AGENT_SECRET, issuer=idp.issuer
            )
            async with httpx2.AsyncClient(auth=oauth, timeout=30) as http:
                async with Client(
                    streamable_http_client(f"{served}/mcp/ev", http_client=http), mode="legacy"
                ) as client:
                    result = await client.call_tool("echo", {"text": "found my way"})
            events = await running_audit(app)

    assert not result.is_error and text(result) == "found my way"
    assert storage.tokens is not None
    assert jwt.decode(storage.tokens.access_token, options={"verify_signature": False})["aud"] == f"{url}/mcp"
    assert [e.identity for e in events if e.tool == "echo"] == ["ci-bot"]


async def running_audit(app: Any) -> list[Any]:
    return await Running(url="", app=app).audit()


@pytest.mark.parametrize(
    ("forgery", "says"),
    [
        ("wrong_audience", "was not issued for https://signoff.example.com/mcp"),
        ("wrong_issuer", "was not issued by"),
        ("expired", "has expired"),
        ("not_yet_valid", "is not valid yet"),
        ("bad_signature", "signature does not verify"),
        ("alg_none", "signing algorithm is not one signoff accepts"),
        ("hs256_with_the_public_key", "signing algorithm is not one signoff accepts"),
        ("unknown_key", "signed with a key the issuer does not publish"),
        ("no_exp", "has no exp claim"),
        ("garbage", "not a known agent token or a JWT"),
    ],
)
async def test_a_bad_access_token_gets_401_invalid_token_saying_why_and_where_the_metadata_is(
    signoff: Any, tmp_path: Path, forgery: str, says: str
) -> None:
    async with identity_provider(tmp_path) as idp, gateway(signoff, idp) as running:
        token = await forge(idp, forgery)
        response = await post(running, token)
        events = await running.audit()

    assert response.status_code == 401
    header = challenge(response)
    assert header.startswith(f'Bearer resource_metadata="{metadata_url(running)}"')
    assert 'error="invalid_token"' in header
    assert says in header and says in response.json()["error"]["message"]
    assert token not in header and token not in response.text  # the token is never echoed
    assert not [e for e in events if e.kind != "policy_loaded"]  # nothing reached a policy or the upstream


async def test_no_token_gets_a_challenge_naming_the_metadata_without_an_error_code(
    signoff: Any, tmp_path: Path
) -> None:
    async with identity_provider(tmp_path) as idp, gateway(signoff, idp) as running:
        response = await post(running, None)

    assert response.status_code == 401
    assert challenge(response) == f'Bearer resource_metadata="{metadata_url(running)}"'
    assert "Missing bearer token" in response.json()["error"]["message"]


async def test_the_protected_resource_metadata_names_the_audience_and_the_provider(
    signoff: Any, tmp_path: Path
) -> None:
    async with identity_provider(tmp_path) as idp, gateway(signoff, idp, auth='scopes = ["mcp"]') as running:
        async with httpx2.AsyncClient(base_url=running.url, timeout=10) as http:
            root = await http.get("/.well-known/oauth-protected-resource")
            per_server = await http.get("/.well-known/oauth-protected-resource/mcp/ev")
            unknown = await http.get("/.well-known/oauth-protected-resource/mcp/nope")
            discovered = await http.get(f"{idp.issuer}/.well-known/openid-configuration")

    expected = {
        "resource": AUDIENCE,
        "authorization_servers": [idp.issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": "signoff MCP gateway",
        "scopes_supported": ["mcp"],
    }
    assert root.status_code == 200 and root.json() == expected
    assert per_server.status_code == 200 and per_server.json() == expected
    assert root.headers["access-control-allow-origin"] == "*"  # browser-based MCP clients read it cross-origin
    assert unknown.status_code == 404 and "Unknown server 'nope'" in unknown.json()["error"]
    assert discovered.json()["issuer"] == idp.issuer  # the authorization server it names is a real one


async def test_without_auth_there_is_no_metadata_and_the_old_challenge_stays(signoff: Any) -> None:
    async with serve_http(everything_http_app(EverythingState())) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": {"version": "1", "default": "allow"}}]
        async with signoff(servers) as running:
            response = await post(running, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
            async with httpx2.AsyncClient(timeout=10) as http:
                metadata = await http.get(f"{running.url}/.well-known/oauth-protected-resource")

    assert response.status_code == 401 and challenge(response) == 'Bearer realm="signoff"'
    assert metadata.status_code == 404


async def test_an_identity_no_agents_entry_names_is_refused_unless_unlisted_ones_are_allowed(
    signoff: Any, tmp_path: Path
) -> None:
    async with identity_provider(tmp_path) as idp:
        token = await idp.client_credentials(resource=AUDIENCE, client=STRANGER_CLIENT, secret=STRANGER_SECRET)
        async with gateway(signoff, idp) as running:
            refused = await post(running, token)
        async with gateway(signoff, idp, auth="allow_unlisted = true") as running:
            async with connect(running.mcp_url("ev"), token) as client:
                allowed = await client.call_tool("echo", {"text": "hi"})
            events = await running.audit()

    assert refused.status_code == 403
    message = refused.json()["error"]["message"]
    assert "Agent 'stranger'" in message and "[[agents]]" in message and "allow_unlisted" in message
    assert not allowed.is_error and [e.identity for e in events if e.tool == "echo"] == ["stranger"]


async def test_a_token_without_the_required_scope_gets_403_insufficient_scope(signoff: Any, tmp_path: Path) -> None:
    async with identity_provider(tmp_path) as idp, gateway(signoff, idp, auth='scopes = ["mcp"]') as running:
        without = await post(running, await idp.client_credentials(resource=AUDIENCE))
        scoped = await post(running, await idp.client_credentials(resource=AUDIENCE, scope="mcp"))

    assert without.status_code == 403
    assert challenge(without).startswith('Bearer error="insufficient_scope", scope="mcp", resource_metadata=')
    assert scoped.status_code == 200


async def test_an_unknown_kid_fetches_the_keys_again_at_most_once_an_interval_and_a_rotated_key_is_then_taken(
    signoff: Any, tmp_path: Path
) -> None:
    clock = Clock()
    old, new = Key.new("key-1"), Key.new("key-2")
    async with identity_provider(tmp_path, keys=[old]) as idp, gateway(signoff, idp, clock=clock) as running:
        assert (await post(running, await idp.client_credentials(resource=AUDIENCE))).status_code == 200
        fetched = (await health(running))["auth"]["fetches"]
        clock.now += 11  # past the refetch interval
        bogus = [await post(running, idp.sign(idp.claims(AUDIENCE), key=Key.new(f"bogus-{i}"))) for i in range(20)]
        after_flood = (await health(running))["auth"]["fetches"]

        await restart(idp, tmp_path, keys=[new, old])  # the provider rotates: signs with key-2, still publishes key-1
        rotated = await idp.client_credentials(resource=AUDIENCE)
        too_soon = await post(running, rotated)  # the keys were fetched under the interval ago
        clock.now += 11
        taken = await post(running, rotated)
        still_old = await post(running, idp.sign(idp.claims(AUDIENCE), key=old))

    assert jwt.get_unverified_header(rotated)["kid"] == "key-2"
    assert all(r.status_code == 401 and "does not publish" in challenge(r) for r in bogus)
    assert after_flood == fetched + 1  # twenty unknown kids, one fetch
    assert too_soon.status_code == 401
    assert taken.status_code == 200 and still_old.status_code == 200


async def test_a_provider_that_is_down_fails_closed_with_503_shows_in_healthz_and_static_tokens_keep_working(
    signoff: Any, tmp_path: Path
) -> None:
    clock = Clock()
    async with identity_provider(tmp_path) as idp:
        token = idp.sign(idp.claims(AUDIENCE))
        await stop(idp)
        async with gateway(signoff, idp, clock=clock) as running:
            refused = await post(running, token)
            down = await health(running)
            static = await post(running, AGENT_TOKEN)
            await restart(idp, tmp_path, keys=idp.keys)
            clock.now += 11
            accepted = await post(running, token)
            up = await health(running)

    assert refused.status_code == 503
    message = refused.json()["error"]["message"]
    assert f"cannot check OAuth access tokens now: the identity provider {idp.issuer} cannot be reached" in message
    assert "Agent tokens from the config keep working" in message
    assert refused.headers["retry-after"] == "10"
    assert down["status"] == "degraded" and down["auth"]["ok"] is False and down["auth"]["error"]
    assert static.status_code == 200
    assert accepted.status_code == 200 and up["auth"]["ok"] is True and up["status"] == "ok"


async def test_discovery_finds_an_issuer_with_a_path(signoff: Any, tmp_path: Path) -> None:
    async with identity_provider(tmp_path, path="/realms/ops") as idp, gateway(signoff, idp) as running:
        token = await idp.client_credentials(resource=AUDIENCE)
        response = await post(running, token)

    assert idp.issuer.endswith("/realms/ops")
    assert response.status_code == 200


def test_an_agent_without_a_token_needs_auth(tmp_path: Path) -> None:
    config = tmp_path / "signoff.toml"
    config.write_text(
        '[[agents]]\nname = "ci-bot"\n\n[[servers]]\nname = "s"\ncommand = ["true"]\npolicy = "catalog:demo"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    assert "agents ci-bot: no `token`" in str(caught.value)


async def test_groups_from_the_access_token_reach_the_policys_caller_conditions(signoff: Any, tmp_path: Path) -> None:
    rule = {"deny_if": [{"caller": "groups", "op": "contains", "value": "contractors"}]}
    policy = {"version": "1", "default": "allow", "tools": {"echo": rule}}
    async with identity_provider(tmp_path) as idp, serve_http(everything_http_app(EverythingState())) as upstream:
        extra = f'[[agents]]\nname = "ci-bot"\n\n[auth]\nissuer = "{idp.issuer}"\naudience = "{AUDIENCE}"\n'
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": policy}]
        async with signoff(servers, extra=extra) as running:
            now = int(time.time())
            claims = {"iss": idp.issuer, "aud": AUDIENCE, "sub": "ci-bot", "iat": now, "exp": now + 300}
            async with connect(running.mcp_url("ev"), idp.sign({**claims, "groups": ["contractors"]})) as client:
                contractor = await client.call_tool("echo", {"text": "hi"})
            async with connect(running.mcp_url("ev"), idp.sign(claims)) as client:
                plain = await client.call_tool("echo", {"text": "hi"})

    assert contractor.is_error and "contractors" in text(contractor)
    assert not plain.is_error and text(plain) == "hi"
