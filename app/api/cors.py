"""Cross-origin requests: refused unless ``CORS_ORIGINS`` lists the browser app's origin."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

#: What a browser app sends beyond the simple headers: the token, JSON bodies, the
#: conditional-write headers and the event stream's resume point.
ALLOWED_HEADERS = ["Authorization", "Content-Type", "If-Match", "If-None-Match", "Last-Event-ID"]
#: Response headers a browser app may read.
EXPOSED_HEADERS = ["ETag", "X-Revision", "Retry-After"]


def install_cors(app: FastAPI, origins: list[str]) -> None:
    """Answer preflights and add CORS headers for ``origins`` only; nothing without any."""
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["GET", "PUT", "POST", "DELETE"],
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
    )
