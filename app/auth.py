"""The dependencies that turn a request's token into a :class:`~app.access.Principal`.

Two kinds of token are accepted: admin JWTs from ``POST /v1/config/login`` (checked by
the :class:`TokenIssuer`) and minted ``sct_`` tokens from ``POST /v1/config/tokens``
(checked against the applied token records, :class:`~app.sync.AppliedTokens`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPBearer

from app.access import AccessError, Principal, minted
from app.access.admin_tokens import ALGORITHM, ISSUER, TokenIssuer
from app.sync import TokensNotSynced

__all__ = [
    "ALGORITHM",
    "ISSUER",
    "Admin",
    "CurrentPrincipal",
    "TokenIssuer",
    "request_principal",
    "require_admin",
    "require_admin_or_query_token",
]

#: Who a ``--dev`` instance (no auth at all) says made a request.
DEV_PRINCIPAL = Principal.admin("dev")


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


def _authenticate(request: Request, token: str | None) -> Principal:
    if request.app.state.settings.dev:
        return DEV_PRINCIPAL
    if token is None:
        raise _unauthorized("a token is required: log in at POST /v1/config/login")
    try:
        if minted.looks_minted(token):
            principal: Principal = request.app.state.minted_tokens.authenticate(token)
        else:
            principal = request.app.state.tokens.authenticate(token)
    except TokensNotSynced:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "this instance has not finished its first sync of the minted tokens",
            headers={"Retry-After": "1"},
        ) from None
    except AccessError as refused:
        raise _unauthorized(str(refused)) from None
    return principal


def request_principal(request: Request) -> Principal:
    """The principal of the request's ``Authorization: Bearer`` token (401 without a valid
    one): what :class:`AdminBearer` resolves, for a route that checks it itself."""
    return _authenticate(request, _bearer(request.headers.get("authorization")))


class AdminBearer(HTTPBearer):
    """A valid ``Authorization: Bearer`` token of any role (nothing with ``--dev``);
    returns its principal, whose role and scope the routes then ask.

    A security scheme rather than a plain ``Header`` parameter: OpenAPI shows it (the
    lock in Swagger UI), and reading the header directly keeps FastAPI's per-request
    parameter work off every guarded request.
    """

    def __init__(self) -> None:
        super().__init__(
            description="An admin token from POST /v1/config/login, or a token minted by "
            "POST /v1/config/tokens (sct_<id>.<secret>).",
            auto_error=False,
        )

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        return request_principal(request)


require_admin = AdminBearer()


class AdminBearerOrQueryToken(AdminBearer):
    """Like :class:`AdminBearer`, also taking ``?token=`` (browsers' EventSource cannot set
    headers); the route documents the query parameter."""

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        header = _bearer(request.headers.get("authorization"))
        return _authenticate(request, header or request.query_params.get("token"))


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

CurrentPrincipal = Annotated[Principal, Depends(require_admin)]
"""Who makes the request (the admin user, a token's name, or ``dev``). A route of a
router guarded by :data:`Admin` gets the principal that guard already resolved: FastAPI
runs a dependency once per request."""
