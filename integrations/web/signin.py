"""Signing in and out of the web page. Signing in with the approver token is one `SignInMethod`; another
(OIDC) would add its own routes here and end, like this one, in `Identities.sign_in`.
"""

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute

from approvals.service import Approver
from integrations.tokens import TokenBook
from integrations.web.identity import Identity, TokenSignIn, csrf_ok
from integrations.web.pages import Pages, safe_next


def build_signin_routes(pages: Pages) -> list[BaseRoute]:
    def token_sign_in(request: Request) -> TokenSignIn:
        book: TokenBook[Approver] = request.app.state.approvers
        return TokenSignIn(book)

    async def home(request: Request) -> Response:
        return RedirectResponse("/approvals", status_code=303)

    async def login_form(request: Request) -> Response:
        target = safe_next(request.query_params.get("next"))
        if await pages.identities.current(request) is not None:
            return RedirectResponse(target, status_code=303)
        return pages.render(request, "login.html", {"next": target})

    async def login(request: Request) -> Response:
        form = await request.form()
        raw_next, secret = form.get("next"), form.get("token")
        target = safe_next(raw_next if isinstance(raw_next, str) else None)
        if not csrf_ok(request, form.get("csrf")):
            error = "The sign-in form had expired. Please try again."
            return pages.render(request, "login.html", {"next": target, "error": error}, status_code=403)
        method = token_sign_in(request)
        approver = method.identify(secret) if isinstance(secret, str) else None
        if approver is None:
            error = "That is not an approver token in this signoff's configuration."
            return pages.render(request, "login.html", {"next": target, "error": error}, status_code=401)
        await pages.identities.sign_in(request, approver, method.name)
        return RedirectResponse(target, status_code=303)

    async def logout(request: Request, identity: Identity) -> Response:
        await pages.identities.sign_out(request)
        request.session["flash"] = "You are signed out."
        return RedirectResponse("/login", status_code=303)

    return [
        pages.route("/", home, name="home"),
        pages.route("/login", login_form, name="login"),
        pages.route("/login", login, post=True),
        pages.route("/logout", pages.form(logout), name="logout", post=True),
    ]
