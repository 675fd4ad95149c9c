"""``GET /v1/config/events``: the Server-Sent Events stream (docs/design.md §6)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, status
from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

from app.api.dependencies import CurrentSettings, SyncedState
from app.api.errors import documented
from app.auth import TOKEN_QUERY_PARAMETER, require_admin_or_query_token
from app.broadcast import Subscription
from app.sync import ClusterState, frames

log = logging.getLogger("space_cloud.events")

router = APIRouter(tags=["events"], dependencies=[Depends(require_admin_or_query_token)])

#: How long a stream may take to end by itself on shutdown before it is cancelled.
SHUTDOWN_GRACE_SECONDS = 1.0

_DESCRIPTION = f"""\
A `text/event-stream`: a `snapshot`, then every change in revision order, none missed,
none twice. Each event's data is one line of JSON:

{frames.events_description()}

Resume with the `Last-Event-ID` header (or `?lastEventId=`): every change after it is
replayed, or a fresh `snapshot` comes when it is older than this instance's history.
Revisions are cluster-wide, so a stream may resume on any instance.
"""


class EventStream(EventSourceResponse):
    """An SSE response whose send timeout (a subscriber that stopped reading) is an
    expected end, counted and logged in one line, not an application error."""

    def __init__(self, *args: Any, on_send_timeout: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_send_timeout = on_send_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            self._on_send_timeout()
            client = scope.get("client") or ("?", 0)
            log.info("dropped subscriber %s:%s: it stopped reading", *client)


class _CloseOnShutdown:
    """Handed to sse-starlette as ``shutdown_event``: on SIGTERM it calls ``set()``, which
    ends our generator, so the response completes cleanly instead of being cancelled."""

    def __init__(self, subscription: Subscription) -> None:
        self._subscription = subscription

    def set(self) -> None:
        self._subscription.close()


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
    response_class=EventSourceResponse,
    responses={
        200: {"content": frames.events_openapi_content(), "description": "The event stream"},
        **documented(400, 401, 503),
    },
    summary="Live config and peer changes as Server-Sent Events",
    openapi_extra={"parameters": [TOKEN_QUERY_PARAMETER]},
    description=_DESCRIPTION,
)
async def events(
    state: SyncedState,
    settings: CurrentSettings,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id_query: Annotated[int | None, Query(alias="lastEventId", ge=0)] = None,
) -> EventSourceResponse:
    subscription, first = state.subscribe(_resume_id(last_event_id, last_event_id_query))
    return EventStream(
        _frames(state, subscription, b"".join(first)),
        on_send_timeout=functools.partial(state.drop_stalled, subscription),
        ping=0,  # one app-wide pinger (ping_subscribers) instead of a task per stream
        send_timeout=settings.sse_send_timeout_seconds,
        shutdown_event=_CloseOnShutdown(subscription),
        shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def ping_subscribers(state: ClusterState, interval: float) -> None:
    """Every ``interval`` seconds, one ping frame queued for every open stream."""
    while True:
        await asyncio.sleep(interval)
        state.ping()


async def _frames(
    state: ClusterState, subscription: Subscription, first: bytes
) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        while (chunk := await subscription.next_frames()) is not None:
            yield chunk
    finally:
        state.unsubscribe(subscription)
