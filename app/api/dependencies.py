"""Dependencies the routers share: the applied state, readiness, and ``?waitRevision=``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, status

from app.settings import Settings
from app.stores.base import Store
from app.sync import ClusterState


def get_state(request: Request) -> ClusterState:
    return request.app.state.cluster


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> Store:
    return request.app.state.store


State = Annotated[ClusterState, Depends(get_state)]
CurrentSettings = Annotated[Settings, Depends(get_settings)]
CurrentStore = Annotated[Store, Depends(get_store)]


async def synced_state(
    state: State,
    settings: CurrentSettings,
    wait_revision: Annotated[
        int | None,
        Query(
            alias="waitRevision",
            ge=0,
            description="Hold the answer until this instance has applied this revision.",
        ),
    ] = None,
) -> ClusterState:
    """The applied state, once it is worth reading (and at ``waitRevision`` if asked)."""
    if not state.synced.is_set():
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "this instance has not finished its first sync with the store",
            headers={"Retry-After": "1"},
        )
    if wait_revision is not None:
        within = settings.wait_revision_timeout_seconds
        if not await state.wait_for(wait_revision, within):
            raise HTTPException(
                status.HTTP_504_GATEWAY_TIMEOUT,
                f"revision {wait_revision} was not applied within {within:g}s "
                f"(this instance is at {state.revision})",
            )
    return state


SyncedState = Annotated[ClusterState, Depends(synced_state)]
