"""Admin login, signed tokens, and the dependency that guards the API."""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Annotated

import jwt
from fastapi import Depends, Header, HTTPException, Query, Request, status

ALGORITHM = "HS256"
ISSUER = "space-cloud"


class TokenIssuer:
    """Checks the admin credentials and signs and verifies tokens with the admin secret."""

    def __init__(self, user: str, password: str | None, secret: str | None, ttl_seconds: int):
        self.user = user
        self.password = password
        # Without a configured secret (local mode) tokens live as long as this process.
        self.secret = secret or secrets.token_urlsafe(32)
        self.ttl_seconds = ttl_seconds

    def credentials_match(self, user: str, password: str) -> bool:
        if self.password is None:
            return False
        user_ok = hmac.compare_digest(user.encode(), self.user.encode())
        pass_ok = hmac.compare_digest(password.encode(), self.password.encode())
        return user_ok and pass_ok

    def issue(self, user: str) -> tuple[str, int]:
        now = int(time.time())
        expires = now + self.ttl_seconds
        claims = {"sub": user, "role": "admin", "iss": ISSUER, "iat": now, "exp": expires}
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM), expires

    def verify(self, token: str) -> dict:
        """The token's claims; raises ``jwt.InvalidTokenError`` when it is not valid."""
        return jwt.decode(
            token,
            self.secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub"]},
        )


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"}
    )


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def _check(request: Request, token: str | None) -> None:
    if request.app.state.settings.dev:
        return
    if token is None:
        raise _unauthorized("a token is required: log in at POST /v1/config/login")
    try:
        request.app.state.tokens.verify(token)
    except jwt.ExpiredSignatureError:
        raise _unauthorized("the token has expired: log in again") from None
    except jwt.InvalidTokenError:
        raise _unauthorized("the token is not valid") from None


async def require_admin(
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    """A valid ``Authorization: Bearer`` token (nothing with ``--dev``)."""
    _check(request, _bearer(authorization))


async def require_admin_or_query_token(
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    token: Annotated[
        str | None,
        Query(description="The token, for clients that cannot set headers (EventSource)."),
    ] = None,
) -> None:
    """Like :func:`require_admin`, also taking ``?token=`` (browsers' EventSource)."""
    _check(request, _bearer(authorization) or token)


Admin = Depends(require_admin)
