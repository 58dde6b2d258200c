"""What every web page shares: the templates, the signed-in check, the CSRF check, flash messages, headers.

Pages are server-rendered Jinja2 with autoescaping on, so a tool argument, a reason or a rule shows as text,
never as markup. This module decides nothing about approvals; the route modules call the approval engine.
"""

import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from approvals.engine import ApprovalEngine
from approvals.service import as_utc
from approvals.summary import ago, one_line
from integrations.runtime import runtime
from integrations.web.identity import Identities, Identity, csrf_ok, csrf_token

HERE = Path(__file__).parent
_APPROVAL = re.compile(r"approval ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b")
Handler = Callable[[Request, Identity], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]

# No inline script or style anywhere, so the policy can forbid both; no framing, so nobody can overlay the
# Approve button on their own page (clickjacking).
_SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


class SecurityHeaders:
    """Adds the pages' security headers to every response of the routes it wraps."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def when(moment: datetime | str | None) -> str:
    """A moment as people read it on the page: UTC, to the second."""
    if moment is None:
        return ""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return as_utc(moment).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(moment: datetime | str | None) -> str:
    if moment is None:
        return ""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return as_utc(moment).astimezone(UTC).isoformat()


def time_left(deadline: datetime | str, now: datetime) -> str:
    """ "4 min 12 s left", as the countdown shows it before its script takes over."""
    if isinstance(deadline, str):
        deadline = datetime.fromisoformat(deadline)
    seconds = int((as_utc(deadline) - now).total_seconds())
    if seconds <= 0:
        return "deadline passed"
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min left"
    if minutes:
        return f"{minutes} min {seconds} s left"
    return f"{seconds} s left"


def age(moment: datetime | str, now: datetime) -> str:
    """ "3 min ago": how long a request has waited."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return ago(as_utc(moment), now)


def approval_id(detail: str) -> str:
    """The approval request an audit row's detail names ("approval <id>: ..."), or ""."""
    match = _APPROVAL.match(detail)
    return match.group(1) if match else ""


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only, never another site (an open redirect)."""
    # Browsers drop tabs and newlines inside URLs and read a backslash as a slash, so "/\t/evil" is "//evil".
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(c < " " or c == "\x7f" for c in target)
    ):
        return "/approvals"
    return target


class Pages:
    """Renders templates for the route modules and guards their endpoints."""

    def __init__(self, identities: Identities, middleware: Sequence[Middleware] = ()) -> None:
        self.identities = identities
        self.middleware = list(middleware)
        self.templates = Jinja2Templates(directory=HERE / "templates")
        self.templates.env.filters.update(when=when, iso=iso, approval_id=approval_id)
        self.templates.env.globals.update(time_left=time_left, age=age)
        self.templates.env.filters.update(one_line=one_line)

    def route(self, path: str, endpoint: Endpoint, *, name: str | None = None, post: bool = False) -> Route:
        """A page route, wrapped in the session and security-header middleware."""
        methods = ["POST"] if post else ["GET"]
        return Route(path, endpoint, methods=methods, name=name, middleware=self.middleware)

    @staticmethod
    def approvals(request: Request) -> ApprovalEngine:
        return runtime(request).approvals

    def render(
        self,
        request: Request,
        template: str,
        context: dict[str, Any] | None = None,
        *,
        status_code: int = 200,
        identity: Identity | None = None,
    ) -> Response:
        # A fragment fetched by a page's script must not take the flash meant for the next full page.
        flash = None if template.startswith("_") else request.session.pop("flash", None)
        return self.templates.TemplateResponse(
            request,
            template,
            {
                "identity": identity,
                "csrf": csrf_token(request),
                "flash": flash,
                "now": datetime.now(UTC),
                **(context or {}),
            },
            status_code=status_code,
        )

    def refuse(self, request: Request, status_code: int, title: str, message: str) -> Response:
        identity = self.identities.looked_up(request)
        context = {"title": title, "message": message}
        return self.render(request, "error.html", context, status_code=status_code, identity=identity)

    def page(self, handler: Handler) -> Endpoint:
        """A page that needs a signed-in approver: without one, GET goes to sign-in and anything else is refused."""

        async def endpoint(request: Request) -> Response:
            identity = await self.identities.current(request)
            if identity is None:
                if request.method in ("GET", "HEAD"):
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
                return self.refuse(request, 403, "Sign in first", "You are not signed in, so nothing was changed.")
            return await handler(request, identity)

        return endpoint

    def fragment(self, handler: Handler) -> Endpoint:
        """A piece of a page that its script fetches: a plain 401 without a session, so the script can say so."""

        async def endpoint(request: Request) -> Response:
            identity = await self.identities.current(request)
            if identity is None:
                return PlainTextResponse("Your session has ended: sign in again.", status_code=401)
            return await handler(request, identity)

        return endpoint

    def form(self, handler: Handler) -> Endpoint:
        """A form's POST: it needs a signed-in approver and this session's CSRF token, or nothing happens."""

        async def checked(request: Request, identity: Identity) -> Response:
            form = await request.form()
            if not csrf_ok(request, form.get("csrf")):
                return self.refuse(
                    request,
                    403,
                    "The form could not be checked",
                    "The form's security token is missing or does not match your session (it may be from an "
                    "old page or another site). Nothing was changed: reload the page and try again.",
                )
            return await handler(request, identity)

        return self.page(checked)
