"""An OAuth 2.1 / OpenID Connect issuer as signoff sees it: its discovered metadata and its cached signing keys.

It fetches (over httpx2) and remembers; it verifies nothing itself (`validation.py` does, with PyJWT). Fetches are
rate-limited, so a flood of tokens naming unknown keys costs the identity provider one request per interval.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx2
import jwt

from integrations.errors import InvalidToken, IssuerUnavailable

logger = logging.getLogger(__name__)

# Public-key signatures only: never `none`, never HS* (whose "key" would be the public key anyone can fetch).
ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
REFETCH_INTERVAL = 10.0  # at most one fetch from the provider this often, whatever tokens arrive
KEYS_MAX_AGE = 3600.0  # keys are fetched again after this, so a key the provider withdrew stops working
FETCH_TIMEOUT = 5.0


def discovery_urls(issuer: str) -> list[str]:
    """Where the issuer's metadata may be, in the MCP authorization spec's order (RFC 8414 section 3.1 inserts
    the well-known segment before the issuer's path; OpenID Connect Discovery appends it)."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")

    def at(new_path: str) -> str:
        return urlunsplit((parts.scheme, parts.netloc, new_path, "", ""))

    if not path:
        return [at("/.well-known/oauth-authorization-server"), at("/.well-known/openid-configuration")]
    return [
        at(f"/.well-known/oauth-authorization-server{path}"),
        at(f"/.well-known/openid-configuration{path}"),
        at(f"{path}/.well-known/openid-configuration"),
    ]


@dataclass(frozen=True, slots=True)
class IssuerMetadata:
    """What signoff uses of an issuer's metadata document."""

    issuer: str
    jwks_uri: str
    algorithms: frozenset[str]  # the signing algorithms signoff accepts from it: ASYMMETRIC, narrowed by what it says
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    userinfo_endpoint: str | None = None
    token_auth_methods: tuple[str, ...] = ()


def _metadata(document: Any, issuer: str) -> IssuerMetadata:
    if not isinstance(document, dict):
        raise ValueError("the metadata document is not a JSON object")
    # RFC 8414 section 3.3 and OpenID Connect Discovery section 4.3: the document must name the issuer asked for.
    if document.get("issuer") != issuer:
        raise ValueError(f"the metadata names issuer {document.get('issuer')!r}, not {issuer!r}")
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
        raise ValueError("the metadata has no jwks_uri")
    advertised = document.get("id_token_signing_alg_values_supported")
    algorithms = ASYMMETRIC & set(advertised) if isinstance(advertised, list) and advertised else ASYMMETRIC

    def text(key: str) -> str | None:
        value = document.get(key)
        return value if isinstance(value, str) else None

    methods = document.get("token_endpoint_auth_methods_supported")
    return IssuerMetadata(
        issuer=issuer,
        jwks_uri=jwks_uri,
        algorithms=frozenset(algorithms) or ASYMMETRIC,
        authorization_endpoint=text("authorization_endpoint"),
        token_endpoint=text("token_endpoint"),
        userinfo_endpoint=text("userinfo_endpoint"),
        token_auth_methods=tuple(m for m in methods if isinstance(m, str)) if isinstance(methods, list) else (),
    )


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One public key from the issuer's JWKS."""

    kid: str | None
    alg: str | None  # the JWK's own `alg`, when it names one: then a token must use exactly that
    key: Any  # a `cryptography` public key, as PyJWT takes it


def _keys(document: Any) -> list[SigningKey]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("the JWKS is not an object with a `keys` list")
    keys: list[SigningKey] = []
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or entry.get("kty") == "oct":
            continue  # encryption keys and shared secrets never verify a signature here
        if "d" in entry:
            continue  # a private key published by mistake is not one to trust
        try:
            parsed = jwt.PyJWK(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
            logger.warning("Skipping a key of the JWKS signoff cannot use: %s", exc)
            continue
        kid, alg = entry.get("kid"), entry.get("alg")
        keys.append(
            SigningKey(kid if isinstance(kid, str) else None, alg if isinstance(alg, str) else None, parsed.key)
        )
    return keys


class Issuer:
    """One issuer's metadata and keys, fetched on first use, again when a token names a key not yet seen (at most
    once per REFETCH_INTERVAL), and again once they are KEYS_MAX_AGE old.

    `clock` gives seconds (tests pass their own, to step past the interval).
    """

    def __init__(
        self,
        issuer: str,
        client: httpx2.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
        refetch_interval: float = REFETCH_INTERVAL,
    ) -> None:
        self.issuer = issuer
        self._client = client
        self._clock = clock
        self._interval = refetch_interval
        self._metadata: IssuerMetadata | None = None
        self._keys: list[SigningKey] | None = None
        self._fetched_at: float | None = None  # the last fetch that worked
        self._tried_at: float | None = None  # the last fetch at all
        self._lock = anyio.Lock()
        self.error: str | None = None  # why the last fetch failed; None once one works again
        self.fetches = 0

    async def metadata(self) -> IssuerMetadata:
        """The issuer's metadata, discovered once.

        Raises:
            IssuerUnavailable: it could not be fetched now (or was tried too recently to try again).
        """
        if self._metadata is None:
            await self._refresh(force=False)
        if self._metadata is None:
            raise IssuerUnavailable(self.issuer, self.error or "its metadata was never fetched")
        return self._metadata

    async def key(self, kid: str | None) -> SigningKey:
        """The key `kid` names (or, without a kid, the only key), fetching the JWKS again if it is new or old.

        Raises:
            IssuerUnavailable: the keys could not be fetched and none are known.
            InvalidToken: the issuer publishes no such key, even after fetching them again.
        """
        now = self._clock()
        stale = self._fetched_at is None or now - self._fetched_at >= KEYS_MAX_AGE
        found = self._find(kid)
        if found is None or stale:
            await self._refresh(force=stale)
            found = self._find(kid)
        if found is not None:
            return found
        if self._keys is None:
            raise IssuerUnavailable(self.issuer, self.error or "its signing keys were never fetched")
        if kid is None:
            raise InvalidToken("the token names no key (kid) and the issuer publishes more than one")
        raise InvalidToken("the token is signed with a key the issuer does not publish")

    async def prefetch(self) -> None:
        """Fetch the metadata and keys now unless they are at hand (a failure is recorded in `error`, not raised)."""
        if self._keys is None:
            await self._refresh(force=False)

    def _find(self, kid: str | None) -> SigningKey | None:
        if self._keys is None:
            return None
        if kid is None:
            return self._keys[0] if len(self._keys) == 1 else None
        return next((k for k in self._keys if k.kid == kid), None)

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            now = self._clock()
            # Rate-limited even when forced: a provider that is down is asked once per interval, not per request.
            if self._tried_at is not None and now - self._tried_at < self._interval:
                return
            self._tried_at = now
            self.fetches += 1
            try:
                metadata = self._metadata
                if metadata is None or force:
                    metadata = await self._discover()
                keys = _keys(await self._get(metadata.jwks_uri))
            except (httpx2.HTTPError, ValueError) as exc:
                self.error = _describe(exc)
                logger.warning("Identity provider %s: cannot fetch its metadata or keys: %s", self.issuer, self.error)
                return
            self._metadata, self._keys, self._fetched_at, self.error = metadata, keys, now, None

    async def _discover(self) -> IssuerMetadata:
        problems: list[str] = []
        for url in discovery_urls(self.issuer):
            try:
                document = await self._get(url)
            except httpx2.HTTPStatusError as exc:
                problems.append(f"{url}: HTTP {exc.response.status_code}")
                continue
            return _metadata(document, self.issuer)
        raise ValueError("no metadata document: " + "; ".join(problems))

    async def _get(self, url: str) -> Any:
        response = await self._client.get(url, headers={"accept": "application/json"}, timeout=FETCH_TIMEOUT)
        response.raise_for_status()
        return response.json()

    def health(self) -> dict[str, Any]:
        """For /healthz: whether keys are at hand and the last fetch worked."""
        return {
            "issuer": self.issuer,
            "ok": bool(self._keys) and self.error is None,  # a JWKS with no usable key verifies nothing
            "keys": len(self._keys or ()),
            "error": self.error,
            "fetches": self.fetches,
        }


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx2.HTTPStatusError):
        return f"{exc.request.url} answered HTTP {exc.response.status_code}"
    if isinstance(exc, httpx2.HTTPError):
        return f"{type(exc).__name__}: {exc}"[:300]
    return str(exc)[:300]
