"""Who is calling `/mcp/{server}`: an `Authorization` header to a `Caller` (an agent's name and groups) or a `Refusal`.

A static `[[agents]]` token is looked up first (TokenBook, constant time); with `[auth]`, anything else is taken
as an OAuth 2.1 access token (a JWT from the issuer, for the audience). The caller's name is what the rest of the
gateway knows as the identity, whichever way it was proved. A refusal follows RFC 6750 section 3 and RFC 9728
section 5.1: a 401 always says where the protected resource metadata is.
"""

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2

from integrations.errors import InvalidToken, IssuerUnavailable
from integrations.oauth.issuer import REFETCH_INTERVAL, Issuer
from integrations.oauth.validation import claim_strings, looks_like_jwt, verify_jwt
from integrations.settings import AuthSettings, Settings
from integrations.tokens import TokenBook

logger = logging.getLogger(__name__)

_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
METADATA_PATH = "/.well-known/oauth-protected-resource"


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated agent: its name (the gateway's identity), its groups, and how it proved who it is."""

    name: str
    groups: frozenset[str] = frozenset()
    method: str = "token"  # "token" (a static [[agents]] token) or "oauth" (an access token)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is not let in, as the HTTP answer the agent gets."""

    status: int
    message: str
    headers: tuple[tuple[str, str], ...] = ()


def metadata_url(base: str, server: str) -> str:
    """The RFC 9728 metadata document for the MCP endpoint of `server` (the path-inserted well-known URL)."""
    return f"{base}{METADATA_PATH}/mcp/{server}"


class Authenticator:
    """Resolves an `Authorization` header to a caller or a refusal.

    `listed` names every `[[agents]]` entry with the groups the config gives it; `public_url` is the gateway's
    `[gateway] public_url` (None: the request's own Host, over http, as signoff serves it itself).
    """

    def __init__(
        self,
        tokens: Mapping[str, str],
        *,
        listed: Mapping[str, frozenset[str]] | None = None,
        auth: AuthSettings | None = None,
        issuer: Issuer | None = None,
        public_url: str | None = None,
        fallback_url: str = "http://127.0.0.1",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._listed = dict(listed or {})
        self._tokens = TokenBook((token, name) for token, name in tokens.items())
        self._auth = auth
        self._issuer = issuer
        self._public_url = public_url.rstrip("/") if public_url else None
        self._fallback_url = fallback_url.rstrip("/")
        self._clock = clock

    async def authenticate(self, authorization: str, server: str, host: str | None = None) -> Caller | Refusal:
        """Who sent `authorization` (the header's value, "" if absent) to `/mcp/{server}`."""
        name = self._tokens.lookup(authorization)
        if name is not None:
            return Caller(name, self._listed.get(name, frozenset()))
        if self._auth is None or self._issuer is None:
            return Refusal(401, "Missing or invalid bearer token", (("www-authenticate", 'Bearer realm="signoff"'),))
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            # No credentials at all: the challenge carries no error code (RFC 6750 section 3.1).
            return self._challenge(
                server, host, None, "Missing bearer token: send an OAuth access token or an agent token"
            )
        if not looks_like_jwt(token):
            return self._challenge(server, host, "invalid_token", "The token is not a known agent token or a JWT")
        try:
            claims = await verify_jwt(token, self._issuer, audiences=(self._auth.audience,), now=self._clock())
        except InvalidToken as exc:
            logger.info("Refused an access token for /mcp/%s: %s", server, exc.detail)
            return self._challenge(server, host, "invalid_token", f"The access token is invalid: {exc.detail}")
        except IssuerUnavailable as exc:
            # Fail closed: the token cannot be checked now. Not a 401, which would send a client to get a new one.
            message = (
                f"signoff cannot check OAuth access tokens now: {exc}. Agent tokens from the config keep working;"
                " try again shortly"
            )
            return Refusal(503, message, (("retry-after", str(int(REFETCH_INTERVAL))),))
        return self._caller(claims, server, host)

    def _caller(self, claims: dict[str, Any], server: str, host: str | None) -> Caller | Refusal:
        auth = self._auth
        if auth is None:  # pragma: no cover - only reached with [auth]
            raise RuntimeError("no [auth]")
        missing = [s for s in auth.scopes if s not in _scopes(claims)]
        if missing:
            scope = " ".join(auth.scopes)
            value = f'Bearer error="insufficient_scope", scope="{scope}", resource_metadata="{self._url(server, host)}"'
            return Refusal(
                403, f"The access token lacks the scope(s) {' '.join(missing)}", (("www-authenticate", value),)
            )
        name = claims.get(auth.agent_claim)
        if not isinstance(name, str) or not name:
            return self._challenge(server, host, "invalid_token", f"The access token has no {auth.agent_claim} claim")
        groups = claim_strings(claims.get(auth.groups_claim))
        if name in self._listed:
            return Caller(name, self._listed[name] | groups, "oauth")
        if auth.allow_unlisted:
            return Caller(name, groups, "oauth")
        logger.warning(
            "Refused agent %r for /mcp/%s: a valid access token, but no [[agents]] entry names it", name, server
        )
        return Refusal(
            403,
            f"Agent {name!r} ({auth.agent_claim} of the access token) is not in this signoff's [[agents]]; an"
            " administrator must add it (or set [auth] allow_unlisted = true)",
        )

    def _challenge(self, server: str, host: str | None, error: str | None, message: str) -> Refusal:
        value = f'Bearer resource_metadata="{self._url(server, host)}"'
        if error is not None:
            value += f', error="{error}", error_description="{_quotable(message)}"'
        return Refusal(401, message, (("www-authenticate", value),))

    def _url(self, server: str, host: str | None) -> str:
        if self._public_url is not None:
            base = self._public_url
        elif host is not None and _HOST.match(host):
            base = f"http://{host}"
        else:
            base = self._fallback_url
        return metadata_url(base, server)

    async def warm(self) -> None:
        """Fetch the issuer's metadata and keys once at start, so the first agent need not wait (and /healthz
        shows a provider that is down); a failure is only logged and shown: tokens retry on their own."""
        if self._issuer is not None:
            await self._issuer.prefetch()

    def health(self) -> dict[str, Any] | None:
        """For /healthz: the issuer's state, or None without [auth]."""
        return self._issuer.health() if self._issuer is not None else None


def build_authenticator(settings: Settings, client: httpx2.AsyncClient, clock: Callable[[], float]) -> Authenticator:
    """The gateway's authenticator for `settings`: its static agent tokens and, with [auth], its issuer."""
    tokens = {a.token.get_secret_value(): a.name for a in settings.agents if a.token is not None}
    listed = {a.name: frozenset(a.groups) for a in settings.agents}
    issuer = Issuer(settings.auth.issuer, client, clock=clock) if settings.auth is not None else None
    public = settings.gateway.public_url
    if (
        settings.auth is not None
        and public
        and not f"{public.rstrip('/')}/mcp/".startswith(settings.auth.audience.rstrip("/") + "/")
    ):
        # MCP clients ask for a token for the metadata's resource only when it is a parent of the server's URL.
        logger.warning(
            "[auth] audience %s is not %s/mcp or a parent of it: MCP clients will ask for tokens for their server's"
            " own URL instead, which signoff refuses",
            settings.auth.audience,
            public.rstrip("/"),
        )
    return Authenticator(
        tokens,
        listed=listed,
        auth=settings.auth,
        issuer=issuer,
        public_url=settings.gateway.public_url,
        fallback_url=settings.gateway.base_url,
        clock=clock,
    )


def _scopes(claims: dict[str, Any]) -> set[str]:
    return set(claim_strings(claims.get("scope", claims.get("scp"))))


def _quotable(text: str) -> str:
    """`text` as an RFC 6750 error_description may carry it: printable ASCII without quote or backslash."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text)
