"""Validating a JWT from an issuer: signature (PyJWT), algorithm, issuer, audience, lifetime, and a nonce if asked.

The errors it raises say what was wrong in words of its own, never the token, and never a claim's value (a
value an attacker chose would otherwise travel into a response header).
"""

from collections.abc import Collection
from typing import Any

import jwt

from integrations.errors import InvalidToken
from integrations.oauth.issuer import Issuer

LEEWAY = 30.0  # seconds of clock skew allowed between signoff and the identity provider, for exp, nbf and iat


def looks_like_jwt(token: str) -> bool:
    """Whether `token` has a JWS's compact shape (three dot-separated parts, the last empty for `alg: none`, which
    is then refused by name); an opaque token has not."""
    parts = token.split(".")
    return len(parts) == 3 and all(parts[:2])


async def verify_jwt(
    token: str,
    issuer: Issuer,
    *,
    audiences: Collection[str],
    now: float,
    nonce: str | None = None,
    leeway: float = LEEWAY,
) -> dict[str, Any]:
    """The claims of `token`, once it is proved to be signed by `issuer`, for one of `audiences`, and current.

    Raises:
        InvalidToken: it is not a JWT, is signed with an algorithm signoff does not accept or with a key the
            issuer does not publish, its signature does not verify, or its iss, aud, exp, nbf or nonce are wrong.
        IssuerUnavailable: the issuer's keys cannot be fetched, so the token cannot be checked now.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError as exc:
        raise InvalidToken("the token is not a well-formed JWT") from exc
    alg = header.get("alg")
    metadata = await issuer.metadata()
    if not isinstance(alg, str) or alg not in metadata.algorithms:
        accepted = ", ".join(sorted(metadata.algorithms))
        raise InvalidToken(f"the token's signing algorithm is not one signoff accepts ({accepted})")
    kid = header.get("kid")
    key = await issuer.key(kid if isinstance(kid, str) else None)
    if key.alg is not None and key.alg != alg:
        raise InvalidToken("the token's algorithm is not the one its key is published for")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[alg],
            audience=list(audiences),
            issuer=issuer.issuer,
            # Lifetime is checked below, on signoff's clock (tests pass their own), with the same leeway.
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "require": ["iss", "aud", "exp"]},
        )
    except jwt.InvalidSignatureError as exc:
        raise InvalidToken("the token's signature does not verify") from exc
    except jwt.InvalidAudienceError as exc:
        raise InvalidToken(f"the token was not issued for {' or '.join(sorted(audiences))}") from exc
    except jwt.InvalidIssuerError as exc:
        raise InvalidToken(f"the token was not issued by {issuer.issuer}") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidToken(f"the token has no {exc.claim} claim") from exc
    except (jwt.InvalidTokenError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
        raise InvalidToken("the token cannot be verified") from exc
    _check_lifetime(claims, now, leeway)
    if nonce is not None and claims.get("nonce") != nonce:
        raise InvalidToken("the ID token's nonce is not the one this sign-in sent")
    return claims


def _check_lifetime(claims: dict[str, Any], now: float, leeway: float) -> None:
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise InvalidToken("the token's exp claim is not a number")
    if now > exp + leeway:
        raise InvalidToken("the token has expired")
    if nbf is not None:
        if not _number(nbf):
            raise InvalidToken("the token's nbf claim is not a number")
        if now + leeway < nbf:
            raise InvalidToken("the token is not valid yet")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def claim_strings(value: Any) -> frozenset[str]:
    """A claim's values (groups, scopes): a list of strings, or one space-separated string; anything else gives none."""
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()
