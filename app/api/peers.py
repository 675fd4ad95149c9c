"""``GET /v1/config/peers``: the live instances of the cluster."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.dependencies import SyncedState
from app.api.errors import documented
from app.api.responses import JSONResponse
from app.auth import Admin
from app.models import PeerList

router = APIRouter(tags=["cluster"], dependencies=[Admin])


@router.get(
    "/v1/config/peers",
    response_model=PeerList,
    responses=documented(401, 503, 504),
    summary="Every live instance of the cluster",
)
async def peers(state: SyncedState) -> Response:
    return JSONResponse({"peers": state.peers})
