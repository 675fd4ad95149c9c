"""``POST /v1/config/login``: admin credentials for a signed token, failures limited."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, status

from app.access.limiter import LoginLimiter
from app.api.bodies import limited_body_route
from app.api.errors import documented
from app.models import Credentials, ErrorBody, Token

#: A user name and a password: a body much longer is not a login (and the route is open
#: to anyone, so it must not buffer whatever it is sent).
MAX_BODY_BYTES = 4 * 1024

router = APIRouter(
    tags=["auth"],
    route_class=limited_body_route(MAX_BODY_BYTES, f"the body is over {MAX_BODY_BYTES} bytes"),
)

#: The key for a client whose socket address the server does not know.
UNKNOWN_CLIENT = "unknown"

_TOO_MANY: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorBody,
        "description": "Too many failed logins from this address (see Retry-After)",
        "headers": {
            "Retry-After": {
                "description": "Seconds until this address may try again.",
                "schema": {"type": "integer"},
            }
        },
    }
}


def client_address(request: Request) -> str:
    """The socket peer's address: behind a proxy, X-Forwarded-For only when uvicorn is
    told to trust that proxy (``--proxy-headers`` / ``FORWARDED_ALLOW_IPS``)."""
    return request.client.host if request.client else UNKNOWN_CLIENT


@router.post(
    "/v1/config/login",
    response_model=Token,
    responses={
        **documented(400, 401, 422),
        413: {"model": ErrorBody, "description": f"Body over {MAX_BODY_BYTES} bytes"},
        **_TOO_MANY,
    },
    summary="Log in as the admin; returns a bearer token",
    description="After a few failed logins from one address, further attempts are "
    "answered 429 with Retry-After, for longer while failures go on; a success resets it.",
)
async def login(credentials: Credentials, request: Request) -> Token:
    tokens = request.app.state.tokens
    if not request.app.state.settings.dev:
        _check_credentials(request, credentials)
    token, expires = tokens.issue(credentials.user)
    return Token(token=token, expiresAt=expires)


def _check_credentials(request: Request, credentials: Credentials) -> None:
    limiter: LoginLimiter = request.app.state.login_limiter
    client = client_address(request)
    if (retry_after := limiter.retry_after(client)) is not None:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many failed logins from this address: try again in {retry_after}s",
            headers={"Retry-After": str(retry_after)},
        )
    if not request.app.state.tokens.credentials_match(credentials.user, credentials.password):
        limiter.failed(client)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong user name or password")
    limiter.succeeded(client)
