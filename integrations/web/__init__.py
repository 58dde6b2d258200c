"""The web page: sign in, decide approval requests, read and export the audit log.

`build_web_routes(settings)` gives the routes `app.py` mounts. Each page route carries its own session and
security-header middleware, so `/mcp` and the JSON API never pay for cookies they do not use.
"""

import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from approvals.service import Approver
from integrations.settings import Settings
from integrations.web.auditlog import build_audit_routes
from integrations.web.decisions import build_decision_routes
from integrations.web.identity import Identities
from integrations.web.oidc import OidcSignIn, build_oidc_routes
from integrations.web.pages import Pages, SecurityHeaders
from integrations.web.sessions import SESSION_HOURS, SessionBook
from integrations.web.signin import build_signin_routes

__all__ = ["build_web_routes"]

logger = logging.getLogger(__name__)
SESSION_COOKIE = "signoff_session"


def build_web_routes(settings: Settings, *, clock: Callable[[], float] = time.time) -> list[BaseRoute]:
    """The page routes and their static files, each page behind a signed session cookie.

    `clock` is the one sessions age and failed sign-ins are counted on; tests pass their own.
    """
    configured = settings.web.session_secret
    if configured is None:
        logger.warning(
            "[web] session_secret is not set: using a random one for this process, so web sign-ins end when "
            "signoff restarts and do not carry across replicas. Set it to a long random string."
        )
    secret = configured.get_secret_value() if configured is not None else secrets.token_urlsafe(32)
    middleware = [
        Middleware(
            SessionMiddleware,
            secret_key=secret,
            session_cookie=SESSION_COOKIE,
            max_age=SESSION_HOURS * 3600,
            same_site="lax",
            https_only=settings.gateway.base_url.startswith("https://"),
        ),
        Middleware(SecurityHeaders),
    ]
    approvers = (Approver(a.name, a.groups) for a in settings.approvers)
    pages = Pages(Identities(approvers, SessionBook(clock)), middleware)
    static = StaticFiles(directory=Path(__file__).parent / "static")
    oidc = settings.web.oidc
    sso = build_oidc_routes(pages, OidcSignIn(oidc, settings.gateway.public_url, clock)) if oidc else []
    return [
        *build_signin_routes(pages, token_login=settings.web.token_login, sso=bool(sso)),
        *sso,
        *build_decision_routes(pages),
        *build_audit_routes(pages),
        Mount("/static", app=static, name="static"),
    ]
