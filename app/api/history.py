"""A project's versions: listed, read and rolled back (docs/design.md, "Versions").

Versions are read from the store itself, not from the applied state: they are not part
of the event stream. ``?waitRevision=`` still holds a read until this instance has
applied that revision, so a client that wrote on one instance reads on another what it
expects, and a rollback on another instance starts from the state the client saw.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response, status
from pydantic import BaseModel, Field

from app.api.bodies import read_body
from app.api.dependencies import (
    WAIT_REVISION_PARAMETER,
    CurrentStore,
    SyncedState,
    WriteStamp,
)
from app.api.permissions import require_read, require_write
from app.api.preconditions import IfMatch, expected_revision
from app.api.projects import READ_YOUR_WRITE_SECONDS, ProjectId, Writable
from app.api.responses import JSONResponse
from app.api.revisions import MAX_REVISION, number_schema, parse_number
from app.auth import Admin, CurrentPrincipal
from app.metrics import Metrics
from app.models import ErrorBody, Project, ProjectWritten
from app.settings import MAX_PROJECT_VERSIONS
from app.stores.base import Store, Version

router = APIRouter(prefix="/v1/config/projects", tags=["history"], dependencies=[Admin])

#: A rollback body is ``{"revision": N}``: anything much longer is not one.
ROLLBACK_BODY_LIMIT = 1024


class VersionSummary(BaseModel):
    revision: int = Field(description="The store revision of the write.")
    op: Literal["put", "delete"]
    at: str = Field(description="When it was written (UTC, ISO 8601).")
    by: str = Field(description="Who wrote it: a token's name or the admin user.")
    node: str = Field(description="The instance that wrote it.")


class VersionList(BaseModel):
    versions: list[VersionSummary] = Field(description="Newest first.")


def _errors(**descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries, ``_404="..."`` style, all with the error schema
    (an empty description leaves that status out)."""
    return {
        int(code.lstrip("_")): {"model": ErrorBody, "description": text}
        for code, text in descriptions.items()
        if text
    }


_READ_ERRORS = {
    "_400": "Bad revision, limit or before",
    "_401": "Missing or invalid token",
    "_403": "The token may not read this project",
    "_404": "Unknown project or version",
    "_422": "The project id is not one",
    "_501": "This instance follows another one and keeps no versions",
    "_503": "Store unavailable or not synced yet (see Retry-After)",
    "_504": "The waited-for revision was not applied in time",
}
_WAITS = {"parameters": [WAIT_REVISION_PARAMETER]}


async def _history_store(request: Request) -> Store:
    """The store versions are read from; a follower (no store) keeps none."""
    store: Store | None = request.app.state.store
    if store is None:
        upstream = getattr(request.app.state.source, "upstream", "its upstream")
        raise HTTPException(
            status.HTTP_501_NOT_IMPLEMENTED,
            f"this instance follows {upstream} and keeps no versions: read them there",
        )
    return store


HistoryStore = Annotated[Store, Depends(_history_store)]


def _may_read(principal: CurrentPrincipal, project: ProjectId) -> None:
    require_read(principal, project)


def _may_write(principal: CurrentPrincipal, project: ProjectId) -> None:
    require_write(principal, project)


def _number(name: str, text: str | None, lowest: int, highest: int = MAX_REVISION) -> int | None:
    """A whole-number parameter in range, or a 400 that says what it takes."""
    if text is None:
        return None
    number = parse_number(text, lowest, highest)
    if number is None:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"{name} must be a number from {lowest} to {highest}"
        )
    return number


