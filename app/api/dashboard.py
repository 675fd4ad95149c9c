"""The live cluster dashboard: ``GET /`` and its static files, open without a token.

The page holds no data: it logs in at ``POST /v1/config/login`` and reads everything
from the API with the token (the event stream with ``?token=``, which EventSource needs).
Plain HTML, CSS and one script from ``app/static``, no build step.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse

from app.api.page_headers import page_headers

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

#: The files the page is made of, by name, with their media types. Nothing else under
#: /static/ is served.
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

HEADERS = page_headers()

router = APIRouter(tags=["dashboard"])


def _file(name: str, media_type: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers=HEADERS)


@router.get(
    "/",
    response_class=FileResponse,
    responses={200: {"content": {"text/html": {}}, "description": "The dashboard page"}},
    summary="The live cluster dashboard (a page: log in there)",
    description="Instances, projects and events of the cluster, live over Server-Sent "
    "Events, and a JSON editor that saves with `If-Match`. The page itself is open and "
    "holds no data; everything it shows is read from the API after logging in.",
)
async def dashboard() -> FileResponse:
    return _file("index.html", "text/html; charset=utf-8")


@router.get("/static/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no such file: /static/{name}")
    return _file(name, media_type)
