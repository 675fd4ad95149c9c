"""Minted tokens: ``/v1/config/tokens`` mints, lists and revokes them (admins only).

A record is written to the store and applied by every instance through its token watch
(docs/design.md §9); a mint or a revocation answers once this instance has applied it,
so the next request here already sees it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status

from app.access import AccessError, Role, minted
from app.access.scopes import MAX_PATTERNS
from app.access.token_records import MAX_TTL_SECONDS, TokenRecord
from app.api.bodies import json_object, read_body, too_large
from app.api.dependencies import CurrentStore, refuse_on_a_follower
from app.api.errors import documented
from app.api.permissions import require_admin
from app.api.responses import JSONResponse
from app.auth import Admin, CurrentPrincipal
from app.metrics import Metrics
from app.models import Credential, ErrorBody, MintedToken, TokenList, TokenRequest
from app.sync import AppliedTokens

router = APIRouter(prefix="/v1/config/tokens", tags=["tokens"], dependencies=[Admin])

#: A mint or a revocation waits this long, at most, to be applied on this instance.
READ_YOUR_WRITE_SECONDS = 2.0
#: A request holds at most 100 patterns of at most 64 characters: well under this.
MAX_BODY_BYTES = 16 * 1024
_FIELDS = ("name", "role", "projects", "ttlSeconds")
_REQUIRED = ("name", "role", "projects")


def _token_request_schema() -> dict[str, Any]:
    """:class:`TokenRequest` with the bounds :meth:`TokenRecord.mint` checks (the model
    cannot import them: app.access imports app.models)."""
    schema = TokenRequest.model_json_schema()
    fields = schema["properties"]
    fields["role"]["enum"] = [role.value for role in Role]
    fields["projects"].update(minItems=1, maxItems=MAX_PATTERNS)
    fields["ttlSeconds"]["anyOf"][0].update(minimum=1, maximum=MAX_TTL_SECONDS)
    return schema


_TOKEN_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": _token_request_schema()}},
    }
}


async def _holds_tokens(request: Request) -> None:
    """A follower has no store, so no tokens to mint, list or revoke: 405."""
    refuse_on_a_follower(request, "holds no tokens: manage them there", allow="")


HoldsTokens = Depends(_holds_tokens)


def _applied(request: Request) -> AppliedTokens:
    return request.app.state.minted_tokens


@router.post(
    "",
    response_model=MintedToken,
    status_code=status.HTTP_201_CREATED,
    responses={
        **documented(400, 401, 403, 405, 422, 503),
        413: {"model": ErrorBody, "description": f"Body over {MAX_BODY_BYTES} bytes"},
    },
    dependencies=[HoldsTokens],
    openapi_extra=_TOKEN_BODY,
    summary="Mint a token for a role and projects; the token is shown once",
)
async def mint_token(
    request: Request, store: CurrentStore, principal: CurrentPrincipal
) -> Response:
    require_admin(principal)
    fields = await _token_request(request)
    try:
        record, token = TokenRecord.mint(
            fields["name"], fields["role"], fields["projects"], fields.get("ttlSeconds")
        )
    except AccessError as invalid:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(invalid)) from None
    metrics: Metrics = request.app.state.metrics
    async with metrics.store_op("put_token"):
        await store.put_token(record.id, record.to_json())
    applied = _applied(request)
    await applied.wait_until(lambda: applied.get(record.id) is not None, READ_YOUR_WRITE_SECONDS)
    return JSONResponse(
        {**record.public(), "token": token},
        status_code=status.HTTP_201_CREATED,
        headers={"Cache-Control": "no-store"},
    )


@router.get(
    "",
    response_model=TokenList,
    responses=documented(401, 403, 405, 503),
    dependencies=[HoldsTokens],
    summary="Every token of the cluster, without the token strings",
)
async def list_tokens(request: Request, principal: CurrentPrincipal) -> Response:
    require_admin(principal)
    records = _applied(request).records()
    return JSONResponse({"tokens": [record.public() for record in records]})


@router.get(
    "/self",
    response_model=Credential,
    responses=documented(401, 503),
    summary="The credential this request carries: its name, role, projects and expiry",
)
async def current_credential(principal: CurrentPrincipal) -> Response:
    expires_at = None if principal.expires_at is None else int(principal.expires_at)
    return JSONResponse(
        {
            "name": principal.name,
            "role": principal.role.value,
            "projects": principal.scope.texts(),
            "expiresAt": expires_at,
        }
    )


@router.delete(
    "/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=documented(401, 403, 404, 405, 422, 503),
    dependencies=[HoldsTokens],
    summary="Revoke a token: every instance refuses it within a second",
)
async def revoke_token(
    token_id: str, request: Request, store: CurrentStore, principal: CurrentPrincipal
) -> Response:
    require_admin(principal)
    missing = HTTPException(status.HTTP_404_NOT_FOUND, f"there is no token with id {token_id!r}")
    if not minted.ID_PATTERN.fullmatch(token_id):
        raise missing
    metrics: Metrics = request.app.state.metrics
    async with metrics.store_op("delete_token"):
        deleted = await store.delete_token(token_id)
    if not deleted:
        raise missing
    applied = _applied(request)
    await applied.wait_until(lambda: applied.get(token_id) is None, READ_YOUR_WRITE_SECONDS)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _token_request(request: Request) -> dict[str, Any]:
    """The body's fields, each present and known; their values are checked by
    :meth:`TokenRecord.mint`."""
    refusal = too_large(f"the body is over {MAX_BODY_BYTES} bytes")
    document = json_object(await read_body(request, MAX_BODY_BYTES, refusal))
    unknown = [key for key in document if key not in _FIELDS]
    if unknown:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"unknown field {unknown[0]!r}: a token takes {', '.join(_FIELDS)}",
        )
    for field in _REQUIRED:
        if field not in document:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{field} is required")
    return document
