"""``GET /v1/config/events``: the Server-Sent Events stream (docs/design.md §6)."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, status
from sse_starlette.sse import AppStatus

from app.access import Principal, StreamScope
from app.access.scopes import MAX_PATTERNS
from app.api.dependencies import CurrentSettings, SyncedState
from app.api.errors import documented
from app.api.event_stream import EventStream
from app.api.stream_lifetime import TokenLifetime
from app.auth import TOKEN_QUERY_PARAMETER, require_admin_or_query_token
from app.models import PROJECT_ID_PATTERN
from app.sync import ClusterState, frames

router = APIRouter(tags=["events"], dependencies=[Depends(require_admin_or_query_token)])

#: How often the stream keeper looks whether the server is shutting down.
SHUTDOWN_POLL_SECONDS = 0.1

_DESCRIPTION = f"""\
A `text/event-stream`: a `snapshot`, then every change in revision order, none missed,
none twice. Each event's data is one line of JSON:

{frames.events_description()}

Resume with the `Last-Event-ID` header (or `?lastEventId=`): every change after it is
replayed, from this instance's history or, when it is older than that, from the store's
(etcd, until compaction); a fresh `snapshot` comes when neither has it. Revisions are
cluster-wide, so a stream may resume on any instance.

A token scoped to some projects gets only theirs: its snapshot (and `revisions`) and its
`project.put`/`project.delete` events hold nothing else; `peers` as usual. `?projects=a,b`
narrows any stream (the admin's too) to those project ids: 400 if one is not a project
id, 403 if the token may not read one. A stream ends cleanly when its token expires or
is revoked: log in again and resume with `Last-Event-ID`.
"""

_PROJECT_ID = re.compile(PROJECT_ID_PATTERN)

ProjectsNarrowing = Annotated[
    str | None,
    Query(
        alias="projects",
        description="Comma-separated project ids: only their events (within the token's scope).",
    ),
]


def _resume_id(header: str | None, query: int | None) -> int | None:
    if header is None or not header.strip():
        return query
    try:
        return int(header)
    except ValueError:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, "Last-Event-ID must be a revision number"
        ) from None


@router.get(
    "/v1/config/events",
    response_class=EventStream,
    status_code=status.HTTP_200_OK,
    responses={
        200: {"content": frames.events_openapi_content(), "description": "The event stream"},
        **documented(400, 401, 403, 503),
    },
    summary="Live config and peer changes as Server-Sent Events",
    openapi_extra={"parameters": [TOKEN_QUERY_PARAMETER]},
    description=_DESCRIPTION,
)
async def events(
    request: Request,
    state: SyncedState,
    settings: CurrentSettings,
    principal: Annotated[Principal, Depends(require_admin_or_query_token)],
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id_query: Annotated[int | None, Query(alias="lastEventId", ge=0)] = None,
    projects: ProjectsNarrowing = None,
) -> EventStream:
    sees = _stream_scope(principal, projects)
    resume_id = _resume_id(last_event_id, last_event_id_query)
    subscription, first = await state.open_stream(resume_id, None if sees.is_everything else sees)
    return EventStream(
        subscription,
        b"".join(first),
        state=state,
        send_timeout=settings.sse_send_timeout_seconds,
        lifetime=TokenLifetime.of(principal, request.app.state.minted_tokens),
    )


def _stream_scope(principal: Principal, projects: str | None) -> StreamScope:
    """What the stream shows: the token's projects, narrowed by ``?projects=``."""
    if projects is None:
        return StreamScope(principal.scope)
    ids = frozenset(project_id.strip() for project_id in projects.split(","))
    if not ids or len(ids) > MAX_PATTERNS or not all(map(_PROJECT_ID.fullmatch, ids)):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"projects must be 1 to {MAX_PATTERNS} comma-separated project ids (lower-case "
            "letters, digits, '_' and '-')",
        )
    outside = sorted(project_id for project_id in ids if not principal.may_read(project_id))
    if outside:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"the token {principal.name!r} may not read project {outside[0]!r}",
        )
    return StreamScope(principal.scope, ids)


async def keep_streams(state: ClusterState, ping_interval: float) -> None:
    """One task for every open stream: a ping frame every ``ping_interval`` seconds, and
    every stream ended cleanly as soon as the server begins to shut down (uvicorn waits
    for open responses before it exits; sse-starlette's hook tells us it started)."""
    loop = asyncio.get_running_loop()
    next_ping = loop.time() + ping_interval
    while not AppStatus.should_exit:
        await asyncio.sleep(SHUTDOWN_POLL_SECONDS)
        if loop.time() >= next_ping:
            next_ping += ping_interval
            state.ping()
    state.events.broadcaster.close_all()
    state.metrics.sse_subscribers.set(0)
