"""Who is looking at the web page: sign-in methods, the session that remembers them, and its CSRF token.

Pages only ever ask `Identities.current(request)`. A sign-in method proves who someone is and calls
`Identities.sign_in`; the approver token is the first method, and an OIDC single sign-on would be a second
one (its redirect and callback routes map the verified subject to an approver name) without a page changing.
The session cookie is signed by Starlette's `SessionMiddleware` and holds only a random session id and a CSRF
token, never the approver token; whether that session still counts is the server's record (`sessions.py`).
"""

import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.engine import Engine
from starlette.requests import Request

from approvals.service import Approver
from integrations.runtime import runtime
from integrations.tokens import TokenBook
from integrations.web.sessions import EndReason, SessionBook


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
    """Sessions to approvers. The cookie names a session, the server's record says whether it still counts, and
    the config says who its approver is.

    So a sign-out ends the session for every copy of its cookie, and an approver removed from the config is
    signed out at once, and stays signed out if they are added back later.
    """

    def __init__(self, approvers: Iterable[Approver], book: SessionBook) -> None:
        self.directory: Mapping[str, Approver] = {a.name: a for a in approvers}
        self.book = book
        self._swept = False

    async def current(self, request: Request) -> Identity | None:
        """Who this request's cookie signs in, looked up once per request."""
        if not hasattr(request.state, "identity"):
            request.state.identity = await self._look_up(request)
        identity: Identity | None = request.state.identity
        return identity

    @staticmethod
    def looked_up(request: Request) -> Identity | None:
        """`current`'s answer for this request, without another lookup (None if it was never asked)."""
        identity: Identity | None = getattr(request.state, "identity", None)
        return identity

    async def sign_in(self, request: Request, approver: Approver, method: str) -> None:
        await self._end(request, EndReason.SIGNED_OUT)  # the session this browser had, if any
        session_id = await self.book.start(_engine(request), approver.name, method)
        # A fresh session (and CSRF token) at every sign-in: nothing from before it carries over.
        request.session.clear()
        request.session.update({"sid": session_id, "csrf": secrets.token_urlsafe(32)})
        request.state.identity = Identity(approver, method)

    async def sign_out(self, request: Request) -> None:
        await self._end(request, EndReason.SIGNED_OUT)
        request.session.clear()
        request.state.identity = None

    async def _look_up(self, request: Request) -> Identity | None:
        session_id = request.session.get("sid")
        if not isinstance(session_id, str):
            return None
        engine = _engine(request)
        if not self._swept:
            # Once per process, on first use (the engine exists only once the app has started): approvers this
            # config no longer names lose their sessions for good, on every replica.
            await self.book.end_all_but(engine, self.directory.keys())
            self._swept = True
        found = await self.book.find(engine, session_id)
        approver = self.directory.get(found.approver) if found is not None else None
        if found is None or approver is None:
            del request.session["sid"]  # the browser may as well forget it
            return None
        return Identity(approver, found.method)

    async def _end(self, request: Request, reason: EndReason) -> None:
        session_id = request.session.get("sid")
        if isinstance(session_id, str):
            await self.book.end(_engine(request), session_id, reason)


def _engine(request: Request) -> Engine:
    return runtime(request).database


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
