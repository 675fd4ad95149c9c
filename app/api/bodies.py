"""Request bodies within a size: one over it is refused with 413 as soon as that is
known (its Content-Length, or the bytes read so far), never buffered whole."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response, status
from fastapi.routing import APIRoute


async def read_body(request: Request, limit: int, too_large: str) -> bytes:
    """The body of at most ``limit`` bytes, or a 413 saying ``too_large``. The request
    keeps it: ``request.body()`` answers it again without reading."""
    refusal = HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, too_large)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise refusal
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise refusal
        chunks.append(chunk)
    request._body = b"".join(chunks)
    return request._body


def limited_body_route(limit: int, too_large: str) -> type[APIRoute]:
    """A route class whose routes read their body within ``limit`` before FastAPI parses
    it (which would buffer any size): for a route that takes a pydantic body."""

    class LimitedBodyRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def limited(request: Request) -> Response:
                await read_body(request, limit, too_large)
                return await handler(request)

            return limited

    return LimitedBodyRoute
