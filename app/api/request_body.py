"""Request bodies: read up to a limit (refused as soon as they are known to be over it),
and parsed as one JSON object."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import HTTPException, Request, status


async def read_body(request: Request, limit: int, refusal: HTTPException) -> bytes:
    """The body, or ``refusal`` raised once its declared length or what has come so far
    is over ``limit`` bytes: a body too large is never read whole."""
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
    return b"".join(chunks)


def json_object(raw: bytes) -> dict[str, Any]:
    """``raw`` as a JSON object, or a 400 saying what it is not."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"the body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the body must be a JSON object")
    return document
