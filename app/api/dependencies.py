"""Dependencies the routers share: the applied state, readiness, and ``?waitRevision=``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from app.api.revisions import MAX_REVISION, number_schema, parse_number
from app.auth import CurrentPrincipal
from app.settings import Settings
from app.stores.base import Store, VersionStamp
from app.sync import ClusterState


async def get_state(request: Request) -> ClusterState:
    return request.app.state.cluster


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_store(request: Request) -> Store:
    return request.app.state.store


def refuse_on_a_follower(request: Request, refusal: str, allow: str) -> None:
    """A follower has no store: 405 ``this instance follows <upstream> and <refusal>``,
    with the methods it does take in ``Allow``."""
    if request.app.state.store is None:
        upstream = getattr(request.app.state.source, "upstream", "its upstream")
        raise HTTPException(
            status.HTTP_405_METHOD_NOT_ALLOWED,
            f"this instance follows {upstream} and {refusal}",
            headers={"Allow": allow},
        )


State = Annotated[ClusterState, Depends(get_state)]
CurrentSettings = Annotated[Settings, Depends(get_settings)]
CurrentStore = Annotated[Store, Depends(get_store)]


async def synced_state(request: Request) -> ClusterState:
    """The applied state, once it is worth reading (and at ``?waitRevision=`` if asked).

    Reads ``waitRevision`` itself rather than through a ``Query`` parameter: this runs on
    every read, and FastAPI's parameter machinery costs a measurable share of a request.
    Routes document the parameter with :data:`WAIT_REVISION_PARAMETER`.
    """
    state: ClusterState = request.app.state.cluster
    if not state.synced.is_set():
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "this instance has not finished its first sync with the store",
            headers={"Retry-After": "1"},
        )
    wait_revision = _wait_revision(request.query_params.get("waitRevision"))
    if wait_revision is not None:
        await _refuse_beyond_the_store(request, state, wait_revision)
        within = request.app.state.settings.wait_revision_timeout_seconds
        if not await state.wait_for(wait_revision, within):
            raise HTTPException(
                status.HTTP_504_GATEWAY_TIMEOUT,
                f"revision {wait_revision} was not applied within {within:g}s "
                f"(this instance is at {state.revision})",
            )
    return state


async def _refuse_beyond_the_store(request: Request, state: ClusterState, revision: int) -> None:
    """A revision the store has not reached can never be applied: 400 at once."""
    if revision <= state.revision:
        return
    store_revision = await request.app.state.store_revision.beyond(revision)
    if store_revision is not None:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"waitRevision {revision} is beyond the store's current revision {store_revision}",
        )


def _wait_revision(text: str | None) -> int | None:
    if text is None:
        return None
    revision = parse_number(text)
    if revision is None:
        # 400, as for a bad Last-Event-ID: both name a revision.
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"waitRevision must be a revision number (0 to {MAX_REVISION})",
        )
    return revision


WAIT_REVISION_PARAMETER = {
    "name": "waitRevision",
    "in": "query",
    "required": False,
    "schema": number_schema(),
    "description": "Hold the answer until this instance has applied this revision "
    "(504 if it has not within the bound; 400 if it is not a revision number, or beyond "
    "the store's current revision, which the message names).",
}
#: ``openapi_extra`` for every read that honours ``?waitRevision=``.
WAITS_FOR_REVISION = {"parameters": [WAIT_REVISION_PARAMETER]}


SyncedState = Annotated[ClusterState, Depends(synced_state)]


async def write_stamp(request: Request, principal: CurrentPrincipal) -> VersionStamp:
    """Who makes a write and on which instance, as its version records it."""
    return VersionStamp(by=principal.name, node=request.app.state.settings.node_id)


WriteStamp = Annotated[VersionStamp, Depends(write_stamp)]
