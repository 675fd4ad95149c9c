"""``/docs``: Swagger UI served from the gateway itself, so it works on a network without
internet access. Its assets come from the ``swagger-ui-py`` package (Swagger UI 5, which
reads OpenAPI 3.1 as FastAPI writes it; Apache-2.0, the licence file beside the assets);
the page starts it with one script of ours, under the dashboard's Content-Security-Policy
plus ``data:`` images.
ReDoc, which only a CDN would serve, is switched off (``redoc_url=None`` in app.main;
docs/design.md §5).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse, HTMLResponse

from app.api.dashboard import STATIC_DIR
from app.api.page_headers import page_headers


def _swagger_ui_dir() -> Path:
    """The package's asset folder, found without importing it (it imports Jinja and a
    handler for every web framework it supports, none of which is used here)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed")
    return Path(spec.submodule_search_locations[0]) / "static"


SWAGGER_UI_DIR = _swagger_ui_dir()

#: What /docs/assets/ serves, by name: (directory, media type). Nothing else.
ASSETS = {
    "swagger-ui.css": (SWAGGER_UI_DIR, "text/css; charset=utf-8"),
    "swagger-ui-bundle.js": (SWAGGER_UI_DIR, "text/javascript; charset=utf-8"),
    "favicon-32x32.png": (SWAGGER_UI_DIR, "image/png"),
    "LICENSE": (SWAGGER_UI_DIR, "text/plain; charset=utf-8"),
    "docs.js": (STATIC_DIR, "text/javascript; charset=utf-8"),
}

#: The dashboard's, but for ``data:`` images (Swagger UI draws its icons from ``data:``
#: SVGs). Its inline styles are set through the DOM, which CSP allows, so no
#: ``'unsafe-inline'``: tests/test_docs.py fails on any CSP violation in the console.
HEADERS = page_headers(img_src="'self' data:")

PAGE = """\
<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>space-cloud gateway · API</title>
  <link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
  <script src="/docs/assets/swagger-ui-bundle.js" defer></script>
  <script src="/docs/assets/docs.js" defer></script>
</head>
<body>
  <div id="swagger-ui" data-openapi-url="/openapi.json"></div>
</body>
</html>
"""

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def docs() -> HTMLResponse:
    return HTMLResponse(PAGE, headers=HEADERS)


@router.get("/docs/assets/{name}")
async def asset(name: str) -> FileResponse:
    found = ASSETS.get(name)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no such file: /docs/assets/{name}")
    directory, media_type = found
    return FileResponse(directory / name, media_type=media_type, headers=HEADERS)
