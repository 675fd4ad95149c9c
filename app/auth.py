"""Admin login, signed tokens, and the dependency that guards the API."""

from __future__ import annotations

import hmac
import secrets
import time

import jwt
from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPBearer
from starlette.requests import HTTPConnection

ALGORITHM = "HS256"
ISSUER = "space-cloud"
#: Verified tokens remembered (oldest forgotten first).
VERIFIED_CACHE_SIZE = 1024


class TokenIssuer:
    """Checks the admin credentials and signs and verifies tokens with the admin secret."""

    def __init__(self, user: str, password: str | None, secret: str | None, ttl_seconds: int):
        self.user = user
        self.password = password
        # Without a configured secret (local mode) tokens live as long as this process.
        self.secret = secret or secrets.token_urlsafe(32)
        self.ttl_seconds = ttl_seconds
        self._verified: dict[str, dict] = {}

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
        """The token's claims; raises ``jwt.InvalidTokenError`` when it is not valid.

        A token verified once is remembered until it expires, so the signature check is
        paid once per token rather than once per request.
        """
        claims = self._verified.get(token)
        if claims is not None and claims["exp"] > time.time():
            return claims
        claims = jwt.decode(
            token,
            self.secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub"]},
        )
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = claims
        return claims


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


def _check(request: HTTPConnection, token: str | None) -> None:
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


class AdminBearer(HTTPBearer):
    """A valid ``Authorization: Bearer`` token (nothing with ``--dev``).

    A security scheme rather than a plain ``Header`` parameter: OpenAPI shows it (the
    lock in Swagger UI), and reading the header directly keeps FastAPI's per-request
    parameter work off every guarded request.
    """

    def __init__(self) -> None:
        super().__init__(
            bearerFormat="JWT",
            description="A token from POST /v1/config/login.",
            auto_error=False,
        )

    async def __call__(self, request: HTTPConnection) -> None:
        _check(request, _bearer(request.headers.get("authorization")))


require_admin = AdminBearer()


class AdminBearerOrQueryToken(AdminBearer):
    """Like :class:`AdminBearer`, also taking ``?token=`` (browsers' EventSource cannot set
    headers); the route documents the query parameter."""

    async def __call__(self, request: HTTPConnection) -> None:
        header = _bearer(request.headers.get("authorization"))
        _check(request, header or request.query_params.get("token"))


require_admin_or_query_token = AdminBearerOrQueryToken()

#: OpenAPI description of ``?token=`` for the routes that take it.
TOKEN_QUERY_PARAMETER = {
    "name": "token",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": "The token, for clients that cannot set headers (EventSource).",
}

Admin = Depends(require_admin)
