"""Liveness, readiness, metrics and the instance's environment: all open without a token."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST

from app import __version__
from app.api.dependencies import CurrentSettings, State
from app.api.errors import documented, error
from app.api.responses import JSONResponse
from app.models import Env, Health

router = APIRouter(tags=["health"])

#: /readyz lists at most this many skipped store values (the metric counts them all).
MAX_SKIPPED_LISTED = 100


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Response:
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    response_model=Health,
    responses=documented(503),
    summary="Ready: first sync (configs and tokens) done and the store reachable",
)
async def readyz(state: State, request: Request) -> Response:
    if not state.synced.is_set():
        return error(status.HTTP_503_SERVICE_UNAVAILABLE, state.store_error or "not synced yet")
    minted_tokens = request.app.state.minted_tokens
    if minted_tokens.held and not minted_tokens.synced.is_set():
        return error(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            state.store_error or "the minted tokens have not been synced yet",
        )
    if state.store_error:
        return error(status.HTTP_503_SERVICE_UNAVAILABLE, state.store_error)
    body: dict[str, object] = {"status": "ready", "revision": state.revision}
    if skipped := request.app.state.intake.skipped:
        body["skipped"] = [asdict(value) for value in skipped.values()][:MAX_SKIPPED_LISTED]
    return JSONResponse(body)


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/config/env", response_model=Env, tags=["config"], summary="This instance")
async def env(settings: CurrentSettings) -> Env:
    return Env(
        version=__version__,
        storeType=settings.store_type,
        clusterId=settings.cluster_id,
        nodeId=settings.node_id,
        advertiseAddr=settings.advertise_addr,
        dev=settings.dev,
    )
