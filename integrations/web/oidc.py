"""Single sign-on for approvers: OpenID Connect's authorization code flow with PKCE (S256), `state` and `nonce`.

`GET /login/oidc` sends the browser to the provider; `GET /login/oidc/callback` takes the code back, exchanges it,
validates the ID token as agents' access tokens are (integrations/oauth: signature, iss, aud = client_id, exp,
and the nonce this sign-in sent), and signs in the `[[approvers]]` entry its `approver_claim` names, like the
token sign-in, through `Identities.sign_in`. What a sign-in has in flight (state, nonce, PKCE verifier) lives in
the signed session cookie and is used once.
"""

import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import httpx2
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute

from approvals.service import Approver
from integrations.errors import IntegrationError, InvalidToken, IssuerUnavailable
from integrations.oauth import Issuer, IssuerMetadata, verify_jwt
from integrations.oauth.validation import claim_strings
from integrations.runtime import runtime
from integrations.settings import OidcSettings
from integrations.web.identity import with_groups
from integrations.web.pages import Pages, safe_next

__all__ = ["OidcSignIn", "SignInRefused", "build_oidc_routes"]

logger = logging.getLogger(__name__)

CALLBACK = "/login/oidc/callback"
SIGN_IN_WINDOW = 600.0  # seconds a person has at the provider's login page before the sign-in must start again
METHOD = "oidc"


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class SignInRefused(IntegrationError, PermissionError):
    """Raised when a single sign-on callback cannot sign anyone in; carries the page the person is shown."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


class OidcSignIn:
    """The provider's side of sign-in; the issuer is made on first use, with the app's identity HTTP client."""

    def __init__(self, settings: OidcSettings, public_url: str | None, clock: Callable[[], float]) -> None:
        self.settings = settings
        self._public_url = public_url.rstrip("/") if public_url else None
        self._clock = clock
        self._issuer: Issuer | None = None

    def issuer(self, request: Request) -> Issuer:
        if self._issuer is None:
            client = runtime(request).identity_client
            self._issuer = Issuer(self.settings.issuer, client, clock=self._clock)
        return self._issuer

    def redirect_uri(self, request: Request) -> str:
        base = self._public_url or str(request.base_url).rstrip("/")
        return base + CALLBACK

    async def start(self, request: Request, target: str) -> str:
        """The provider's authorization URL for a new sign-in, remembered in the session."""
        metadata = await self.issuer(request).metadata()
        if metadata.authorization_endpoint is None or metadata.token_endpoint is None:
            raise IssuerUnavailable(self.settings.issuer, "its metadata names no authorization or token endpoint")
        state, nonce, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(64)
        request.session["oidc"] = {
            "state": state,
            "nonce": nonce,
            "verifier": verifier,
            "next": target,
            "started": self._clock(),
        }
        query = {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": self.redirect_uri(request),
            "scope": " ".join(self.settings.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": _challenge(verifier),
            "code_challenge_method": "S256",
        }
        separator = "&" if "?" in metadata.authorization_endpoint else "?"
        return f"{metadata.authorization_endpoint}{separator}{urlencode(query)}"

    async def finish(self, request: Request, directory: dict[str, Approver]) -> tuple[Approver, frozenset[str], str]:
        """The approver this callback signs in, the groups the provider gives them, and where they go next.

        Raises:
            SignInRefused: the state is missing or wrong, the provider said no, the ID token is invalid, or it names
                nobody in `[[approvers]]`.
        """
        pending = request.session.pop("oidc", None)
        params = request.query_params
        if not isinstance(pending, dict) or not isinstance(pending.get("state"), str):
            raise SignInRefused(
                400, "Sign-in not started here", "This sign-in was not started from this browser, or was already used."
            )
        state = params.get("state", "")
        if not hmac.compare_digest(state.encode(), str(pending["state"]).encode()):
            raise SignInRefused(
                400,
                "Sign-in could not be checked",
                "The answer from the identity provider does not belong to the sign-in this browser started (its"
                " state does not match). Nothing was signed in: start again.",
            )
        if self._clock() - float(pending.get("started", 0)) > SIGN_IN_WINDOW:
            raise SignInRefused(400, "Sign-in took too long", "This sign-in was started too long ago: start again.")
        if "error" in params:
            described = params.get("error_description") or params["error"]
            raise SignInRefused(
                401, "The identity provider refused", f"The identity provider did not sign you in: {described}"
            )
        code = params.get("code")
        if not code:
            raise SignInRefused(
                400, "Sign-in could not be checked", "The identity provider sent no authorization code."
            )
        issuer = self.issuer(request)
        metadata = await issuer.metadata()
        tokens = await self._exchange(request, metadata, code, str(pending["verifier"]))
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise SignInRefused(502, "Sign-in failed", "The identity provider sent no ID token.")
        try:
            claims = await verify_jwt(
                id_token, issuer, audiences=(self.settings.client_id,), now=self._clock(), nonce=str(pending["nonce"])
            )
        except InvalidToken as exc:
            logger.warning("Web sign-in (oidc) refused: %s", exc.detail)
            raise SignInRefused(
                401, "Sign-in could not be checked", f"The identity provider's ID token is invalid: {exc.detail}."
            ) from exc
        azp = claims.get("azp")
        if isinstance(claims.get("aud"), list) and len(claims["aud"]) > 1 and azp != self.settings.client_id:
            raise SignInRefused(401, "Sign-in could not be checked", "The ID token was issued to another client (azp).")
        claims = await self._with_userinfo(request, metadata, claims, tokens.get("access_token"))
        name = claims.get(self.settings.approver_claim)
        if not isinstance(name, str) or not name:
            raise SignInRefused(
                403,
                "Not an approver",
                f"The identity provider did not say who you are ({self.settings.approver_claim}).",
            )
        approver = directory.get(name)
        if approver is None:
            logger.warning("Web sign-in (oidc) refused: %r is not in [[approvers]]", name)
            raise SignInRefused(
                403,
                "Not an approver",
                f"You signed in at the identity provider as {name!r}, but this signoff has no approver of that name,"
                " so you cannot see or decide approval requests here. Ask an administrator to add you to"
                " [[approvers]].",
            )
        groups = claim_strings(claims.get(self.settings.groups_claim)) if self.settings.groups_claim else frozenset()
        return approver, groups, safe_next(pending.get("next"))

    async def _exchange(self, request: Request, metadata: IssuerMetadata, code: str, verifier: str) -> dict[str, Any]:
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri(request),
            "code_verifier": verifier,
            "client_id": self.settings.client_id,
        }
        secret = self.settings.client_secret.get_secret_value() if self.settings.client_secret else None
        auth: httpx2.BasicAuth | None = None
        if secret is not None:
            methods = metadata.token_auth_methods
            if methods and "client_secret_basic" not in methods and "client_secret_post" in methods:
                data["client_secret"] = secret
            else:  # the default (RFC 6749 section 2.3.1, OpenID Connect Discovery)
                auth = httpx2.BasicAuth(quote(self.settings.client_id, safe=""), quote(secret, safe=""))
        client = runtime(request).identity_client
        token_endpoint = metadata.token_endpoint or ""
        try:
            headers = {"accept": "application/json"}
            use = auth if auth is not None else httpx2.USE_CLIENT_DEFAULT
            response = await client.post(token_endpoint, data=data, headers=headers, auth=use)
            body = response.json()
        except (httpx2.HTTPError, ValueError) as exc:
            raise IssuerUnavailable(self.settings.issuer, f"its token endpoint failed: {type(exc).__name__}") from exc
        if response.status_code != 200 or not isinstance(body, dict):
            error = body.get("error_description") or body.get("error") if isinstance(body, dict) else None
            raise SignInRefused(
                401,
                "Sign-in failed",
                f"The identity provider did not accept the sign-in: {error or response.status_code}.",
            )
        return body

    async def _with_userinfo(
        self, request: Request, metadata: IssuerMetadata, claims: dict[str, Any], access_token: Any
    ) -> dict[str, Any]:
        """The ID token's claims, with the userinfo endpoint's when the approver claim is not among them (providers
        may keep profile claims out of the ID token of a code flow). The userinfo `sub` must be the ID token's."""
        wanted = [self.settings.approver_claim, *([self.settings.groups_claim] if self.settings.groups_claim else [])]
        if all(c in claims for c in wanted) or metadata.userinfo_endpoint is None or not isinstance(access_token, str):
            return claims
        client = runtime(request).identity_client
        try:
            response = await client.get(metadata.userinfo_endpoint, headers={"authorization": f"Bearer {access_token}"})
            info = response.json()
        except (httpx2.HTTPError, ValueError) as exc:
            raise IssuerUnavailable(
                self.settings.issuer, f"its userinfo endpoint failed: {type(exc).__name__}"
            ) from exc
        if response.status_code != 200 or not isinstance(info, dict) or info.get("sub") != claims.get("sub"):
            raise SignInRefused(
                401, "Sign-in could not be checked", "The identity provider's userinfo is not about you."
            )
        return {**info, **claims}


