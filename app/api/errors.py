"""Every error leaves as ``{"error": "<one sentence>"}`` with the right status."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.responses import JSONResponse
from app.models import ErrorBody
from app.stores.base import (
    ABSENT,
    ProjectNotFound,
    RevisionMismatch,
    StoreError,
    StoreUnavailable,
    ValueTooLarge,
)

log = logging.getLogger("space_cloud.api")

#: Seconds a client should wait before retrying a write the store could not take.
RETRY_AFTER_SECONDS = 2


def error(status_code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


#: What FastAPI says of a body it could not decode (not UTF-8, say), reworded as the
#: routes that read their body themselves say it.
_UNPARSABLE_BODY = "There was an error parsing the body"
NOT_JSON = "the body is not JSON"


async def _http_exception(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == status.HTTP_400_BAD_REQUEST and message == _UNPARSABLE_BODY:
        message = f"{NOT_JSON}: it is not UTF-8 text"
    elif exc.status_code == status.HTTP_404_NOT_FOUND and message == "Not Found":
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED and message == "Method Not Allowed":
        message = f"{request.method} is not allowed on {request.url.path}"
    return error(exc.status_code, message, getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    location = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        # 400, as the routes that read their body themselves answer a body that is not JSON.
        position = location[-1] if len(location) > 1 else 0
        return error(status.HTTP_400_BAD_REQUEST, f"{NOT_JSON} (at character {position})")
    if location == ("body",) and first.get("type") in ("model_attributes_type", "missing"):
        return error(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "the body must be a JSON object sent with Content-Type: application/json",
        )
    where = ".".join(str(part) for part in location if part != "body")
    message = first.get("msg", "invalid request")
    text = f"{where}: {message}" if where else message
    return error(status.HTTP_422_UNPROCESSABLE_CONTENT, text)


async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
    if isinstance(exc, StoreUnavailable):
        return error(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"the config store is unavailable: {exc}",
            {"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, RevisionMismatch):
        if exc.expected == ABSENT and request.method == "POST":
            return error(status.HTTP_409_CONFLICT, str(exc))
        return error(status.HTTP_412_PRECONDITION_FAILED, str(exc))
    if isinstance(exc, ProjectNotFound):
        return error(status.HTTP_404_NOT_FOUND, str(exc))
    if isinstance(exc, ValueTooLarge):
        return error(status.HTTP_413_CONTENT_TOO_LARGE, str(exc))
    log.error("store error on %s %s: %s", request.method, request.url.path, exc)
    return error(status.HTTP_500_INTERNAL_SERVER_ERROR, f"the config store failed: {exc}")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error(status.HTTP_500_INTERNAL_SERVER_ERROR, "internal error")


# Each handler takes the exception type it is registered for (Starlette types them all as
# taking ``Exception``).
_HANDLERS: dict[type[Exception], Callable[[Request, Any], Awaitable[JSONResponse]]] = {
    StarletteHTTPException: _http_exception,
    RequestValidationError: _validation_error,
    StoreError: _store_error,
    Exception: _unexpected,
}


def install_error_handlers(app: FastAPI) -> None:
    for exception_type, handler in _HANDLERS.items():
        app.add_exception_handler(exception_type, handler)


def documented(*codes: int) -> dict[int | str, dict]:
    """OpenAPI ``responses=`` entries for error statuses, all with the error schema."""
    descriptions = {
        400: "Bad request",
        401: "Missing or invalid token",
        403: "Outside the token's role or projects",
        404: "Not found",
        405: "This instance follows another one and is read-only (see Allow)",
        409: "Already exists",
        412: "Precondition failed (revision mismatch)",
        413: "Project larger than the store takes",
        422: "Invalid body or parameters",
        503: "Store unavailable or not synced yet (see Retry-After)",
        504: "The waited-for revision was not applied in time",
    }
    return {code: {"model": ErrorBody, "description": descriptions[code]} for code in codes}


def documented_as_json(*codes: int) -> dict[int | str, dict]:
    """:func:`documented`, for a route whose own answer is not JSON (the event stream):
    FastAPI files a ``model`` under the route's media type, but the errors are JSON.
    Refers to the error schema by name: every other route's errors put it in the
    document's components."""
    schema = {"$ref": f"#/components/schemas/{ErrorBody.__name__}"}
    return {
        code: {
            "description": entry["description"],
            "content": {JSONResponse.media_type: {"schema": schema}},
        }
        for code, entry in documented(*codes).items()
    }
