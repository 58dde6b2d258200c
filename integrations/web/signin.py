"""Signing in and out of the web page. Signing in with the approver token is one `SignInMethod` (and can be
switched off: `[web] token_login = false`); single sign-on (`oidc.py`) has its own routes and ends, like this one,
in `Identities.sign_in`.

Failed token sign-ins are throttled (`throttle.py`) and logged with the client's address, never the token.
"""

import logging
from collections.abc import Awaitable

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute

from integrations.runtime import runtime
from integrations.web.failures import SignInStoreDown
from integrations.web.identity import Identity, TokenSignIn, csrf_ok
from integrations.web.pages import Pages, safe_next
from integrations.web.throttle import Attempt, Blocked, Scope, SignInThrottle, client_key

logger = logging.getLogger(__name__)


def build_signin_routes(pages: Pages, *, token_login: bool = True, sso: bool = False) -> list[BaseRoute]:
    """The sign-in and sign-out routes; `token_login` allows the approver token, `sso` offers `/login/oidc`."""
    methods = {"token_login": token_login, "sso": sso}

    def token_sign_in(request: Request) -> TokenSignIn:
        return TokenSignIn(runtime(request).approvers)

    async def home(request: Request) -> Response:
        return RedirectResponse("/approvals", status_code=303)

    async def login_form(request: Request) -> Response:
        target = safe_next(request.query_params.get("next"))
        if await pages.identities.current(request) is not None:
            return RedirectResponse(target, status_code=303)
        return pages.render(request, "login.html", {"next": target, **methods})

    async def login(request: Request) -> Response:
        if not token_login:
            return pages.refuse(
                request,
                403,
                "Token sign-in is off",
                "This signoff takes no approver tokens on the web page: sign in with single sign-on.",
            )
        client = client_key(request.client.host if request.client else None)
        throttle = runtime(request).sign_ins
        if throttle is None:
            raise RuntimeError("the sign-in throttle is built in the lifespan")
        # Refused before the form is even read: while blocked, no token is checked, so guessing learns nothing.
        try:
            attempt = await throttle.begin(client)
        except SignInStoreDown as exc:  # fail closed: an uncounted guess is what the throttle is there to stop
            logger.error("Web sign-in refused for %s: %s", client, exc)
            return pages.refuse(
                request,
                503,
                "Sign-in is unavailable",
                "signoff cannot reach the store that counts failed sign-ins, so it signs nobody in for now. "
                "Try again shortly; sessions already signed in keep working.",
            )
        if isinstance(attempt, Blocked):
            return _too_many(request, pages, attempt)
        form = await request.form()
        raw_next, secret = form.get("next"), form.get("token")
        target = safe_next(raw_next if isinstance(raw_next, str) else None)
        if not csrf_ok(request, form.get("csrf")):
            await _settle(throttle.withdrawn(attempt))
            error = "The sign-in form had expired. Please try again."
            context = {"next": target, "error": error, **methods}
            return pages.render(request, "login.html", context, status_code=403)
        method = token_sign_in(request)
        approver = method.identify(secret) if isinstance(secret, str) else None
        if approver is None:
            # Counted as a failure since `begin`, so concurrent guesses on any replica cannot slip past the limit.
            _record_failure(throttle, attempt)
            error = "That is not an approver token in this signoff's configuration."
            context = {"next": target, "error": error, **methods}
            return pages.render(request, "login.html", context, status_code=401)
        await _settle(throttle.succeeded(attempt))
        await pages.identities.sign_in(request, approver, method.name)
        logger.info("Web sign-in: %s (%s) from %s", approver.name, method.name, client)
        return RedirectResponse(target, status_code=303)

    async def logout(request: Request, identity: Identity) -> Response:
        await pages.identities.sign_out(request)
        logger.info("Web sign-out: %s", identity.approver.name)
        request.session["flash"] = "You are signed out."
        return RedirectResponse("/login", status_code=303)

    return [
        pages.route("/", home, name="home"),
        pages.route("/login", login_form, name="login"),
        pages.route("/login", login, post=True),
        pages.route("/logout", pages.form(logout), name="logout", post=True),
    ]


async def _settle(settling: Awaitable[None]) -> None:
    try:
        await settling
    except SignInStoreDown as exc:  # the attempt stays counted as a failure: the safe side
        logger.warning("Web sign-in: %s; an attempt stays counted as failed", exc)


def _record_failure(throttle: SignInThrottle, attempt: Attempt) -> None:
    client = attempt.client
    logger.warning(
        "Web sign-in failed from %s: not an approver token (%d of %d failures allowed in %d s)",
        client,
        attempt.failures,
        throttle.per_client,
        throttle.window,
    )
    blocked = attempt.blocks
    if blocked is not None:
        whose = "its own" if blocked.scope == Scope.CLIENT else "the page-wide"
        logger.warning(
            "Web sign-in: %s reached %s limit of failures; its sign-ins are refused unchecked and unlogged for %d s",
            client,
            whose,
            blocked.retry_after,
        )


def _too_many(request: Request, pages: Pages, blocked: Blocked) -> Response:
    wait = _duration(blocked.retry_after)
    if blocked.scope == Scope.CLIENT:
        error = f"Too many failed sign-ins from your address. Sign-in is paused for it: try again in {wait}."
    else:
        error = (
            f"Too many failed sign-ins to this signoff recently, so sign-in is paused: try again in {wait}. "
            "Sessions already signed in keep working."
        )
    context = {"next": "/approvals", "error": error}
    response = pages.render(request, "login.html", context, status_code=429)
    response.headers["retry-after"] = str(blocked.retry_after)
    return response


def _duration(seconds: int) -> str:
    """ "4 min 10 s", "40 s": how long to wait, as a person reads it."""
    minutes, rest = divmod(seconds, 60)
    if not minutes:
        return f"{rest} s"
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"
