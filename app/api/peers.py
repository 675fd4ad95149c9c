"""``GET /v1/config/peers``: the live instances of the cluster."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.dependencies import WAITS_FOR_REVISION, SyncedState
from app.api.errors import documented
from app.api.responses import JSONResponse
from app.auth import Admin
from app.models import PeerList

router = APIRouter(tags=["cluster"], dependencies=[Admin])


@router.get(
    "/v1/config/peers",
    response_model=PeerList,
    responses=documented(400, 401, 503, 504),
    openapi_extra=WAITS_FOR_REVISION,
    summary="Every live instance of the cluster",
)
async def peers(state: SyncedState) -> Response:
    return JSONResponse({"peers": state.peers})
