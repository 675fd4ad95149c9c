"""Request bodies within a size: one over it is refused with 413 as soon as that is
known (its Content-Length, or the bytes read so far), never buffered whole; and parsed
as one JSON object."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import HTTPException, Request, Response, status
from fastapi.routing import APIRoute


def too_large(message: str) -> HTTPException:
    """The 413 of a body over its limit."""
    return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, message)


async def read_body(request: Request, limit: int, refusal: HTTPException) -> bytes:
    """The body of at most ``limit`` bytes, or ``refusal`` raised as soon as it is known
    to be over (usually :func:`too_large`). The request keeps it: ``request.body()``
    answers it again without reading."""
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


def limited_body_route(limit: int, message: str) -> type[APIRoute]:
    """A route class whose routes read their body within ``limit`` before FastAPI parses
    it (which would buffer any size): for a route that takes a pydantic body."""

    refusal = too_large(message)

    class LimitedBodyRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def limited(request: Request) -> Response:
                await read_body(request, limit, refusal)
                return await handler(request)

            return limited

    return LimitedBodyRoute


def json_object(raw: bytes) -> dict[str, Any]:
    """``raw`` as a JSON object, or a 400 saying what it is not."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"the body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the body must be a JSON object")
    return document
