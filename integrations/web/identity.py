"""Who is looking at the web page: sign-in methods, the session that remembers them, and its CSRF token.

Pages only ever ask `Identities.current(request)`. A sign-in method proves who someone is and calls
`Identities.sign_in`; the approver token is the first method, and an OIDC single sign-on would be a second
one (its redirect and callback routes map the verified subject to an approver name) without a page changing.
The session cookie is signed by Starlette's `SessionMiddleware` and holds only a name, the method and a
CSRF token: never the approver token.
"""

import hmac
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from starlette.requests import Request

from approvals.service import Approver
from integrations.tokens import TokenBook

SESSION_HOURS = 12


@dataclass(frozen=True, slots=True)
class Identity:
    """A signed-in approver and how they proved it ("token"; "oidc" later)."""

    approver: Approver
    method: str


class SignInMethod(Protocol):
    """One way of proving who you are to the web page."""

    name: str

    def identify(self, secret: str) -> Approver | None:
        """The approver `secret` proves, or None."""
        ...


class TokenSignIn:
    """Sign in with the approver token from the config, the same one the API and the CLI take."""

    name = "token"

    def __init__(self, book: TokenBook[Approver]) -> None:
        self.book = book

    def identify(self, secret: str) -> Approver | None:
        secret = secret.strip()
        return self.book.lookup(f"Bearer {secret}") if secret else None


class Identities:
    """Sessions to approvers. A session names an approver; the config, read at each request, says who that is.

    So an approver removed from the config (or moved to another group) is signed out (or changed) at once.
    """

    def __init__(self, approvers: Iterable[Approver]) -> None:
        self.directory: Mapping[str, Approver] = {a.name: a for a in approvers}

    def current(self, request: Request) -> Identity | None:
        name, since = request.session.get("approver"), request.session.get("since")
        approver = self.directory.get(name) if isinstance(name, str) else None
        # The cookie's own signature age restarts whenever the session is rewritten (a flash message does);
        # the sign-in time does not, so a session ends SESSION_HOURS after sign-in whatever happened since.
        if approver is None or not isinstance(since, int | float) or time.time() - since > SESSION_HOURS * 3600:
            return None
        return Identity(approver, str(request.session.get("method", "")))

    def sign_in(self, request: Request, approver: Approver, method: str) -> None:
        # A fresh session (and CSRF token) at every sign-in: nothing from before it carries over.
        request.session.clear()
        request.session.update(
            {"approver": approver.name, "method": method, "since": int(time.time()), "csrf": secrets.token_urlsafe(32)}
        )

    def sign_out(self, request: Request) -> None:
        request.session.clear()


def csrf_token(request: Request) -> str:
    """This session's CSRF token, made on first use (the sign-in form needs one before anyone signed in)."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def csrf_ok(request: Request, submitted: object) -> bool:
    """Whether a form's `csrf` field is this session's token (compared in constant time)."""
    expected = request.session.get("csrf")
    if not isinstance(expected, str) or not isinstance(submitted, str) or not submitted:
        return False
    return hmac.compare_digest(expected.encode(), submitted.encode())