def build_oidc_routes(pages: Pages, sign_in: OidcSignIn) -> list[BaseRoute]:
    def unavailable(request: Request, exc: IssuerUnavailable) -> Response:
        return pages.refuse(
            request, 503, "Single sign-on is unavailable", f"signoff cannot reach {exc.issuer} now: try again shortly."
        )

    async def login(request: Request) -> Response:
        target = safe_next(request.query_params.get("next"))
        try:
            url = await sign_in.start(request, target)
        except IssuerUnavailable as exc:
            logger.warning("Web sign-in (oidc) cannot start: %s", exc)
            return unavailable(request, exc)
        return RedirectResponse(url, status_code=303)

    async def callback(request: Request) -> Response:
        client = request.client.host if request.client else "?"
        try:
            listed, groups, target = await sign_in.finish(request, dict(pages.identities.directory))
        except SignInRefused as refused:
            return pages.refuse(request, refused.status, refused.title, refused.message)
        except IssuerUnavailable as exc:
            logger.warning("Web sign-in (oidc) cannot finish: %s", exc)
            return unavailable(request, exc)
        approver = with_groups(listed, groups)
        await pages.identities.sign_in(request, approver, METHOD)
        request.session["groups"] = sorted(groups)  # the provider's, for this session; the config's are looked up
        logger.info("Web sign-in: %s (%s) from %s", approver.name, METHOD, client)
        return RedirectResponse(target, status_code=303)

    return [
        pages.route("/login/oidc", login, name="login_oidc"),
        pages.route(CALLBACK, callback, name="login_oidc_callback"),
    ]