@router.get(
    "/{project}/history",
    response_model=VersionList,
    responses=_errors(**_READ_ERRORS),
    dependencies=[Depends(_may_read)],
    openapi_extra={
        "parameters": [
            WAIT_REVISION_PARAMETER,
            {
                "name": "limit",
                "in": "query",
                "schema": number_schema(1, MAX_PROJECT_VERSIONS),
                "description": "At most this many versions (1 to PROJECT_VERSIONS, the default; "
                "400 above it).",
            },
            {
                "name": "before",
                "in": "query",
                "schema": number_schema(1),
                "description": "Only versions older than this revision (the next page).",
            },
        ]
    },
    summary="A project's versions, newest first; also for a deleted project",
)
async def list_versions(
    project: ProjectId, request: Request, state: SyncedState, store: HistoryStore
) -> Response:
    keep = request.app.state.settings.project_versions
    limit = _number("limit", request.query_params.get("limit"), 1, keep) or keep
    before = _number("before", request.query_params.get("before"), 1)
    versions = await store.list_versions(project, limit=limit, before=before)
    if not versions and project not in state.projects and not await _has_versions(store, project):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"project {project!r} has no versions")
    return JSONResponse({"versions": [version.summary() for version in versions]})


@router.get(
    "/{project}/history/{revision}",
    response_model=Project,
    responses=_errors(**_READ_ERRORS),
    dependencies=[Depends(_may_read)],
    openapi_extra=_WAITS,
    summary="The project's document as it was at that version",
)
async def get_version(
    project: ProjectId,
    revision: Annotated[
        str,
        # Checked by the route (a 400 that says what it takes); documented as what it takes.
        Path(description="The version's revision.", json_schema_extra=number_schema(1)),
    ],
    state: SyncedState,
    store: HistoryStore,
) -> Response:
    version = await _version(store, project, _number("revision", revision, 1) or 0)
    if version.value is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"revision {version.revision} deleted project {project!r}: it has no document",
        )
    return Response(
        version.value,
        media_type="application/json",
        headers={"X-Version-Op": version.op, "X-Version-At": version.at},
    )


@router.post(
    "/{project}/rollback",
    response_model=ProjectWritten,
    responses=_errors(
        **{**_READ_ERRORS, "_403": "The token may not write this project", "_501": ""},
        _405="This instance follows another one and is read-only (see Allow)",
        _409="The version is a deletion: there is no document to write back",
        _412="Precondition failed (revision mismatch)",
        _413="Project larger than the store takes",
    ),
    dependencies=[Depends(_may_write), Writable],
    openapi_extra={
        **_WAITS,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["revision"],
                        "additionalProperties": False,
                        "properties": {
                            "revision": {
                                **number_schema(1),
                                "description": "The version to write again.",
                            }
                        },
                    }
                }
            },
        },
    },
    summary="Write a version's document again, as a new revision",
)
async def rollback(
    project: ProjectId,
    request: Request,
    state: SyncedState,
    store: CurrentStore,
    stamp: WriteStamp,
    if_match: IfMatch = None,
) -> Response:
    expected = expected_revision(state, project, if_match, None)
    target = await _version(store, project, await _rollback_revision(request))
    if target.value is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"revision {target.revision} deleted project {project!r}: there is no document "
            "to roll back to; pick a put version",
        )
    metrics: Metrics = request.app.state.metrics
    async with metrics.store_op("put"):
        result = await store.put_project(project, target.value, expected, stamp)
    await state.wait_for(result.revision, READ_YOUR_WRITE_SECONDS)
    return JSONResponse(
        {"project": project, "revision": result.revision},
        headers={"ETag": f'"{result.revision}"'},
    )


async def _has_versions(store: Store, project: str) -> bool:
    return bool(await store.list_versions(project, limit=1))


async def _version(store: Store, project: str, revision: int) -> Version:
    version = await store.get_version(project, revision)
    if version is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"project {project!r} has no version at revision {revision} (never, or pruned)",
        )
    return version


async def _rollback_revision(request: Request) -> int:
    """The ``revision`` of a ``{"revision": N}`` body, or a 400 saying what it must be."""
    refusal = HTTPException(
        status.HTTP_400_BAD_REQUEST, 'the body must be {"revision": <a revision number>}'
    )
    raw = await read_body(request, ROLLBACK_BODY_LIMIT, refusal)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise refusal from None
    revision = body.get("revision") if isinstance(body, dict) and len(body) == 1 else None
    if not isinstance(revision, int) or isinstance(revision, bool):
        raise refusal
    if not 1 <= revision <= MAX_REVISION:
        raise refusal
    return revision
