"""Project configs: read from the applied state, written through the store, each within
the requesting token's role and projects (403 outside them)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    HTTPException,
    Path,
    Request,
    Response,
    status,
)
from pydantic import ValidationError

from app.api.bodies import json_object, read_body, too_large
from app.api.dependencies import (
    WAITS_FOR_REVISION,
    CurrentStore,
    State,
    SyncedState,
    WriteStamp,
    refuse_on_a_follower,
    synced_state,
)
from app.api.errors import documented
from app.api.permissions import require_read, require_write
from app.api.preconditions import IfMatch, IfNoneMatch, expected_revision, none_match
from app.api.responses import JSONResponse
from app.auth import Admin, CurrentPrincipal, request_principal, require_admin
from app.metrics import Metrics
from app.models import PROJECT_ID_PATTERN, Project, ProjectList, ProjectWritten
from app.stores.base import ABSENT, Store, StoredProject, ValueTooLarge, VersionStamp
from app.sync import ClusterState

# Every route names its guard (Admin, or readable_project below) rather than the router:
# a router-level guard would add a dependency level to the hottest route (docs/design.md
# §5).
router = APIRouter(prefix="/v1/config/projects", tags=["projects"])


def install(app: FastAPI) -> None:
    """The project routes as the app's own first routes rather than an included router:
    FastAPI matches an included router twice per request (once to pick it, once inside
    it), and these are the hottest routes (bench/reads.py)."""
    app.router.routes[:0] = router.routes


async def _writable(request: Request) -> None:
    """An instance without a store (a follower) serves configs read-only: 405 on writes."""
    refuse_on_a_follower(request, "is read-only: write there", allow="GET")


Writable = Depends(_writable)

#: A write waits this long, at most, for its own change to be applied here, so that the
#: next read on this instance sees it.
READ_YOUR_WRITE_SECONDS = 2.0

#: Pretty-printed bodies may be larger than the compact JSON that is stored.
RAW_BODY_FACTOR = 2

_PROJECT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Project"}}},
    }
}
_PROJECT_ID = re.compile(PROJECT_ID_PATTERN)
_PROJECT_ID_PARAMETER: dict[str, Any] = {
    "name": "project",
    "in": "path",
    "required": True,
    "schema": {
        "type": "string",
        "pattern": PROJECT_ID_PATTERN,
        "title": "Project",
        "description": "The project id.",
    },
    "description": "The project id.",
}
_CONDITIONAL_GET: dict[str, Any] = {
    "security": [{require_admin.scheme_name: []}],
    "parameters": [
        _PROJECT_ID_PARAMETER,
        *WAITS_FOR_REVISION["parameters"],
        {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "304 without a body when the project is at one of these revisions "
            '(`"<revision>"`, comma-separated) or, for `*`, exists.',
        },
    ],
}

ProjectId = Annotated[str, Path(pattern=PROJECT_ID_PATTERN, description="The project id.")]


@router.get(
    "",
    response_model=ProjectList,
    responses=documented(400, 401, 503, 504),
    dependencies=[Admin],
    openapi_extra=WAITS_FOR_REVISION,
    summary="Every project the token may read, with the cluster's revision",
)
async def list_projects(state: SyncedState, principal: CurrentPrincipal) -> Response:
    if principal.scope.is_everything:
        return Response(state.list_body(), media_type="application/json")
    return Response(_scoped_list_body(state, principal.may_read), media_type="application/json")


def _scoped_list_body(state: ClusterState, may_read: Callable[[str], bool]) -> bytes:
    """The list of the projects ``may_read`` allows; the revision stays the cluster's, so
    ``?waitRevision=`` and ETags mean the same for every token."""
    joined = b",".join(project.value for project in state.projects.values() if may_read(project.id))
    return b'{"projects":[%s],"revision":%d}' % (joined, state.revision)


async def readable_project(request: Request) -> StoredProject:
    """The project a ``GET`` names, checked in the order the other routes check: the
    token (401), the applied state and ``?waitRevision=`` (503/400/504), the id (422),
    the token's projects (403), existence (404).

    Called by the route rather than declared as its dependencies: every FastAPI
    dependency (and ``Path`` parameter) is a level of per-request parameter solving, and
    this is the hottest route (bench/reads.py). The route documents what it checks.
    """
    principal = request_principal(request)
    state = await synced_state(request)
    project: str = request.path_params["project"]
    if _PROJECT_ID.fullmatch(project) is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"path.project: String should match pattern '{PROJECT_ID_PATTERN}'",
        )
    require_read(principal, project)
    stored = state.projects.get(project)
    if stored is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"project {project!r} does not exist")
    return stored


@router.get(
    "/{project}",
    response_model=Project,
    responses={
        304: {"description": "Not modified: `If-None-Match` names the current revision"},
        **documented(400, 401, 403, 404, 422, 503, 504),
    },
    openapi_extra=_CONDITIONAL_GET,
    summary="One project; its revision is the ETag",
)
async def get_project(request: Request) -> Response:
    stored = await readable_project(request)
    etag = {"ETag": f'"{stored.revision}"'}
    if none_match(request.headers.get("if-none-match"), stored.revision):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=etag)
    return Response(stored.value, media_type="application/json", headers=etag)


@router.put(
    "/{project}",
    response_model=ProjectWritten,
    status_code=status.HTTP_200_OK,
    responses={
        201: {"model": ProjectWritten, "description": "Created"},
        **documented(400, 401, 403, 405, 412, 413, 422, 503),
    },
    dependencies=[Admin, Writable],
    openapi_extra=_PROJECT_BODY,
    summary="Create (201) or replace (200) a project",
)
async def put_project(
    project: ProjectId,
    request: Request,
    store: CurrentStore,
    state: State,
    principal: CurrentPrincipal,
    stamp: WriteStamp,
    if_match: IfMatch = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    require_write(principal, project)
    expected = expected_revision(state, project, if_match, if_none_match)
    value = await _project_value(request, store.value_limit, project)
    return await _put(request, store, state, project, value, expected, stamp)


@router.post(
    "",
    response_model=ProjectWritten,
    status_code=status.HTTP_201_CREATED,
    responses=documented(400, 401, 403, 405, 409, 413, 422, 503),
    dependencies=[Admin, Writable],
    openapi_extra=_PROJECT_BODY,
    summary="Create a project; 409 if it exists",
)
async def create_project(
    request: Request,
    store: CurrentStore,
    state: State,
    principal: CurrentPrincipal,
    stamp: WriteStamp,
) -> Response:
    value = await _project_value(request, store.value_limit, None)
    project = orjson.loads(value)["id"]
    require_write(principal, project)
    return await _put(request, store, state, project, value, ABSENT, stamp)


@router.delete(
    "/{project}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=documented(400, 401, 403, 404, 405, 412, 422, 503),
    dependencies=[Admin, Writable],
    summary="Delete a project",
)
async def delete_project(
    project: ProjectId,
    request: Request,
    store: CurrentStore,
    state: State,
    principal: CurrentPrincipal,
    stamp: WriteStamp,
    if_match: IfMatch = None,
) -> Response:
    require_write(principal, project)
    expected = expected_revision(state, project, if_match, None)
    metrics: Metrics = request.app.state.metrics
    async with metrics.store_op("delete"):
        revision = await store.delete_project(project, expected, stamp)
    await state.wait_for(revision, READ_YOUR_WRITE_SECONDS)
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers={"X-Revision": str(revision)})


async def _put(
    request: Request,
    store: Store,
    state: ClusterState,
    project: str,
    value: bytes,
    expected: int | None,
    stamp: VersionStamp,
) -> Response:
    """Write through the store with its version, wait (briefly) until applied here,
    answer the revision."""
    metrics: Metrics = request.app.state.metrics
    async with metrics.store_op("put"):
        result = await store.put_project(project, value, expected, stamp)
    await state.wait_for(result.revision, READ_YOUR_WRITE_SECONDS)
    return JSONResponse(
        {"project": project, "revision": result.revision},
        status_code=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        headers={"ETag": f'"{result.revision}"'},
    )


async def _project_value(request: Request, limit: int, path_id: str | None) -> bytes:
    """The request's project, validated and compactly encoded, within ``limit`` bytes."""
    document = json_object(await _read_body(request, limit))
    if path_id is not None:
        body_id = document.setdefault("id", path_id)
        if body_id != path_id:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                f"the body's id {body_id!r} differs from the path's {path_id!r}",
            )
    try:
        project = Project.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"{where}: {first['msg']}"
        ) from None
    value = orjson.dumps(project.model_dump(mode="json"))
    if len(value) > limit:
        raise ValueTooLarge(len(value), limit)
    return value


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to be over ``RAW_BODY_FACTOR``
    times the store's ``limit``; the message names the store's limit only."""
    refusal = too_large(f"the project is larger than this store takes: at most {limit} bytes")
    return await read_body(request, limit * RAW_BODY_FACTOR, refusal)
