"""``POST /v1/config/login``: admin credentials for a signed token."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status

from app.api.errors import documented
from app.models import Credentials, Token

router = APIRouter(tags=["auth"])


@router.post(
    "/v1/config/login",
    response_model=Token,
    responses=documented(401, 422),
    summary="Log in as the admin; returns a bearer token",
)
async def login(credentials: Credentials, request: Request) -> Token:
    tokens = request.app.state.tokens
    dev = request.app.state.settings.dev
    if not dev and not tokens.credentials_match(credentials.user, credentials.password):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong user name or password")
    token, expires = tokens.issue(credentials.user)
    return Token(token=token, expiresAt=expires)
