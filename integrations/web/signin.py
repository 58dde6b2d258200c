"""Signing in and out of the web page. Signing in with the approver token is one `SignInMethod`; another
(OIDC) would add its own routes here and end, like this one, in `Identities.sign_in`.

Failed token sign-ins are throttled (`throttle.py`) and logged with the client's address, never the token.
"""

import logging

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute

from integrations.runtime import runtime
from integrations.web.identity import Identity, TokenSignIn, csrf_ok
from integrations.web.pages import Pages, safe_next
from integrations.web.throttle import Blocked, Scope, SignInThrottle, client_key

logger = logging.getLogger(__name__)


def build_signin_routes(pages: Pages, throttle: SignInThrottle) -> list[BaseRoute]:
    def token_sign_in(request: Request) -> TokenSignIn:
        return TokenSignIn(runtime(request).approvers)

    async def home(request: Request) -> Response:
        return RedirectResponse("/approvals", status_code=303)

    async def login_form(request: Request) -> Response:
        target = safe_next(request.query_params.get("next"))
        if await pages.identities.current(request) is not None:
            return RedirectResponse(target, status_code=303)
        return pages.render(request, "login.html", {"next": target})

    async def login(request: Request) -> Response:
        client = client_key(request.client.host if request.client else None)
        # Refused before the form is even read: while blocked, no token is checked, so guessing learns nothing.
        blocked = throttle.blocked(client)
        if blocked is not None:
            return _too_many(request, pages, blocked)
        form = await request.form()
        raw_next, secret = form.get("next"), form.get("token")
        target = safe_next(raw_next if isinstance(raw_next, str) else None)
        if not csrf_ok(request, form.get("csrf")):
            error = "The sign-in form had expired. Please try again."
            return pages.render(request, "login.html", {"next": target, "error": error}, status_code=403)
        method = token_sign_in(request)
        approver = method.identify(secret) if isinstance(secret, str) else None
        if approver is None:
            # No await between `blocked` above and `failed` here, so concurrent guesses cannot slip past the limit.
            _record_failure(throttle, client)
            error = "That is not an approver token in this signoff's configuration."
            return pages.render(request, "login.html", {"next": target, "error": error}, status_code=401)
        throttle.succeeded(client)
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


def _record_failure(throttle: SignInThrottle, client: str) -> None:
    failures = throttle.failed(client)
    logger.warning(
        "Web sign-in failed from %s: not an approver token (%d of %d failures allowed in %d s)",
        client,
        failures,
        throttle.per_client,
        throttle.window,
    )
    blocked = throttle.blocked(client)
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
